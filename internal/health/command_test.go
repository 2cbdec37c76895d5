package health

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

func cmdCfg(timeout time.Duration, argv ...string) config.Check {
	return config.Check{Name: "script", Command: &config.CommandCheck{Argv: argv, Timeout: timeout}}
}

func TestCommandTrueIsHealthy(t *testing.T) {
	res, _ := checkOne(t, cmdCfg(5*time.Second, "/bin/true"), Deps{})
	if !res.Healthy {
		t.Fatalf("Healthy = false: %q", res.Output)
	}
	if res.Kind != KindCommand || res.Output != "exit status 0" {
		t.Errorf("Kind = %q, Output = %q; want command, \"exit status 0\"", res.Kind, res.Output)
	}
}

func TestCommandFalseIsUnhealthyWithItsOutput(t *testing.T) {
	res, _ := checkOne(t, cmdCfg(5*time.Second, "/bin/sh", "-c", "echo to-stdout; echo db is down >&2; exit 3"), Deps{})
	if res.Healthy {
		t.Fatal("Healthy = true for exit status 3")
	}
	if res.Output != "exit status 3" {
		t.Errorf("Output = %q, want only the exit status (what the command printed may be secret)", res.Output)
	}
	wantContains(t, "Detail", res.Detail, "to-stdout", "db is down")

	res, _ = checkOne(t, cmdCfg(5*time.Second, "/bin/false"), Deps{})
	if res.Healthy || res.Output != "exit status 1" {
		t.Errorf("/bin/false: Healthy = %v, Output = %q; want false, \"exit status 1\"", res.Healthy, res.Output)
	}
}

func TestCommandPastItsTimeoutIsKilled(t *testing.T) {
	// The shell prints its pid (the process group) and waits on a sleep:
	// both must be gone when the check returns.
	const timeout = 300 * time.Millisecond
	res, took := checkOne(t, cmdCfg(timeout, "/bin/sh", "-c", "echo $$; sleep 30; echo not reached"), Deps{})
	if res.Healthy {
		t.Fatal("Healthy = true for a command killed at its timeout")
	}
	wantDuration(t, "a command past its timeout", took, timeout-probeSlack(timeout)-5*time.Millisecond, timeout+margin)
	wantContains(t, "Output", res.Output, "timed out after 300ms: killed /bin/sh and its process group")
	if strings.Contains(res.Detail, "not reached") {
		t.Errorf("Detail = %q: the script went on after the kill", res.Detail)
	}
	pgid := firstNumber(t, res.Detail)
	waitGroupGone(t, pgid)
}

func TestCommandBackgroundChildHoldingStdoutDoesNotBlock(t *testing.T) {
	// The background sleep keeps stdout open for 30s; the check must
	// return when the shell exits, and take the sleep with it.
	res, took := checkOne(t, cmdCfg(10*time.Second, "/bin/sh", "-c", "sleep 30 & echo $$; exit 0"), Deps{})
	if !res.Healthy {
		t.Fatalf("Healthy = false: %q", res.Output)
	}
	if took > time.Second {
		t.Errorf("check took %v, want it to return when the shell exits", took)
	}
	pgid := firstNumber(t, res.Detail)
	waitGroupGone(t, pgid)
}

func TestCommandStdinIsDevNull(t *testing.T) {
	res, took := checkOne(t, cmdCfg(5*time.Second, "/bin/sh", "-c", "cat; echo read-eof"), Deps{})
	if !res.Healthy || !strings.Contains(res.Detail, "read-eof") {
		t.Fatalf("Healthy = %v, Detail = %q; want cat to see EOF at once", res.Healthy, res.Detail)
	}
	if took > time.Second {
		t.Errorf("check took %v: stdin was not /dev/null", took)
	}
}

func TestCommandOutputIsBoundedToItsEnd(t *testing.T) {
	// 200 KB of noise then the line that matters.
	res, _ := checkOne(t, cmdCfg(5*time.Second, "/bin/sh", "-c", "head -c 200000 /dev/zero | tr '\\0' a; echo; echo LAST-LINE; exit 1"), Deps{})
	if res.Healthy {
		t.Fatal("Healthy = true for exit status 1")
	}
	if len(res.Detail) > maxOutput {
		t.Errorf("Detail is %d bytes, want at most %d", len(res.Detail), maxOutput)
	}
	if res.Output != "exit status 1" || !strings.HasPrefix(res.Detail, "…") || !strings.HasSuffix(res.Detail, "LAST-LINE") {
		t.Errorf("Output = %q, Detail = %.80q…%q, want the status, then a cut mark and the end of the output", res.Output, res.Detail, tailUTF8(res.Detail, 40))
	}
}

func TestCommandNotFound(t *testing.T) {
	res, _ := checkOne(t, cmdCfg(5*time.Second, "/nonexistent/check-script"), Deps{})
	if res.Healthy {
		t.Fatal("Healthy = true for a missing program")
	}
	wantContains(t, "Output", res.Output, "starting /nonexistent/check-script", "no such file or directory")
}

func TestCommandLeavesNoTempFiles(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	if res, _ := checkOne(t, cmdCfg(5*time.Second, "/bin/echo", "hello"), Deps{}); !res.Healthy || res.Output != "exit status 0" || res.Detail != "hello" {
		t.Fatalf("Healthy = %v, Output = %q, Detail = %q", res.Healthy, res.Output, res.Detail)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("the check left %d file(s) in TMPDIR, want none", len(entries))
	}
}

// firstNumber finds the pid the test scripts print first in their output.
func firstNumber(t *testing.T, output string) int {
	t.Helper()
	for _, f := range strings.FieldsFunc(output, func(r rune) bool { return r < '0' || r > '9' }) {
		if n, err := strconv.Atoi(f); err == nil && n > 1 {
			return n
		}
	}
	t.Fatalf("no pid in output %q", output)
	return 0
}

// waitGroupGone fails unless every process of group pgid is gone (or a
// zombie: this machine's PID 1 may not reap orphans) within a second.
func waitGroupGone(t *testing.T, pgid int) {
	t.Helper()
	testutil.WaitFor(t, time.Second, fmt.Sprintf("process group %d to be gone", pgid), func() error {
		if alive := liveGroupMembers(t, pgid); len(alive) > 0 {
			return fmt.Errorf("live members %v", alive)
		}
		return nil
	})
}

func liveGroupMembers(t *testing.T, pgid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		// "pid (comm) state ppid pgrp ...": comm may hold spaces.
		fields := bytes.Fields(data[bytes.LastIndexByte(data, ')')+1:])
		if len(fields) < 3 {
			continue
		}
		if g, _ := strconv.Atoi(string(fields[2])); g == pgid && fields[0][0] != 'Z' && fields[0][0] != 'X' {
			pids = append(pids, pid)
		}
	}
	return pids
}
