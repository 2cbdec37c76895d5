package hooks

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// waitCount waits until the number in path exceeds n, the sign that a
// background writer made that many more writes, and returns it.
func waitCount(t *testing.T, path string, n int) int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(path)
		if c, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && c > n {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the background writer did not get past %d writes (count file %q)", n, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The usual `./server &` in ApplicationStart, with a server that keeps
// writing to the hook's stdout: it used to write straight into the event's
// log file, 50 MiB five seconds later under a 1 MiB cap (issue 17.16). The
// cap holds for every writer, after the hook returned too, and the writer
// is not killed for it (no SIGPIPE).
func TestBackgroundWriterCannotGrowTheLog(t *testing.T) {
	for name, start := range map[string]string{
		"stdout of a child in the group": `( while :; do head -c 65536 /dev/zero; n=$((n+1)); echo $n > "$COUNT"; done ) &`,
		"stderr of a setsid child":       `setsid sh -c 'n=0; while :; do head -c 65536 /dev/zero >&2; n=$((n+1)); echo $n > "$COUNT"; done' < /dev/null > /dev/null &`,
	} {
		t.Run(name, func(t *testing.T) {
			const limit = 256 << 10
			dir := revisionDir(t)
			count := filepath.Join(dir, "count")
			pids := filepath.Join(dir, "pids")
			writeScript(t, dir, "start.sh", "#!/bin/bash\nn=0\n"+start+"\necho $! > '"+pids+"'\necho started\n", 0o755)
			s := baseSpec(t, dir, "start.sh")
			s.MaxLogBytes = limit
			s.Env = []string{"COUNT=" + count}
			res := Run(context.Background(), s)
			wantCode(t, res, Succeeded)
			bg := readPid(t, pids)
			killLater(t, bg)
			if len(res.Held) == 0 || len(res.Differences) == 0 || !strings.Contains(res.Differences[0], "failed to close") {
				t.Fatalf("Held %v Differences %v", res.Held, res.Differences)
			}
			after := waitCount(t, count, 0)
			// 64 more writes of 64 KiB: 16 times the cap, after Run returned.
			waitCount(t, count, after+64)
			fi, err := os.Stat(s.LogPath)
			if err != nil {
				t.Fatal(err)
			}
			marker := fmt.Sprintf(truncMarkerFmt, limit)
			if fi.Size() > limit+int64(len(marker)) {
				t.Fatalf("log is %d bytes, cap %d: a background writer grew it after the hook returned", fi.Size(), limit)
			}
			if !alive(bg) {
				t.Fatalf("the background writer %d died (SIGPIPE?)", bg)
			}
		})
	}
}

// A hook killed at its timeout, whose child escaped the process group
// with setsid and keeps writing: the cap holds all the same.
func TestEscapedWriterOfATimedOutHook(t *testing.T) {
	const limit = 128 << 10
	dir := revisionDir(t)
	count := filepath.Join(dir, "count")
	pids := filepath.Join(dir, "pids")
	writeScript(t, dir, "stuck.sh", `#!/bin/bash
setsid bash -c 'n=0; while :; do head -c 65536 /dev/zero; n=$((n+1)); echo $n > "$COUNT"; done' &
echo $! > '`+pids+`'
exec sleep 3600
`, 0o755)
	s := baseSpec(t, dir, "stuck.sh")
	s.MaxLogBytes = limit
	s.Timeout = 200 * time.Millisecond
	s.KillGrace = 100 * time.Millisecond
	s.Env = []string{"COUNT=" + count}
	res := Run(context.Background(), s)
	wantCode(t, res, ScriptTimedOut)
	bg := readPid(t, pids)
	killLater(t, bg)
	n := waitCount(t, count, 0)
	waitCount(t, count, n+32)
	if fi, _ := os.Stat(s.LogPath); fi.Size() > limit+int64(len(fmt.Sprintf(truncMarkerFmt, limit))) {
		t.Fatalf("log is %d bytes, cap %d", fi.Size(), limit)
	}
}

// scripts.log has CodeDeploy's format (hook_executor.rb log_script): a
// local "YYYY-MM-DD HH:MM:SS " stamp, "LifecycleEvent - X" once per event,
// "Script - location" per script, and every output line marked [stdout] or
// [stderr] (issue 14.8). The event files stay as they were.
func TestScriptsLogInCodeDeploysFormat(t *testing.T) {
	dir := revisionDir(t)
	writeScript(t, dir, "scripts/a.sh", "#!/bin/sh\necho out-a\necho err-a >&2\nprintf 'no newline'\n", 0o755)
	writeScript(t, dir, "scripts/b.sh", "#!/bin/sh\necho out-b\n", 0o755)
	logs := t.TempDir()
	scripts := filepath.Join(logs, "scripts.log")
	if err := WriteEventHeader(scripts, "AfterInstall", time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, loc := range []string{"scripts/a.sh", "scripts/b.sh"} {
		s := baseSpec(t, dir, loc)
		s.Event = "AfterInstall"
		s.LogPath = filepath.Join(logs, "AfterInstall.log")
		s.ScriptsLog = scripts
		wantCode(t, Run(context.Background(), s), Succeeded)
	}
	lines := strings.Split(strings.TrimSuffix(readFile(t, scripts), "\n"), "\n")
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (.*)$`)
	var rest []string
	for _, l := range lines {
		m := stamp.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("line %q has no CodeDeploy timestamp:\n%s", l, strings.Join(lines, "\n"))
		}
		rest = append(rest, m[1])
	}
	want := []string{"LifecycleEvent - AfterInstall", "Script - scripts/a.sh", "[stdout]out-a", "[stderr]err-a", "[stdout]no newline", "Script - scripts/b.sh", "[stdout]out-b"}
	if len(rest) != len(want) {
		t.Fatalf("scripts.log:\n%s", strings.Join(lines, "\n"))
	}
	for _, w := range want {
		if !strings.Contains(strings.Join(rest, "\n"), w) {
			t.Errorf("scripts.log lacks %q:\n%s", w, strings.Join(lines, "\n"))
		}
	}
	if rest[0] != want[0] || rest[1] != want[1] || rest[5] != want[5] || rest[6] != want[6] {
		t.Errorf("order: %q", rest)
	}
	if ev := readFile(t, filepath.Join(logs, "AfterInstall.log")); !strings.Contains(ev, "out-a\n") || strings.Contains(ev, "[stdout]") {
		t.Errorf("event file: %q", ev)
	}
}

// scripts.log is capped too, per script, stamps included: a script that
// prints empty lines cannot multiply the cap by the stamp's length.
func TestScriptsLogIsCapped(t *testing.T) {
	const limit = 64 << 10
	dir := revisionDir(t)
	writeScript(t, dir, "blank.sh", "#!/bin/sh\nyes '' | head -n 200000\n", 0o755)
	s := baseSpec(t, dir, "blank.sh")
	s.MaxLogBytes = limit
	s.ScriptsLog = filepath.Join(t.TempDir(), "scripts.log")
	res := Run(context.Background(), s)
	wantCode(t, res, Succeeded)
	fi, err := os.Stat(s.ScriptsLog)
	if err != nil {
		t.Fatal(err)
	}
	header := int64(len("2006-01-02 15:04:05 Script - blank.sh\n"))
	marker := int64(len("2006-01-02 15:04:05 " + fmt.Sprintf(truncMarkerFmt, limit)))
	if !res.Truncated || fi.Size() > header+limit+marker {
		t.Fatalf("Truncated %v, scripts.log %d bytes for a cap of %d", res.Truncated, fi.Size(), limit)
	}
}
