package hooks

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRunSuccessWritesHeaderAndOutput(t *testing.T) {
	dir := revisionDir(t)
	path := writeScript(t, dir, "scripts/ok.sh", `#!/bin/sh
echo "hello stdout"
echo "hello stderr" >&2
echo "cwd=$(pwd)"
echo "pid=$$"
echo "pgrp=$(cut -d' ' -f5 /proc/$$/stat)"
`, 0o755)
	s := baseSpec(t, dir, "scripts/ok.sh")
	before := time.Now().Add(-time.Second)
	res := Run(context.Background(), s)
	wantCode(t, res, Succeeded)
	if err := res.Err(); err != nil {
		t.Fatalf("Err() = %v, want nil", err)
	}
	if res.ExitCode != 0 || res.Message != "" || res.Truncated || len(res.Lingering) != 0 {
		t.Fatalf("unexpected result %+v", res)
	}
	if res.Path != path || res.Event != "BeforeInstall" || res.Location != "scripts/ok.sh" {
		t.Fatalf("Path/Event/Location = %q/%q/%q", res.Path, res.Event, res.Location)
	}
	if res.Started.Before(before) || res.Duration <= 0 || res.Duration > 10*time.Second {
		t.Fatalf("Started %v, Duration %v", res.Started, res.Duration)
	}

	lines := strings.Split(strings.TrimSuffix(readFile(t, s.LogPath), "\n"), "\n")
	if len(lines) != 7 {
		t.Fatalf("log has %d lines, want 7:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	header := regexp.MustCompile(`^\[([^\]]+)\] (.*)$`)
	for i, want := range []string{"LifecycleEvent - BeforeInstall", "Script - scripts/ok.sh"} {
		m := header.FindStringSubmatch(lines[i])
		if m == nil || m[2] != want {
			t.Fatalf("log line %d = %q, want [time] %s", i, lines[i], want)
		}
		ts, err := time.Parse(time.RFC3339, m[1])
		if err != nil || ts.Before(before) || ts.After(time.Now().Add(time.Second)) {
			t.Fatalf("header time %q: %v (parsed %v)", m[1], err, ts)
		}
	}
	// stdout and stderr are two pipes, so only each stream's own order is
	// kept (as in CodeDeploy's agent); "hello stderr" may come anywhere.
	var out []string
	for _, l := range lines[2:] {
		if l == "hello stderr" {
			continue
		}
		out = append(out, l)
	}
	if len(out) != 4 || out[0] != "hello stdout" || out[1] != "cwd=/" || !strings.Contains(strings.Join(lines, "\n"), "hello stderr") {
		t.Fatalf("script output lines = %q", lines[2:])
	}
	pid, pgrp := strings.TrimPrefix(out[2], "pid="), strings.TrimPrefix(out[3], "pgrp=")
	if pid != pgrp || pid == strconv.Itoa(os.Getpid()) {
		t.Fatalf("script pid %s runs in process group %s, want its own group", pid, pgrp)
	}
	fi, err := os.Stat(s.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Fatalf("log mode %v, want 0640", fi.Mode().Perm())
	}
}

func TestRunScriptsOfAnEventAppend(t *testing.T) {
	dir := revisionDir(t)
	writeScript(t, dir, "a.sh", "#!/bin/sh\necho first-script\n", 0o755)
	writeScript(t, dir, "b.sh", "#!/bin/sh\necho second-script\n", 0o755)
	s := baseSpec(t, dir, "a.sh")
	wantCode(t, Run(context.Background(), s), Succeeded)
	s.Location = "b.sh"
	wantCode(t, Run(context.Background(), s), Succeeded)
	log := readFile(t, s.LogPath)
	order := []string{"Script - a.sh", "first-script", "Script - b.sh", "second-script"}
	at := 0
	for _, w := range order {
		i := strings.Index(log[at:], w)
		if i < 0 {
			t.Fatalf("log lacks %q after offset %d:\n%s", w, at, log)
		}
		at += i + len(w)
	}
	if n := strings.Count(log, "LifecycleEvent - BeforeInstall"); n != 2 {
		t.Fatalf("LifecycleEvent header appears %d times, want once per script:\n%s", n, log)
	}
}

func TestRunExitCode(t *testing.T) {
	dir := revisionDir(t)
	writeScript(t, dir, "scripts/fail.sh", "#!/bin/sh\necho failing\nexit 3\n", 0o755)
	res := Run(context.Background(), baseSpec(t, dir, "scripts/fail.sh"))
	wantCode(t, res, ScriptFailed)
	if res.ExitCode != 3 {
		t.Fatalf("ExitCode = %d, want 3", res.ExitCode)
	}
	want := "Script at specified location: scripts/fail.sh failed with exit code 3"
	if res.Message != want {
		t.Fatalf("Message = %q, want %q", res.Message, want)
	}
	var herr *Error
	if err := res.Err(); !errors.As(err, &herr) || herr.Code != ScriptFailed || !strings.Contains(err.Error(), want) {
		t.Fatalf("Err() = %v, want an *Error with code ScriptFailed and the message", err)
	}
}

func TestRunKilledBySignal(t *testing.T) {
	dir := revisionDir(t)
	writeScript(t, dir, "die.sh", "#!/bin/sh\nkill -KILL $$\n", 0o755)
	res := Run(context.Background(), baseSpec(t, dir, "die.sh"))
	wantCode(t, res, ScriptFailed)
	if res.ExitCode != -1 || !strings.Contains(res.Message, "SIGKILL") {
		t.Fatalf("ExitCode %d, Message %q; want -1 and the signal named", res.ExitCode, res.Message)
	}
}

func TestRunMissingScript(t *testing.T) {
	dir := revisionDir(t)
	s := baseSpec(t, dir, "scripts/nope.sh")
	res := Run(context.Background(), s)
	wantCode(t, res, ScriptMissing)
	want := "Script does not exist at specified location: " + filepath.Join(dir, "scripts/nope.sh")
	if res.Message != want {
		t.Fatalf("Message = %q, want %q", res.Message, want)
	}
	if _, err := os.Stat(s.LogPath); !os.IsNotExist(err) {
		t.Fatalf("log file was created for a missing script (stat: %v)", err)
	}
}

func TestRunDirectoryIsNotAScript(t *testing.T) {
	dir := revisionDir(t)
	if err := os.Mkdir(filepath.Join(dir, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	res := Run(context.Background(), baseSpec(t, dir, "scripts"))
	wantCode(t, res, ScriptMissing)
	if !strings.HasPrefix(res.Message, "Script does not exist at specified location: ") ||
		!strings.Contains(res.Message, "directory") {
		t.Fatalf("Message = %q", res.Message)
	}
}

func TestRunChmodsNonExecutable(t *testing.T) {
	dir := revisionDir(t)
	path := writeScript(t, dir, "noexec.sh", "#!/bin/sh\necho ran-after-chmod\n", 0o644)
	s := baseSpec(t, dir, "noexec.sh")
	wantCode(t, Run(context.Background(), s), Succeeded)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Fatalf("mode after run = %v, want 0755 (u, g and o execute added)", fi.Mode().Perm())
	}
	if !strings.Contains(readFile(t, s.LogPath), "ran-after-chmod") {
		t.Fatal("script did not run")
	}
}

func TestRunWithoutShebangUsesSh(t *testing.T) {
	dir := revisionDir(t)
	writeScript(t, dir, "plain.sh", "echo \"no-shebang-ran as $0\"\n", 0o755)
	s := baseSpec(t, dir, "plain.sh")
	wantCode(t, Run(context.Background(), s), Succeeded)
	if want := "no-shebang-ran as " + filepath.Join(dir, "plain.sh"); !strings.Contains(readFile(t, s.LogPath), want) {
		t.Fatalf("log lacks %q:\n%s", want, readFile(t, s.LogPath))
	}
}

func TestRunMissingInterpreter(t *testing.T) {
	dir := revisionDir(t)
	writeScript(t, dir, "bad.sh", "#!/nonexistent/interp\necho hi\n", 0o755)
	res := Run(context.Background(), baseSpec(t, dir, "bad.sh"))
	wantCode(t, res, ScriptFailed)
	if !strings.Contains(res.Message, "/nonexistent/interp") {
		t.Fatalf("Message = %q, want the interpreter named", res.Message)
	}
}

func TestRunRefusesLocationOutsideRevision(t *testing.T) {
	parent := revisionDir(t)
	dir := filepath.Join(parent, "revision")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ranMarker := filepath.Join(parent, "ran")
	outside := writeScript(t, parent, "outside.sh", "#!/bin/sh\ntouch '"+ranMarker+"'\n", 0o755)
	for _, loc := range []string{"../outside.sh", "scripts/../../outside.sh", outside} {
		t.Run(strings.ReplaceAll(loc, "/", "_"), func(t *testing.T) {
			res := Run(context.Background(), baseSpec(t, dir, loc))
			wantCode(t, res, ScriptMissing)
			if !strings.Contains(res.Message, "outside the revision") {
				t.Fatalf("Message = %q, want it to say outside the revision", res.Message)
			}
			if _, err := os.Stat(ranMarker); err == nil {
				t.Fatal("the outside script ran")
			}
		})
	}
	// An absolute link is data in a revision (issue 14.2), never a script
	// to chmod and run.
	t.Run("symlink_to_a_host_file", func(t *testing.T) {
		if err := os.Symlink(outside, filepath.Join(dir, "linked.sh")); err != nil {
			t.Fatal(err)
		}
		res := Run(context.Background(), baseSpec(t, dir, "linked.sh"))
		wantCode(t, res, ScriptMissing)
		if !strings.Contains(res.Message, "it is a symlink to "+outside) {
			t.Fatalf("Message = %q", res.Message)
		}
		if _, err := os.Stat(ranMarker); err == nil {
			t.Fatal("the outside script ran")
		}
	})
	t.Run("absolute_inside", func(t *testing.T) {
		inside := writeScript(t, dir, "in.sh", "#!/bin/sh\nexit 0\n", 0o755)
		wantCode(t, Run(context.Background(), baseSpec(t, dir, inside)), Succeeded)
	})
}

func TestRunStdinIsDevNull(t *testing.T) {
	// Put a pipe that never delivers EOF where an implementation that
	// passed the agent's stdin would pick it up, so that the test fails
	// (by timing out) if stdin is not /dev/null.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdin
	os.Stdin = r
	t.Cleanup(func() { os.Stdin = saved; r.Close(); w.Close() })

	dir := revisionDir(t)
	writeScript(t, dir, "read.sh", `#!/bin/sh
if read x; then echo "read:$x"; else echo "stdin-eof"; fi
echo "fd0=$(readlink /proc/$$/fd/0)"
`, 0o755)
	s := baseSpec(t, dir, "read.sh")
	s.Timeout = 5 * time.Second
	res := Run(context.Background(), s)
	wantCode(t, res, Succeeded)
	log := readFile(t, s.LogPath)
	if !strings.Contains(log, "stdin-eof") || !strings.Contains(log, "fd0=/dev/null") {
		t.Fatalf("log:\n%s", log)
	}
	if res.Duration > 2*time.Second {
		t.Fatalf("read took %v; stdin did not give EOF at once", res.Duration)
	}
}

func TestRunCancelledBeforeStart(t *testing.T) {
	dir := revisionDir(t)
	marker := filepath.Join(dir, "ran")
	writeScript(t, dir, "x.sh", "#!/bin/sh\ntouch '"+marker+"'\n", 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := Run(ctx, baseSpec(t, dir, "x.sh"))
	wantCode(t, res, UnknownError)
	if !strings.Contains(res.Message, "agent is stopping") {
		t.Fatalf("Message = %q", res.Message)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("script ran although ctx was cancelled")
	}
}

func TestRunRejectsMalformedEnv(t *testing.T) {
	dir := revisionDir(t)
	marker := filepath.Join(dir, "ran")
	writeScript(t, dir, "x.sh", "#!/bin/sh\ntouch '"+marker+"'\n", 0o755)
	s := baseSpec(t, dir, "x.sh")
	s.Env = []string{"GOOD=1", "NOEQUALS"}
	res := Run(context.Background(), s)
	wantCode(t, res, UnknownError)
	if !strings.Contains(res.Message, "NOEQUALS") {
		t.Fatalf("Message = %q, want the bad entry named", res.Message)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("script ran with a malformed environment")
	}
}

func TestErrorCodeString(t *testing.T) {
	want := map[ErrorCode]string{
		Succeeded: "Succeeded", ScriptMissing: "ScriptMissing", ScriptNotExecutable: "ScriptNotExecutable",
		ScriptTimedOut: "ScriptTimedOut", ScriptFailed: "ScriptFailed", UnknownError: "UnknownError",
		OutputsLeftOpen: "OutputsLeftOpen", FailedAfterRestart: "FailedAfterRestart", 42: "ErrorCode(42)",
	}
	for c, w := range want {
		if c.String() != w {
			t.Errorf("ErrorCode(%d).String() = %q, want %q", int(c), c.String(), w)
		}
	}
	for c, n := range map[ErrorCode]int{ScriptMissing: 1, ScriptNotExecutable: 2, ScriptTimedOut: 3,
		ScriptFailed: 4, UnknownError: 5, OutputsLeftOpen: 6, FailedAfterRestart: 7} {
		if int(c) != n {
			t.Errorf("%v = %d, want CodeDeploy's %d", c, int(c), n)
		}
	}
}
