package hostile

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// runRequest writes the case's raw HTTP request to the daemon's socket as
// root (net.Dial and bytes, no client library to tidy it up), then checks
// the status, the JSON error's code and text, that nothing leaks, and
// that the daemon still answers.
func runRequest(t *testing.T, h *host, c *hostileCase) result {
	r := result{name: c.name, expected: c.expected(), ok: true}
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
		r.ok = false
	}
	resetSentinel(t, c)
	raw, err := os.ReadFile(c.inputPath(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	req := rawRequest(expandPlaceholders(t, raw, h))
	status, body, err := roundTrip(h.socket, req)
	if err != nil {
		fail("%s: %v", c.name, err)
		r.got = err.Error()
		return r
	}
	var eb api.ErrorBody
	jsonErr := json.Unmarshal(body, &eb)
	r.got = fmt.Sprintf("%d %s %q", status, eb.Code, eb.Error)
	if jsonErr != nil {
		r.got = fmt.Sprintf("%d %s", status, clip(oneLine(string(body)), 80))
	}
	if c.Expect.Status != 0 && status != c.Expect.Status {
		fail("%s: status %d, want %d\n%s", c.name, status, c.Expect.Status, clip(string(body), 2000))
	}
	if c.Expect.Code != "" && eb.Code != c.Expect.Code {
		fail("%s: code %q, want %q (body %s)", c.name, eb.Code, c.Expect.Code, clip(string(body), 2000))
	}
	// The JSON error is the text to match; a body that is not JSON (the
	// HTTP server's own refusals) is matched as it is.
	text := eb.Error
	if jsonErr != nil {
		text = string(body)
	}
	for _, m := range c.Expect.checkText(text, "") {
		fail("%s: response %s: %s", c.name, m, clip(string(body), 2000))
	}
	for _, s := range c.Expect.BodyExcludes {
		if strings.Contains(string(body), s) {
			fail("%s: the response leaks %q:\n%s", c.name, s, clip(string(body), 2000))
		}
	}
	if err := h.alive(); err != nil {
		fail("%s: daemon down after the request: %v", c.name, err)
		r.got += " | DAEMON DOWN"
	}
	return r
}

// expandPlaceholders fills what a static file cannot know: a FIFO and
// the sentinel root, and the id of a real deployment (for ids in paths).
func expandPlaceholders(t *testing.T, raw []byte, h *host) []byte {
	t.Helper()
	s := string(raw)
	s = strings.ReplaceAll(s, "{{fifo}}", filepath.Join(sentinelRoot, "fifo"))
	s = strings.ReplaceAll(s, "{{sentinel}}", sentinelRoot)
	if strings.Contains(s, "{{deployment}}") {
		var list api.DeploymentList
		res := h.ctl("history", "-o", "json")
		if err := json.Unmarshal([]byte(res.stdout), &list); err != nil {
			t.Fatalf("agentctl history -o json (exit %d): %v\n%s%s", res.code, err, res.stdout, res.stderr)
		}
		id := "d-none"
		if len(list.Deployments) > 0 {
			id = list.Deployments[0].ID
		}
		s = strings.ReplaceAll(s, "{{deployment}}", id)
	}
	return []byte(s)
}

// rawRequest turns the readable request file into wire bytes: the head's
// lines end in CRLF, and Host, Content-Length (when there is a body and
// none is given) and Connection: close are added when missing. The body
// is sent exactly as written (minus the file's final newline).
func rawRequest(file []byte) []byte {
	head, body, _ := bytes.Cut(file, []byte("\n\n"))
	body = bytes.TrimSuffix(body, []byte("\n"))
	lines := strings.Split(strings.TrimRight(string(head), "\n"), "\n")
	has := func(name string) bool {
		for _, l := range lines[1:] {
			if k, _, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
				return true
			}
		}
		return false
	}
	if !has("Host") {
		lines = append(lines, "Host: rollback-agent")
	}
	if len(body) > 0 && !has("Content-Length") && !has("Transfer-Encoding") {
		lines = append(lines, "Content-Length: "+strconv.Itoa(len(body)))
	}
	if !has("Connection") {
		lines = append(lines, "Connection: close")
	}
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(strings.TrimSuffix(l, "\r"))
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// roundTrip sends req on a fresh connection and reads one response. The
// write runs beside the read: a server that refuses a flood answers and
// closes before the client is done writing, which is not an error here.
func roundTrip(socket string, req []byte) (int, []byte, error) {
	conn, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return 0, nil, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	go func() { _, _ = conn.Write(req) }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, nil, fmt.Errorf("no HTTP response: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, body, fmt.Errorf("read body: %w", err)
	}
	return resp.StatusCode, body, nil
}
