package hooks

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRunTimeoutKillsGroup(t *testing.T) {
	dir := revisionDir(t)
	bgPid := filepath.Join(dir, "bg.pid")
	writeScript(t, dir, "scripts/hang.sh", `#!/bin/sh
sleep 100 &
echo $! > '`+bgPid+`'
echo $$ > '`+filepath.Join(dir, "main.pid")+`'
sleep 100
`, 0o755)
	s := baseSpec(t, dir, "scripts/hang.sh")
	s.Timeout = time.Second
	start := time.Now()
	res := Run(context.Background(), s)
	elapsed := time.Since(start)
	wantCode(t, res, ScriptTimedOut)
	if want := "Script at specified location: scripts/hang.sh failed to complete in 1 seconds"; res.Message != want {
		t.Fatalf("Message = %q, want %q", res.Message, want)
	}
	if res.ExitCode != -1 {
		t.Fatalf("ExitCode = %d, want -1", res.ExitCode)
	}
	if elapsed < time.Second || elapsed > 4*time.Second {
		t.Fatalf("Run took %v, want a little over the 1s timeout", elapsed)
	}
	bg := readPid(t, bgPid)
	killLater(t, bg)
	if alive(bg) {
		t.Fatalf("background sleep %d survived the timeout", bg)
	}
	mainPid := readPid(t, filepath.Join(dir, "main.pid"))
	if left := liveGroupMembers(t, mainPid); len(left) != 0 {
		t.Fatalf("process group %d still has %v", mainPid, left)
	}
	if len(res.Lingering) != 0 {
		t.Fatalf("Lingering = %v after a timeout kill", res.Lingering)
	}
}

func TestRunTimeoutSendsTERMFirst(t *testing.T) {
	dir := revisionDir(t)
	writeScript(t, dir, "graceful.sh", `#!/bin/sh
trap 'echo got-TERM; exit 7' TERM
sleep 100 &
wait
`, 0o755)
	s := baseSpec(t, dir, "graceful.sh")
	s.Timeout = time.Second
	// A long grace: the script and its sleep die of SIGTERM at once, so Run
	// must not sit out the grace period waiting for them.
	s.KillGrace = 10 * time.Second
	start := time.Now()
	res := Run(context.Background(), s)
	elapsed := time.Since(start)
	wantCode(t, res, ScriptTimedOut)
	if !strings.Contains(readFile(t, s.LogPath), "got-TERM") {
		t.Fatalf("script's TERM trap did not run; log:\n%s", readFile(t, s.LogPath))
	}
	if elapsed > 4*time.Second {
		t.Fatalf("Run took %v although the group ended on SIGTERM", elapsed)
	}
}

func TestRunTimeoutKillsScriptIgnoringTERM(t *testing.T) {
	dir := revisionDir(t)
	pidFile := filepath.Join(dir, "main.pid")
	writeScript(t, dir, "stubborn.sh", `#!/bin/sh
trap '' TERM
echo $$ > '`+pidFile+`'
while :; do sleep 0.1; done
`, 0o755)
	s := baseSpec(t, dir, "stubborn.sh")
	s.Timeout = time.Second
	s.KillGrace = 500 * time.Millisecond
	start := time.Now()
	res := Run(context.Background(), s)
	elapsed := time.Since(start)
	wantCode(t, res, ScriptTimedOut)
	if elapsed >= 5*time.Second {
		t.Fatalf("Run took %v, want < 5s", elapsed)
	}
	if elapsed < 1500*time.Millisecond {
		t.Fatalf("Run took %v: it did not wait the grace period after SIGTERM", elapsed)
	}
	pid := readPid(t, pidFile)
	if alive(pid) {
		t.Fatalf("script %d survived SIGKILL", pid)
	}
	if left := liveGroupMembers(t, pid); len(left) != 0 {
		t.Fatalf("process group %d still has %v", pid, left)
	}
}

func TestRunBackgroundChildDoesNotBlock(t *testing.T) {
	dir := revisionDir(t)
	pidFile := filepath.Join(dir, "bg.pid")
	// No redirection: the sleep inherits the script's stdout and stderr,
	// which is what makes CodeDeploy wait until the timeout.
	writeScript(t, dir, "start.sh", `#!/bin/sh
sleep 30 &
echo $! > '`+pidFile+`'
echo started
exit 0
`, 0o755)
	s := baseSpec(t, dir, "start.sh")
	s.Timeout = time.Hour
	res := Run(context.Background(), s)
	bg := readPid(t, pidFile)
	killLater(t, bg)
	wantCode(t, res, Succeeded)
	// Run returned although the sleep, which holds the script's stdout,
	// still runs: it did not wait for it (CodeDeploy waits the timeout).
	if !slices.Contains(res.Lingering, bg) {
		t.Fatalf("Lingering = %v, want it to contain the sleep %d", res.Lingering, bg)
	}
	if !alive(bg) {
		t.Fatalf("background sleep %d was killed; lingering children must be left running", bg)
	}
	if !strings.Contains(readFile(t, s.LogPath), "started") {
		t.Fatal("script output missing")
	}
	// CodeDeploy's agent fails this script; the difference is reported.
	if !slices.Equal(res.Held, []string{"stdout", "stderr"}) || len(res.Differences) != 2 ||
		!strings.Contains(res.Differences[0], "Script at specified location: start.sh failed to close STDOUT (OutputsLeftOpen, error code 6)") ||
		!strings.Contains(res.Differences[1], "failed to close STDERR") {
		t.Fatalf("Held %v, Differences %q", res.Held, res.Differences)
	}
}

func TestRunContextCancelKillsGroup(t *testing.T) {
	dir := revisionDir(t)
	pidFile := filepath.Join(dir, "bg.pid")
	writeScript(t, dir, "long.sh", `#!/bin/sh
sleep 100 &
echo $! > '`+pidFile+`'
wait
`, 0o755)
	s := baseSpec(t, dir, "long.sh")
	s.Timeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	res := Run(ctx, s)
	elapsed := time.Since(start)
	wantCode(t, res, UnknownError)
	if !strings.Contains(res.Message, "agent is stopping") ||
		!strings.HasPrefix(res.Message, "Script at specified location: long.sh") {
		t.Fatalf("Message = %q", res.Message)
	}
	if elapsed > 3*time.Second {
		t.Fatalf("Run took %v after cancellation at 300ms", elapsed)
	}
	bg := readPid(t, pidFile)
	killLater(t, bg)
	if alive(bg) {
		t.Fatalf("background sleep %d survived cancellation", bg)
	}
}
