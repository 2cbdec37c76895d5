package testutil

import (
	"bufio"
	"encoding/json"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// holdScript opens N connections to a unix socket, sends each the same
// request (or nothing; "|" stands for CRLF), waits until every one has
// answered, closed or the deadline passed, prints the answers' status
// codes ("eof" for a close without an answer, "none" for no answer by
// the deadline) as one JSON object, then holds them all until its stdin
// closes. It is Python 3 (the fresh image's /usr/bin/python3) because it
// plays another local user, which a test process running as root cannot
// be on the connections it makes.
const holdScript = `
import json, select, socket, sys, time
path, n, req, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
socks, heads = [], {}
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    if req:
        s.sendall(req.replace('|', '\r\n').encode())
    socks.append(s)
deadline = time.time() + wait
while len(heads) < n and time.time() < deadline:
    r, _, _ = select.select([s for s in socks if s not in heads], [], [], max(0.0, deadline - time.time()))
    for s in r:
        try:
            b = s.recv(4096)
        except OSError:
            b = b''
        heads[s] = b.decode('latin-1') if b else ''
counts = {}
for s in socks:
    h = heads.get(s)
    code = 'none' if h is None else ('eof' if h == '' else h.split(' ')[1])
    counts[code] = counts.get(code, 0) + 1
print(json.dumps(counts), flush=True)
sys.stdin.read()
`

// Held is what HoldConns saw: how many connections got each answer
// ("200", "429", "eof", "none"), and how to let them go.
type Held struct {
	Counts  map[string]int
	Release func()
}

// HoldConns opens n connections to the unix socket sock as cred (nil: as
// the test), sends request on each ("" sends nothing), and returns once
// every one has its answer or wait passed; the connections stay open
// until Release (or the end of the test).
func HoldConns(t testing.TB, cred *syscall.Credential, sock string, n int, request string, wait time.Duration) Held {
	t.Helper()
	cmd := exec.Command("/usr/bin/python3", "-c", holdScript, sock, strconv.Itoa(n), request, strconv.FormatFloat(wait.Seconds(), 'f', 1, 64))
	cmd.Dir = "/"
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			stdin.Close()
			cmd.Wait()
		}
	}
	t.Cleanup(release)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		release()
		t.Fatalf("hold %d connections to %s: %v\n%s", n, sock, err, stderr.String())
	}
	h := Held{Release: release}
	if err := json.Unmarshal([]byte(line), &h.Counts); err != nil {
		t.Fatalf("hold: %q: %v", line, err)
	}
	go io.Copy(io.Discard, stdout)
	return h
}
