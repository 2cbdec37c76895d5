package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/hooks"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
)

// Issue 17.17: a hook's processes are ended with it whatever they do to
// their process group, and none of them can wedge the engine.

// cgroup2Mount returns where the cgroup v2 hierarchy is mounted whole.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if pre, post, ok := strings.Cut(line, " - "); ok && strings.HasPrefix(post, "cgroup2 ") {
			if f := strings.Fields(pre); f[3] == "/" {
				return f[4]
			}
		}
	}
	t.Fatal("no cgroup v2 hierarchy here: hook containment cannot be tested")
	return ""
}

// sharedHookCgroups is where an agent sharing this test's cgroup makes
// its hooks' cgroups ("" without cgroup v2).
func sharedHookCgroups(stateDir string) string {
	mountinfo, _ := os.ReadFile("/proc/self/mountinfo")
	self, _ := os.ReadFile("/proc/self/cgroup")
	var mnt, path string
	for _, line := range strings.Split(string(mountinfo), "\n") {
		if pre, post, ok := strings.Cut(line, " - "); ok && strings.HasPrefix(post, "cgroup2 ") {
			if f := strings.Fields(pre); len(f) > 4 && f[3] == "/" {
				mnt = f[4]
			}
		}
	}
	for _, line := range strings.Split(string(self), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			path = p
		}
	}
	if mnt == "" || path == "" {
		return ""
	}
	return filepath.Join(mnt, path, hooks.SharedRootName(stateDir))
}

// removeCgroupTree kills whatever is in dir and removes it, deepest first.
func removeCgroupTree(t *testing.T, dir string) {
	if dir == "" {
		return
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return
	}
	_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ev, _ := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if strings.Contains(string(ev), "populated 0") || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for _, d := range slices.Backward(dirs) {
		if err := os.Remove(d); err != nil {
			t.Errorf("removing cgroup %s: %v", d, err)
		}
	}
}

// livePid reports whether pid runs (a zombie does not: this sandbox's
// PID 1 may never reap).
func livePid(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// pidOf waits for a pid a hook wrote (renamed in whole) and kills it when
// the test ends, whatever the agent did.
func (h *host) pidOf(path string) int {
	h.t.Helper()
	h.waitFile(90*time.Second, path)
	b, _ := os.ReadFile(path)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		h.t.Fatalf("pid file %s: %q", path, b)
	}
	h.t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	return pid
}

// A revision whose ApplicationStart succeeds leaving a setsid sleeper
// (its application) and whose ValidateService setsid's another and fails:
// after the rollback neither runs, and the record names what was ended.
// Under the old process-group kill both ran on, unreported.
func TestSetsidSleepersOfAFailedRevisionAreGoneAfterRollback(t *testing.T) {
	h := newHost(t, "limits: {hook_kill_grace: 1s}\n")
	// The agent shares this test's cgroup: hooks' cgroups are under
	// <that cgroup>/rollback-agent-<hash of the state dir>.
	root := sharedHookCgroups(h.stateDir)
	if root == "" {
		t.Fatal("no cgroup v2 here: hook containment cannot be tested")
	}
	h.start()
	dest := filepath.Join(h.dir, "srv", "app")
	app, validate := filepath.Join(h.dir, "app.pid"), filepath.Join(h.dir, "validate.pid")
	sleeper := func(pidFile string) string {
		return fmt.Sprintf("setsid sleep 1000 &\necho $! > %[1]s.tmp && mv %[1]s.tmp %[1]s\n", pidFile)
	}
	v1 := h.bundle("v1", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "1"}}})
	v2 := h.bundle("v2", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "2"}}, Hooks: map[string]string{
		"ApplicationStart": sleeper(app) + "exit 0",
		"ValidateService":  sleeper(validate) + "echo v2 is broken >&2; exit 1",
	}})
	if r := h.ctl("deploy", v1, "--wait"); r.code != 0 {
		t.Fatalf("deploy v1: %s%s", r.stdout, r.stderr)
	}
	_, d := h.deployJSON(v2)
	appPid, validatePid := h.pidOf(app), h.pidOf(validate)
	if d.Status != api.StatusRolledBack {
		t.Fatalf("v2 ended %s, want rolled_back: %s", d.Status, d.Error)
	}
	for name, pid := range map[string]int{"ApplicationStart's": appPid, "ValidateService's": validatePid} {
		if livePid(pid) {
			t.Errorf("%s setsid sleeper %d still runs after v2 was rolled back", name, pid)
		}
	}
	var ended string
	for _, s := range d.Steps {
		if s.Name == "ApplicationStart" && s.Revision == "v2" && !strings.Contains(s.Detail, strconv.Itoa(appPid)) {
			t.Errorf("v2's ApplicationStart does not report the sleeper %d it left running: %q", appPid, s.Detail)
		}
		if s.Name == "EndProcesses" {
			ended = s.Detail
		}
	}
	if !strings.Contains(ended, strconv.Itoa(appPid)) {
		t.Errorf("the rollback's EndProcesses step does not name the application %d it ended: %q", appPid, ended)
	}
	if !strings.Contains(strings.Join(d.Warnings, "\n"), strconv.Itoa(validatePid)) {
		t.Errorf("the warnings do not name ValidateService's sleeper %d that was ended: %v", validatePid, d.Warnings)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "v")); string(b) != "1" {
		t.Errorf("v=%q after the rollback", b)
	}
}

