package hooks

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A sleeper that setsid moved into a session of its own is out of the
// script's process group: only the script's cgroup still holds it.
const setsidSleeper = `setsid sleep 1000 &
echo $! > '%s.tmp' && mv '%s.tmp' '%s'
while [ ! -s '%s' ]; do :; done
`

func sleeperScript(pidFile, tail string) string {
	return "#!/bin/sh\n" + strings.ReplaceAll(setsidSleeper, "%s", pidFile) + tail
}

func TestContainedSetsidChildKilledAtTimeout(t *testing.T) {
	dir := revisionDir(t)
	pidFile := filepath.Join(dir, "sleeper.pid")
	writeScript(t, dir, "scripts/hang.sh", sleeperScript(pidFile, "sleep 1000\n"), 0o755)
	s, _ := containedSpec(t, dir, "scripts/hang.sh")
	s.Timeout = time.Second
	res := Run(context.Background(), s)
	wantCode(t, res, ScriptTimedOut)
	sleeper := readPid(t, pidFile)
	killLater(t, sleeper)
	if alive(sleeper) {
		t.Fatalf("the setsid sleeper %d survived the timeout (cgroup %s)", sleeper, testCgroupOf(sleeper))
	}
	if !slices.Contains(killedPIDs(res.Killed), sleeper) {
		t.Fatalf("Killed = %v, want the sleeper %d among them", res.Killed, sleeper)
	}
	if res.Cgroup == "" {
		t.Fatalf("the script ran without a cgroup; warnings %q", res.Warnings)
	}
}

func TestContainedFailedHookEndsSetsidChild(t *testing.T) {
	dir := revisionDir(t)
	pidFile := filepath.Join(dir, "sleeper.pid")
	writeScript(t, dir, "fail.sh", sleeperScript(pidFile, "exit 3\n"), 0o755)
	s, _ := containedSpec(t, dir, "fail.sh")
	res := Run(context.Background(), s)
	wantCode(t, res, ScriptFailed)
	sleeper := readPid(t, pidFile)
	killLater(t, sleeper)
	if alive(sleeper) {
		t.Fatalf("the setsid sleeper %d of a failed hook still runs", sleeper)
	}
	if !slices.Contains(killedPIDs(res.Killed), sleeper) {
		t.Fatalf("Killed = %v, want the sleeper %d", res.Killed, sleeper)
	}
}

// leaveGroup is a script that moves itself out of its process group into
// its parent's (the agent's) and ignores SIGTERM: a kill of its group
// reaches nothing, and waiting for it would wait forever.
func leaveGroup(pidFile string) string {
	return `#!/usr/bin/perl
$SIG{TERM} = "IGNORE";
setpgrp(0, getpgrp(getppid())) or die "setpgrp: $!";
open(my $f, ">", "` + pidFile + `.tmp") or die; print $f $$; close($f);
rename("` + pidFile + `.tmp", "` + pidFile + `") or die;
sleep 1000;
`
}

func TestContainedScriptLeavingItsGroupKilledAtTimeout(t *testing.T) {
	for _, contained := range []bool{true, false} {
		t.Run("cgroup="+strconv.FormatBool(contained), func(t *testing.T) {
			dir := revisionDir(t)
			pidFile := filepath.Join(dir, "main.pid")
			writeScript(t, dir, "leave.pl", leaveGroup(pidFile), 0o755)
			s := baseSpec(t, dir, "leave.pl")
			if contained {
				s, _ = containedSpec(t, dir, "leave.pl")
			}
			s.Timeout = time.Second
			s.KillGrace = 300 * time.Millisecond
			done := make(chan Result, 1)
			go func() { done <- Run(context.Background(), s) }()
			var res Result
			select {
			case res = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return: the engine would be wedged")
			}
			wantCode(t, res, ScriptTimedOut)
			main := readPid(t, pidFile)
			killLater(t, main)
			if _, pgrp := testProcState(main); alive(main) {
				t.Fatalf("the script %d (now in process group %d) survived its timeout", main, pgrp)
			}
			if !slices.Contains(killedPIDs(res.Killed), main) {
				t.Fatalf("Killed = %v, want the script %d", res.Killed, main)
			}
		})
	}
}

