package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// vmHWM is a process's peak resident set size in bytes; resetHWM starts
// a new peak (5 to clear_refs), so one request is measured alone.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM for pid %d", pid)
	return 0
}

func resetHWM(t *testing.T, pid int) {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Fatal(err)
	}
}

// hugeAppSpecBundle writes a tar.gz whose appspec.yml is a valid start
// followed by size bytes of comment lines: a few hundred KiB compressed.
func hugeAppSpecBundle(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	head := []byte("version: 0.0\nos: linux\n")
	if err := tw.WriteHeader(&tar.Header{Name: "appspec.yml", Mode: 0o644, Size: int64(len(head)) + size, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(head)
	line := bytes.Repeat([]byte("# padding\n"), 1<<16) // 640 KiB
	for left := size; left > 0; {
		n := min(left, int64(len(line)))
		if _, err := tw.Write(line[:n]); err != nil {
			t.Fatal(err)
		}
		left -= n
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}

// Issue 17 item 10: a 64 MiB appspec inside a small bundle is refused
// at Validate having read one MiB of it, not all of it.
func TestAHugeAppSpecIsRefusedAtTheReadingLimit(t *testing.T) {
	h := newHost(t, "checkpoint: {before_deploy: [], required: false}\nboot: {assess: false}\n"+
		"limits: {max_unpacked_bytes: 512MiB, max_file_bytes: 256MiB}\n")
	h.start()
	const size = 64 << 20
	p := filepath.Join(h.dir, "huge-appspec.tgz")
	hugeAppSpecBundle(t, p, size)
	resetHWM(t, h.agent.PID())
	base := vmHWM(t, h.agent.PID())
	r := h.ctl("deploy", p, "--wait", "-o", "json")
	var d api.Deployment
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || r.code != 1 {
		t.Fatalf("deploy: exit %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	if s := d.FailedStep(); s == nil || s.Name != "Validate" || !strings.Contains(s.Error, "larger than the 1048576-byte limit") {
		t.Errorf("want Validate to fail on the size; failed step %+v", s)
	}
	grown := vmHWM(t, h.agent.PID()) - base
	t.Logf("peak RSS grew by %d MiB refusing a %d MiB appspec", grown>>20, size>>20)
	if grown > 40<<20 {
		t.Errorf("the agent's peak RSS grew by %d MiB refusing a %d MiB appspec: it read more than the limit", grown>>20, size>>20)
	}
}

// The same class for what is fetched: a bundle from S3 or a local path
// larger than the limits allow is refused when the copy reaches that
// size (S3: from its Content-Length, before reading), not after it has
// filled the state disk.
func TestFetchStopsAtTheBundleLimit(t *testing.T) {
	h := newHost(t, "checkpoint: {before_deploy: [], required: false}\nboot: {assess: false}\n"+
		"limits: {max_unpacked_bytes: 1MiB, max_files: 10, max_file_bytes: 1MiB}\n")
	h.start()
	big := filepath.Join(h.dir, "big.tgz")
	hugeAppSpecBundle(t, big, 1<<20)
	// Incompressible bytes after the gzip stream: 4 MiB on disk.
	f, _ := os.OpenFile(big, os.O_APPEND|os.O_WRONLY, 0)
	junk := make([]byte, 4<<20)
	for i := range junk {
		junk[i] = byte(i*7919 + i>>8)
	}
	f.Write(junk)
	f.Close()

	r := h.ctl("deploy", big, "--wait", "-o", "json")
	var d api.Deployment
	json.Unmarshal([]byte(r.stdout), &d)
	if s := d.FailedStep(); r.code != 1 || s == nil || s.Name != "Fetch" || !strings.Contains(s.Error, "allow no bundle larger than") {
		t.Errorf("local file over the limit: exit %d, failed step %+v\n%s", r.code, s, r.stderr)
	}

	bucket := fmt.Sprintf("limits-%d", time.Now().UnixNano())
	awscli(t, h.bed, nil, "s3api", "create-bucket", "--bucket", bucket)
	awscli(t, h.bed, nil, "s3api", "put-object", "--bucket", bucket, "--key", "big.tgz", "--body", big)
	r = h.ctl("deploy", "s3://"+bucket+"/big.tgz", "--wait", "-o", "json")
	d = api.Deployment{}
	json.Unmarshal([]byte(r.stdout), &d)
	if s := d.FailedStep(); r.code != 1 || s == nil || s.Name != "Fetch" || !strings.Contains(s.Error, "nothing of it was read") {
		t.Errorf("S3 object over the limit: exit %d, failed step %+v\n%s", r.code, s, r.stderr)
	}
}
