package hooks

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// sampleSize records the largest size path reaches until stop is closed.
func sampleSize(path string, stop <-chan struct{}, peak *atomic.Int64, done chan<- struct{}) {
	defer close(done)
	for {
		if fi, err := os.Stat(path); err == nil && fi.Size() > peak.Load() {
			peak.Store(fi.Size())
		}
		select {
		case <-stop:
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func TestRunCapsHugeOutput(t *testing.T) {
	const limit = 1 << 20
	dir := revisionDir(t)
	writeScript(t, dir, "flood.sh", "#!/bin/sh\nhead -c 1073741824 /dev/zero\necho flood-done >&2\n", 0o755)
	s := baseSpec(t, dir, "flood.sh")
	s.Timeout = time.Minute
	s.MaxLogBytes = limit

	// Watch the file while the script runs: capping only at the end would
	// let it reach a gigabyte first.
	if err := os.MkdirAll(filepath.Dir(s.LogPath), 0o755); err != nil {
		t.Fatal(err)
	}
	var peak atomic.Int64
	stop, sampled := make(chan struct{}), make(chan struct{})
	go sampleSize(s.LogPath, stop, &peak, sampled)

	start := time.Now()
	res := Run(context.Background(), s)
	elapsed := time.Since(start)
	close(stop)
	<-sampled

	wantCode(t, res, Succeeded)
	if !res.Truncated {
		t.Fatal("Truncated = false after 1 GiB of output")
	}
	marker := fmt.Sprintf(truncMarkerFmt, limit)
	if marker != "[rollback-agent: output truncated at 1048576 bytes]\n" {
		t.Fatalf("marker = %q", marker)
	}
	data := readFile(t, s.LogPath)
	if len(data) > limit+len(marker) {
		t.Fatalf("final log size %d > %d + %d", len(data), limit, len(marker))
	}
	if !strings.HasSuffix(data, marker) || !strings.HasPrefix(data, "[") ||
		!strings.Contains(data[:200], "Script - flood.sh") {
		t.Fatalf("log should keep its header and end with the marker; head %q, tail %q", data[:100], data[len(data)-100:])
	}
	t.Logf("1 GiB written in %v, peak file size %d bytes", elapsed, peak.Load())
	if elapsed > 30*time.Second {
		t.Fatalf("took %v, want < 30s", elapsed)
	}
	if peak.Load() > 256<<20 {
		t.Fatalf("log file reached %d bytes while the script ran; it must be capped as it grows", peak.Load())
	}
}

func TestRunCapCountsEarlierOutput(t *testing.T) {
	const limit = 1 << 20
	dir := revisionDir(t)
	writeScript(t, dir, "more.sh", "#!/bin/sh\nhead -c 204800 /dev/zero | tr '\\0' b\n", 0o755)
	s := baseSpec(t, dir, "more.sh")
	s.MaxLogBytes = limit
	earlier := strings.Repeat("a", 900<<10)
	if err := os.MkdirAll(filepath.Dir(s.LogPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.LogPath, []byte(earlier), 0o640); err != nil {
		t.Fatal(err)
	}
	res := Run(context.Background(), s)
	wantCode(t, res, Succeeded)
	if !res.Truncated {
		t.Fatal("Truncated = false although earlier scripts' output plus this one exceed the cap")
	}
	data := readFile(t, s.LogPath)
	marker := fmt.Sprintf(truncMarkerFmt, limit)
	if len(data) != limit+len(marker) {
		t.Fatalf("log size %d, want exactly %d + %d", len(data), limit, len(marker))
	}
	if !strings.HasPrefix(data, earlier+"[") || !strings.HasSuffix(data, strings.Repeat("b", 100)+marker) {
		t.Fatal("earlier output must be kept and this script's output cut at the end")
	}
}

func TestRunSmallOutputNotTruncated(t *testing.T) {
	dir := revisionDir(t)
	writeScript(t, dir, "small.sh", "#!/bin/sh\nhead -c 1000 /dev/zero | tr '\\0' c\n", 0o755)
	s := baseSpec(t, dir, "small.sh")
	s.MaxLogBytes = 4096
	res := Run(context.Background(), s)
	wantCode(t, res, Succeeded)
	data := readFile(t, s.LogPath)
	if res.Truncated || strings.Contains(data, "truncated") || !strings.HasSuffix(data, strings.Repeat("c", 1000)) {
		t.Fatalf("Truncated = %v, log:\n%s", res.Truncated, data)
	}
}

func TestTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scripts.log")
	if err := os.WriteFile(path, []byte("line one\nline two\nlast: héllo\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		n    int
		want string
	}{
		{0, ""},
		{7, "héllo\n"},
		{6, "éllo\n"}, // 'é' is two bytes; 6 bytes start at its first one
		{5, "llo\n"},  // 5 bytes would start inside 'é': skip to the next character
		{1000, "line one\nline two\nlast: héllo\n"},
	}
	for _, c := range cases {
		got, err := Tail(path, c.n)
		if err != nil {
			t.Fatalf("Tail(%d): %v", c.n, err)
		}
		if got != c.want {
			t.Errorf("Tail(%d) = %q, want %q", c.n, got, c.want)
		}
	}
	if _, err := Tail(filepath.Join(t.TempDir(), "missing.log"), 10); err == nil ||
		!strings.Contains(err.Error(), "missing.log") {
		t.Fatalf("Tail of a missing file: err = %v, want one naming the file", err)
	}
}