// A hook that moves itself out of its process group (into the agent's)
// and ignores SIGTERM outlives its 3 s timeout: the deployment still ends
// (failed, rolled back) and the one queued behind it runs. The old kill
// signalled only the group and then waited for the script forever. The
// hooks' cgroups are under a configured root (limits.hook_cgroup), or,
// with a root that is no cgroup, there are none and the agent ends the
// script by pid.
func TestHookLeavingItsGroupCannotWedgeTheEngine(t *testing.T) {
	t.Run("cgroup", func(t *testing.T) {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		root := filepath.Join(cgroup2Mount(t), "e2e-hooks-"+hex.EncodeToString(b))
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { removeCgroupTree(t, root) })
		hookLeavingItsGroup(t, root)
	})
	t.Run("process-group-only", func(t *testing.T) {
		h := hookLeavingItsGroup(t, t.TempDir())
		if out := h.agent.Output(); !strings.Contains(out, "hooks are contained by their process group only") {
			t.Errorf("the agent did not say that hooks have no cgroups:\n%s", out)
		}
	})
}

func hookLeavingItsGroup(t *testing.T, cgroupRoot string) *host {
	h := newHost(t, fmt.Sprintf("limits: {hook_kill_grace: 1s, hook_cgroup: %s}\n", cgroupRoot))
	h.start()
	dest := filepath.Join(h.dir, "srv", "app")
	pidFile := filepath.Join(h.dir, "stuck.pid")
	stuck := fmt.Sprintf(`exec perl -e '
$SIG{TERM} = "IGNORE";
setpgrp(0, getpgrp(getppid())) or die "setpgrp: $!";
open(my $f, ">", "%[1]s.tmp") or die; print $f $$; close($f);
rename("%[1]s.tmp", "%[1]s") or die;
sleep 1000;'`, pidFile)
	v1 := h.bundle("v1", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "1"}}})
	v2 := h.bundle("v2", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "2"}}, HookTimeout: 3,
		Hooks: map[string]string{"ApplicationStart": stuck}})
	v3 := h.bundle("v3", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "3"}}})
	if r := h.ctl("deploy", v1, "--wait"); r.code != 0 {
		t.Fatalf("deploy v1: %s%s", r.stdout, r.stderr)
	}
	r := h.ctl("deploy", v2)
	if r.code != 0 {
		t.Fatalf("deploy v2: %s", r.stderr)
	}
	id2 := strings.Fields(r.stdout)[1]
	pid := h.pidOf(pidFile)
	r = h.ctl("deploy", v3)
	if r.code != 0 {
		t.Fatalf("deploy v3 behind v2: %s", r.stderr)
	}
	id3 := strings.Fields(r.stdout)[1]
	d2 := h.waitEnd(id2)
	if d2.Status != api.StatusRolledBack || !strings.Contains(d2.Error, "failed to complete in 3 seconds") {
		t.Fatalf("v2 ended %s, want rolled_back after its hook's timeout: %s", d2.Status, d2.Error)
	}
	if livePid(pid) {
		t.Errorf("the hook %d that left its process group survived its timeout", pid)
	}
	if d3 := h.waitEnd(id3); d3.Status != api.StatusSucceeded {
		t.Fatalf("v3, queued behind v2, ended %s: %s", d3.Status, d3.Error)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "v")); string(b) != "3" {
		t.Errorf("v=%q after v3", b)
	}
	return h
}

// `agentctl rollback` away from a revision ends what its hooks left
// running (a setsid'd application), after its ApplicationStop, and says so.
func TestManualRollbackEndsWhatTheRevisionLeftRunning(t *testing.T) {
	h := newHost(t, "limits: {hook_kill_grace: 1s}\n")
	h.start()
	dest := filepath.Join(h.dir, "srv", "app")
	app := filepath.Join(h.dir, "app.pid")
	v1 := h.bundle("v1", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "1"}}})
	v2 := h.bundle("v2", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "2"}}, Hooks: map[string]string{
		"ApplicationStart": fmt.Sprintf("setsid sleep 1000 < /dev/null > /dev/null 2>&1 &\necho $! > %[1]s.tmp && mv %[1]s.tmp %[1]s\n", app),
	}})
	d1 := h.deployRecord(v1, 0)
	h.deployRecord(v2, 0)
	pid := h.pidOf(app)
	if !livePid(pid) {
		t.Fatalf("v2's application %d does not run after a successful deployment", pid)
	}
	if r := h.ctl("rollback", "--to", d1.ID, "--wait"); r.code != 0 {
		t.Fatalf("rollback --to %s: exit %d\n%s%s", d1.ID, r.code, r.stdout, r.stderr)
	}
	d := lastDeployment(h)
	if livePid(pid) {
		t.Errorf("v2's application %d still runs after the rollback to v1", pid)
	}
	var ended string
	for _, s := range d.Steps {
		if s.Name == "EndProcesses" {
			ended = s.Detail
		}
	}
	if !strings.Contains(ended, strconv.Itoa(pid)) {
		t.Errorf("the rollback's EndProcesses step does not name %d: %q (steps %+v)", pid, ended, d.Steps)
	}
}