// Without a cgroup, a setsid child is still found through the process
// tree while the script that started it runs.
func TestUncontainedSetsidChildKilledAtTimeout(t *testing.T) {
	dir := revisionDir(t)
	pidFile := filepath.Join(dir, "sleeper.pid")
	writeScript(t, dir, "hang.sh", sleeperScript(pidFile, "sleep 1000\n"), 0o755)
	s := baseSpec(t, dir, "hang.sh")
	s.Timeout = time.Second
	res := Run(context.Background(), s)
	wantCode(t, res, ScriptTimedOut)
	sleeper := readPid(t, pidFile)
	killLater(t, sleeper)
	if alive(sleeper) {
		t.Fatalf("the setsid sleeper %d survived the timeout without a cgroup", sleeper)
	}
}

// A hook that ends well leaves its application running and reported;
// ending its revision's cgroup (a rollback of it) ends that too.
func TestContainedLeftoverReportedThenEndedWithItsRevision(t *testing.T) {
	dir := revisionDir(t)
	pidFile := filepath.Join(dir, "sleeper.pid")
	writeScript(t, dir, "start.sh", `#!/bin/sh
trap '' TERM
`+strings.ReplaceAll(setsidSleeper, "%s", pidFile)+"exit 0\n", 0o755)
	s, c := containedSpec(t, dir, "start.sh")
	res := Run(context.Background(), s)
	wantCode(t, res, Succeeded)
	sleeper := readPid(t, pidFile)
	killLater(t, sleeper)
	if !alive(sleeper) {
		t.Fatalf("the application %d a successful hook started was ended", sleeper)
	}
	if !slices.Contains(res.Lingering, sleeper) {
		t.Fatalf("Lingering = %v, want the sleeper %d reported", res.Lingering, sleeper)
	}
	if got := testCgroupOf(sleeper); !strings.HasSuffix(got, "/"+s.Group+"/"+s.Name) {
		t.Fatalf("the sleeper is in cgroup %q, want the hook's leaf %s/%s", got, s.Group, s.Name)
	}
	members, err := c.Members(s.Group)
	if err != nil || !slices.Contains(killedPIDs(members), sleeper) {
		t.Fatalf("Members(%s) = %v, %v; want the sleeper %d", s.Group, members, err, sleeper)
	}
	rep, err := c.EndGroup(s.Group, 200*time.Millisecond)
	if err != nil {
		t.Fatalf("EndGroup: %v", err)
	}
	if alive(sleeper) {
		t.Fatalf("the sleeper %d survived EndGroup", sleeper)
	}
	if !slices.Contains(killedPIDs(rep.Killed), sleeper) {
		t.Fatalf("EndGroup killed %v, want the sleeper %d", rep.Killed, sleeper)
	}
	if members, _ := c.Members(s.Group); len(members) != 0 {
		t.Fatalf("Members after EndGroup = %v", members)
	}
}

// A configured root that is no cgroup v2 directory, or that holds the
// agent itself (ending it would end the agent), is refused.
func TestContainUnderRefusesWhatItCannotUse(t *testing.T) {
	if _, err := ContainUnder(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not on the cgroup v2 file system") {
		t.Fatalf("ContainUnder(a temp dir) = %v, want a refusal naming the cgroup v2 file system", err)
	}
	mnt, self := testCgroupMount(t)
	own := filepath.Join(mnt, self)
	if _, err := ContainUnder(own); err == nil || !strings.Contains(err.Error(), "ending it would end the agent") {
		t.Fatalf("ContainUnder(the test's own cgroup %s) = %v, want a refusal", own, err)
	}
}

// The daemon's double fork: the sleeper is orphaned (its parent subshell
// has exited) before the hook fails, so no process-tree walk finds it;
// its cgroup still holds it.
func TestContainedFailedHookEndsDoubleForkedDaemon(t *testing.T) {
	dir := revisionDir(t)
	pidFile := filepath.Join(dir, "daemon.pid")
	writeScript(t, dir, "fail.sh", `#!/bin/sh
( setsid sleep 1000 < /dev/null > /dev/null 2>&1 &
  echo $! > '`+pidFile+`.tmp' && mv '`+pidFile+`.tmp' '`+pidFile+`' )
exit 2
`, 0o755)
	s, _ := containedSpec(t, dir, "fail.sh")
	res := Run(context.Background(), s)
	wantCode(t, res, ScriptFailed)
	daemon := readPid(t, pidFile)
	killLater(t, daemon)
	if alive(daemon) {
		t.Fatalf("the double-forked daemon %d of a failed hook still runs", daemon)
	}
	if !slices.Contains(killedPIDs(res.Killed), daemon) {
		t.Fatalf("Killed = %v, want the daemon %d", res.Killed, daemon)
	}
}
