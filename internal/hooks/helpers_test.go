package hooks

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// revisionDir returns a revision root that other users can traverse: runas
// tests exec scripts in it as nobody, and t.TempDir creates its parent 0700.
func revisionDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatalf("making %s traversable: %v", d, err)
		}
	}
	return dir
}

// writeScript writes body to dir/location (creating parent directories)
// with the given mode and returns the absolute path.
func writeScript(t *testing.T, dir, location, body string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, location)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatalf("creating script directory: %v", err)
	}
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatalf("writing script: %v", err)
	}
	// WriteFile's mode is filtered by the umask; tests depend on the exact one.
	if err := os.Chmod(path, mode); err != nil {
		t.Fatalf("setting script mode: %v", err)
	}
	return path
}

// baseSpec is a spec for dir/location with a short timeout and a log file
// in a directory of its own (it does not exist yet: Run creates it).
func baseSpec(t *testing.T, dir, location string) Spec {
	t.Helper()
	return Spec{
		Event:    "BeforeInstall",
		Dir:      dir,
		Location: location,
		Timeout:  20 * time.Second,
		LogPath:  filepath.Join(t.TempDir(), "logs", "scripts.log"),
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return string(data)
}

// readPid reads a pid a script wrote with `echo $! > file`.
func readPid(t *testing.T, path string) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(readFile(t, path)))
	if err != nil {
		t.Fatalf("pid file %s: %v", path, err)
	}
	return pid
}

// testProcState returns the state letter of pid from /proc, or 0 when the
// process does not exist. It is deliberately independent of procs.go so that
// a bug there cannot hide itself.
func testProcState(pid int) (state byte, pgrp int) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0
	}
	rest := data[bytes.LastIndexByte(data, ')')+2:]
	f := strings.Fields(string(rest))
	pgrp, _ = strconv.Atoi(f[2])
	return rest[0], pgrp
}

// alive reports whether pid exists and is not a zombie (this sandbox's PID 1
// may never reap orphans, so a killed process can stay a zombie).
func alive(pid int) bool {
	state, _ := testProcState(pid)
	return state != 0 && state != 'Z' && state != 'X'
}

// liveGroupMembers lists live processes of process group pgid.
func liveGroupMembers(t *testing.T, pgid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("reading /proc: %v", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, pgrp := testProcState(pid); pgrp == pgid && state != 'Z' && state != 'X' && state != 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killLater kills pid when the test ends, so that a background child the test
// provoked does not outlive it.
func killLater(t *testing.T, pid int) {
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
}

// passwdEntry returns the fields of name's /etc/passwd line.
func passwdEntry(t *testing.T, name string) []string {
	t.Helper()
	for _, line := range strings.Split(readFile(t, "/etc/passwd"), "\n") {
		if f := strings.Split(line, ":"); len(f) >= 7 && f[0] == name {
			return f
		}
	}
	t.Fatalf("user %s is not in /etc/passwd", name)
	return nil
}

func wantCode(t *testing.T, res Result, code ErrorCode) {
	t.Helper()
	if res.Code != code {
		t.Fatalf("Code = %v, want %v (message %q, warnings %q)", res.Code, code, res.Message, res.Warnings)
	}
}
