package engine_test

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// The lifecycle runs in CodeDeploy's order, ApplicationStop from the
// previous revision, the rest from the new one, with CodeDeploy's
// environment.
func TestLifecycleOrderApplicationStopFromPreviousAndEnvironment(t *testing.T) {
	a := newAgent(t, nil)
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify") // must not leak into hooks
	v1 := a.bundle("v1", revision.Revision{Files: map[string]revision.File{"version": {Content: "v1"}}, Hooks: recordHooks(a.out, nil)})
	v2 := a.bundle("v2", revision.Revision{Files: map[string]revision.File{"version": {Content: "v2"}},
		Hooks: recordHooks(a.out, map[string]string{"BeforeInstall": "env > " + filepath.Join(a.out, "env")})})
	d1 := a.deploy(v1)
	mustStatus(t, d1, api.StatusSucceeded)
	os.Remove(filepath.Join(a.out, "order"))
	d2 := a.deploy(v2)
	mustStatus(t, d2, api.StatusSucceeded)

	got := strings.Fields(strings.ReplaceAll(a.read("order"), "\n", " | "))
	want := strings.Fields("ApplicationStop v1 | BeforeInstall v2 | AfterInstall v2 | ApplicationStart v2 | ValidateService v2 |")
	if !slices.Equal(got, want) {
		t.Errorf("lifecycle = %v\nwant %v", got, want)
	}
	wantSteps := []string{"Fetch", "Unpack", "Validate", "BeforeBlockTraffic", "AfterBlockTraffic", "ApplicationStop", "Checkpoint",
		"BeforeInstall", "Install", "AfterInstall", "ApplicationStart", "ValidateService", "BeforeAllowTraffic", "AfterAllowTraffic", "Assess"}
	var names []string
	for _, s := range d2.Steps {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, wantSteps) {
		t.Errorf("steps = %v", names)
	}
	if d2.Steps[5].Revision != "v1" {
		t.Errorf("ApplicationStop step should name revision v1: %+v", d2.Steps[5])
	}
	env := map[string]string{}
	for _, line := range strings.Split(a.read("env"), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	for k, v := range map[string]string{
		"LIFECYCLE_EVENT": "BeforeInstall", "DEPLOYMENT_ID": d2.ID, "APPLICATION_NAME": "shop",
		"DEPLOYMENT_GROUP_NAME": "shop", "DEPLOYMENT_GROUP_ID": "group-uuid", "ROLLBACK_AGENT_REVISION": "v2",
		"ROLLBACK_AGENT_DEPLOYMENT_REVISION": "v2", "ROLLBACK_AGENT_CHECKPOINT_ID": "",
	} {
		if got, ok := env[k]; !ok || got != v {
			t.Errorf("hook env %s = %q (set %v), want %q", k, got, ok, v)
		}
	}
	for _, k := range []string{"NOTIFY_SOCKET", "BUNDLE_BUCKET", "BUNDLE_KEY"} {
		if _, ok := env[k]; ok {
			t.Errorf("hook env has %s", k)
		}
	}
	if a.destFile("version") != "v2" {
		t.Errorf("installed version %q", a.destFile("version"))
	}
}

func TestRunAsRunsHookAsThatUser(t *testing.T) {
	if os.Geteuid() != 0 {
		// The fast subset runs without root (README); make test runs as
		// root and runs this.
		t.Skip("runas needs root to change user")
	}
	a := newAgent(t, nil)
	spec := (`version: 0.0
os: linux
hooks:
  AfterInstall:
    - location: scripts/who.sh
      runas: nobody
`)
	p := a.bundle("who", revision.Revision{AppSpec: spec, Raw: map[string]revision.File{
		"scripts/who.sh": {Content: "#!/bin/sh\necho \"$(id -u) $USER $HOME\" > " + filepath.Join(a.out, "who") + "\n", Mode: 0o755},
	}})
	mustStatus(t, a.deploy(p), api.StatusSucceeded)
	if got := strings.TrimSpace(a.read("who")); got != "65534 nobody /nonexistent" {
		t.Errorf("runas identity = %q", got)
	}
}

// ValidateService fails: the revision rung runs the failed revision's
// ApplicationStop, reinstalls v1 from releases/ and runs v1's hooks.
func TestFailedValidateServiceRollsBackToLastGood(t *testing.T) {
	a := newAgent(t, nil)
	v1 := a.bundle("v1", revision.Revision{Files: map[string]revision.File{"version": {Content: "v1"}, "only-v1": {Content: "1"}}, Hooks: recordHooks(a.out, nil)})
	v2 := a.bundle("v2", revision.Revision{Files: map[string]revision.File{"version": {Content: "v2"}, "only-v2": {Content: "2"}},
		Hooks: recordHooks(a.out, map[string]string{"ValidateService": "echo v2 is broken >&2; exit 3"})})
	d1 := a.deploy(v1)
	mustStatus(t, d1, api.StatusSucceeded)
	os.Remove(filepath.Join(a.out, "order"))
	os.Remove(v1) // the rollback must not need the bundle
	d2 := a.deploy(v2)
	mustStatus(t, d2, api.StatusRolledBack)
	if d2.RolledBackTo != d1.ID || len(d2.Rungs) != 1 || d2.Rungs[0].Name != "revision" || d2.Rungs[0].Status != api.StepSucceeded {
		t.Errorf("rung record: %+v to %s", d2.Rungs, d2.RolledBackTo)
	}
	got := strings.Split(strings.TrimSpace(a.read("order")), "\n")
	want := []string{"ApplicationStop v1", "BeforeInstall v2", "AfterInstall v2", "ApplicationStart v2", "ValidateService v2",
		"ApplicationStop v2", "BeforeInstall v1", "AfterInstall v1", "ApplicationStart v1", "ValidateService v1"}
	if !slices.Equal(got, want) {
		t.Errorf("order:\n%v\nwant\n%v", got, want)
	}
	if a.destFile("version") != "v1" || a.destFile("only-v1") != "1" || a.destFile("only-v2") != "<missing>" {
		t.Errorf("files after rollback: version=%q only-v1=%q only-v2=%q", a.destFile("version"), a.destFile("only-v1"), a.destFile("only-v2"))
	}
	if !strings.Contains(d2.Error, "ValidateService") || !strings.Contains(d2.Error, "v2 is broken") {
		t.Errorf("error should name the event and show the output: %q", d2.Error)
	}
	cur, _ := a.j.Pointer("current")
	if cur != d1.ID {
		t.Errorf("current = %s, want %s", cur, d1.ID)
	}
}

func TestFirstDeploymentFailingLeavesNothingInstalled(t *testing.T) {
	a := newAgent(t, nil)
	v1 := a.bundle("v1", revision.Revision{Files: map[string]revision.File{"version": {Content: "v1"}},
		Hooks: map[string]string{"ApplicationStart": "exit 1"}})
	d := a.deploy(v1)
	mustStatus(t, d, api.StatusRolledBack)
	if _, err := os.Stat(a.dest); !os.IsNotExist(err) {
		t.Errorf("files of the failed first revision left at %s", a.dest)
	}
	if cur, _ := a.j.Pointer("current"); cur != "" {
		t.Errorf("current = %q", cur)
	}
}

func TestRevisionRungFailureNeedsOperator(t *testing.T) {
	a := newAgent(t, nil)
	marker := filepath.Join(a.out, "broken")
	v1 := a.bundle("v1", revision.Revision{Files: map[string]revision.File{"v": {Content: "1"}},
		Hooks: map[string]string{"ValidateService": "test ! -e " + marker}})
	v2 := a.bundle("v2", revision.Revision{Files: map[string]revision.File{"v": {Content: "2"}},
		Hooks: map[string]string{"BeforeInstall": "touch " + marker, "ValidateService": "exit 1"}})
	mustStatus(t, a.deploy(v1), api.StatusSucceeded)
	d := a.deploy(v2)
	mustStatus(t, d, api.StatusNeedsOperator)
	if !strings.Contains(d.Error, "revision rung: ValidateService of revision v1") || !strings.Contains(d.Error, "agentctl rollback --to") {
		t.Errorf("needs_operator error should say what failed and what to do: %q", d.Error)
	}
}

func TestAutomaticRollbackOff(t *testing.T) {
	a := newAgent(t, func(c *config.Config) { c.Rollback.Automatic = false })
	mustStatus(t, a.deploy(a.bundle("v1", revision.Revision{Files: map[string]revision.File{"v": {Content: "1"}}})), api.StatusSucceeded)
	d := a.deploy(a.bundle("v2", revision.Revision{Files: map[string]revision.File{"v": {Content: "2"}}, Hooks: map[string]string{"ValidateService": "exit 1"}}))
	mustStatus(t, d, api.StatusFailed)
	if a.destFile("v") != "2" || len(d.Rungs) != 0 || !strings.Contains(d.Error, "automatic rollback is off") {
		t.Errorf("with automatic off the failed revision stays: v=%q rungs=%v err=%q", a.destFile("v"), d.Rungs, d.Error)
	}
}

func TestHungHookIsKilledAtItsTimeoutAndRolledBack(t *testing.T) {
	a := newAgent(t, nil)
	mustStatus(t, a.deploy(a.bundle("v1", revision.Revision{Files: map[string]revision.File{"v": {Content: "1"}}})), api.StatusSucceeded)
	start := time.Now()
	d := a.deploy(a.bundle("v2", revision.Revision{Files: map[string]revision.File{"v": {Content: "2"}}, HookTimeout: 1,
		Hooks: map[string]string{"ApplicationStart": "trap '' TERM; sleep 300"}}))
	mustStatus(t, d, api.StatusRolledBack)
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("a 1 s hook timeout took %s", took)
	}
	if !strings.Contains(d.Error, "ScriptTimedOut") {
		t.Errorf("error: %q", d.Error)
	}
	if a.destFile("v") != "1" {
		t.Errorf("v = %q", a.destFile("v"))
	}
}

// CodeDeploy runs every event of every deployment, and operators redeploy
// the current revision to restart services or re-run hooks: an explicit
// redeploy (or an inbox drop) runs in full (issue 14.3). Only a channel
// re-reading the move it already applied stays a no-op.
func TestRedeployOfTheCurrentRevisionRunsInFull(t *testing.T) {
	a := newAgent(t, nil)
	p := a.bundle("v1", revision.Revision{Files: map[string]revision.File{"v": {Content: "1"}}, Hooks: recordHooks(a.out, nil)})
	mustStatus(t, a.deploy(p), api.StatusSucceeded)
	for _, trigger := range []string{"api", "inbox"} {
		os.Remove(filepath.Join(a.out, "order"))
		req := a.request(p)
		req.Trigger = trigger
		d, err := a.e.Submit(req)
		if err != nil {
			t.Fatal(err)
		}
		d = a.wait(d.ID)
		mustStatus(t, d, api.StatusSucceeded)
		if d.NoOp || a.read("order") != "ApplicationStop v1\nBeforeInstall v1\nAfterInstall v1\nApplicationStart v1\nValidateService v1\n" {
			t.Errorf("%s redeploy: noop=%v hooks ran %q", trigger, d.NoOp, a.read("order"))
		}
	}
	// A channel's move, then the same move read again (same local copy,
	// named after its sequence): the second is a no-op.
	for i, want := range []bool{false, true} {
		os.Remove(filepath.Join(a.out, "order"))
		req := a.request(p)
		req.Trigger = "channel"
		d, err := a.e.Submit(req)
		if err != nil {
			t.Fatal(err)
		}
		d = a.wait(d.ID)
		mustStatus(t, d, api.StatusSucceeded)
		if d.NoOp != want || (a.read("order") == "") != want {
			t.Errorf("channel read %d: noop=%v hooks ran %q", i, d.NoOp, a.read("order"))
		}
	}
}

func TestManualRollbackToEarlierRevision(t *testing.T) {
	a := newAgent(t, nil)
	d1 := a.deploy(a.bundle("v1", revision.Revision{Files: map[string]revision.File{"v": {Content: "1"}}}))
	d2 := a.deploy(a.bundle("v2", revision.Revision{Files: map[string]revision.File{"v": {Content: "2"}}}))
	mustStatus(t, d2, api.StatusSucceeded)
	r, err := a.e.Rollback("")
	if err != nil {
		t.Fatal(err)
	}
	r = a.wait(r.ID)
	mustStatus(t, r, api.StatusSucceeded)
	if r.Kind != api.KindRollback || r.RollbackTo != d1.ID || a.destFile("v") != "1" {
		t.Errorf("rollback: %+v v=%q", r, a.destFile("v"))
	}
	// --to by revision label.
	r2, err := a.e.Rollback("v2")
	if err != nil {
		t.Fatal(err)
	}
	mustStatus(t, a.wait(r2.ID), api.StatusSucceeded)
	if a.destFile("v") != "2" {
		t.Errorf("v = %q", a.destFile("v"))
	}
	if _, err := a.e.Rollback("v9"); err == nil {
		t.Errorf("unknown revision accepted")
	}
}

func TestOneDeploymentAtATime(t *testing.T) {
	a := newAgent(t, nil)
	// The first deployment's ApplicationStart says it started, then
	// waits on a FIFO the test opens once it has looked at the second.
	gate := filepath.Join(a.out, "gate")
	if err := syscall.Mkfifo(gate, 0o666); err != nil {
		t.Fatal(err)
	}
	started := filepath.Join(a.out, "slow-started")
	slow := a.bundle("slow", revision.Revision{Files: map[string]revision.File{"v": {Content: "slow"}},
		Hooks: map[string]string{"ApplicationStart": fmt.Sprintf("touch %s; read go < %s; echo slow >> %s", started, gate, filepath.Join(a.out, "seq"))}})
	fast := a.bundle("fast", revision.Revision{Files: map[string]revision.File{"v": {Content: "fast"}},
		Hooks: map[string]string{"ApplicationStart": "echo fast >> " + filepath.Join(a.out, "seq")}})
	d1, err := a.e.Submit(a.request(slow))
	if err != nil {
		t.Fatal(err)
	}
	d2, _ := a.e.Submit(a.request(fast))
	testutil.WaitFor(t, time.Minute, "the first deployment's ApplicationStart", func() error {
		_, err := os.Stat(started)
		return err
	})
	if q, _ := a.j.Deployment(d2.ID); q.Status != api.StatusQueued {
		t.Errorf("second deployment status %s while the first runs", q.Status)
	}
	openGate(t, gate)
	mustStatus(t, a.wait(d1.ID), api.StatusSucceeded)
	mustStatus(t, a.wait(d2.ID), api.StatusSucceeded)
	if got := a.read("seq"); got != "slow\nfast\n" {
		t.Errorf("order %q", got)
	}
}

// openGate lets a hook blocked on `read < fifo` go on: it opens the FIFO
// for writing once the hook has it open for reading (without a reader a
// non-blocking open fails with ENXIO), and writes a line.
func openGate(t *testing.T, fifo string) {
	t.Helper()
	var f *os.File
	testutil.WaitFor(t, time.Minute, "a hook reading "+fifo, func() error {
		var err error
		f, err = os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		return err
	})
	defer f.Close()
	if _, err := f.WriteString("go\n"); err != nil {
		t.Fatal(err)
	}
}

// A hostile bundle fails before anything changes: nothing outside the
// staging area is written, the installed revision is untouched.
func TestHostileBundleChangesNothing(t *testing.T) {
	a := newAgent(t, nil)
	mustStatus(t, a.deploy(a.bundle("v1", revision.Revision{Files: map[string]revision.File{"v": {Content: "1"}}})), api.StatusSucceeded)
	evil := filepath.Join(a.dir, "evil.tgz")
	victim := filepath.Join(a.dir, "victim")
	f, _ := os.Create(evil)
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	tw.WriteHeader(&tar.Header{Name: "appspec.yml", Mode: 0o644, Size: 21, Typeflag: tar.TypeReg})
	tw.Write([]byte("version: 0.0\nos: linux"))
	body := []byte("pwned")
	tw.WriteHeader(&tar.Header{Name: "../../victim", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
	tw.Write(body)
	tw.Close()
	gz.Close()
	f.Close()
	d := a.deploy(evil)
	mustStatus(t, d, api.StatusFailed)
	if !strings.Contains(d.Error, "../../victim") {
		t.Errorf("error should name the entry: %q", d.Error)
	}
	if _, err := os.Stat(victim); err == nil {
		t.Errorf("zip-slip wrote %s", victim)
	}
	if a.destFile("v") != "1" {
		t.Errorf("installed revision changed")
	}
	if d.Steps[len(d.Steps)-1].Name != "Unpack" {
		t.Errorf("failed at %v", stepNames(d))
	}
}

func TestBrokenAppspecReportsEveryProblemBeforeChanges(t *testing.T) {
	a := newAgent(t, nil)
	spec := "version: 1.0\nos: windows\nfiles:\n  - source: app\nhooks:\n  BeforeInstall:\n    - location: missing.sh\n      timeout: forever\n"
	d := a.deploy(a.bundle("bad", revision.Revision{AppSpec: spec}))
	mustStatus(t, d, api.StatusFailed)
	for _, w := range []string{"appspec.yml:1:", "appspec.yml:2:", "appspec.yml:4:", "appspec.yml:7:", "appspec.yml:8:"} {
		if !strings.Contains(d.Error, w) {
			t.Errorf("error lacks %q:\n%s", w, d.Error)
		}
	}
	if _, err := os.Stat(a.dest); err == nil {
		t.Errorf("something was installed")
	}
}

func TestUnknownAppspecKeysAreWarningsInTheLog(t *testing.T) {
	a := newAgent(t, nil)
	r := revision.Revision{Files: map[string]revision.File{"v": {Content: "1"}}, Extra: "resources: []\n"}
	d := a.deploy(a.bundle("v1", r))
	mustStatus(t, d, api.StatusSucceeded)
	if len(d.Warnings) != 1 || !strings.Contains(d.Warnings[0], `"resources"`) {
		t.Errorf("warnings: %v", d.Warnings)
	}
	b, _ := os.ReadFile(filepath.Join(a.e.LogDir(d.ID), "Validate.log"))
	if !strings.Contains(string(b), "resources") {
		t.Errorf("deployment log lacks the warning: %q", b)
	}
}

// Retention: keep_releases newest unpacked revisions stay, never the
// current or last good one; history beyond keep_history goes, with logs.
func TestRetentionOfReleasesAndHistory(t *testing.T) {
	a := newAgent(t, func(c *config.Config) { c.Retention.KeepReleases = 2; c.Retention.KeepHistory = 3 })
	var ids []string
	for i := 1; i <= 4; i++ {
		d := a.deploy(a.bundle(fmt.Sprintf("v%d", i), revision.Revision{Files: map[string]revision.File{"v": {Content: fmt.Sprint(i)}},
			Hooks: map[string]string{"AfterInstall": "echo hi"}}))
		mustStatus(t, d, api.StatusSucceeded)
		ids = append(ids, d.ID)
	}
	rels, _ := os.ReadDir(filepath.Join(a.cfg.StateDir, "releases"))
	var names []string
	for _, r := range rels {
		names = append(names, r.Name())
	}
	slices.Sort(names)
	want := []string{ids[2], ids[3]}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("releases kept %v, want %v", names, want)
	}
	// A failed deployment rolls back to v4: v4 (last good) must survive
	// even though newer releases push it out of the window.
	bad := a.deploy(a.bundle("bad", revision.Revision{Files: map[string]revision.File{"v": {Content: "bad"}}, Hooks: map[string]string{"ValidateService": "exit 1"}}))
	mustStatus(t, bad, api.StatusRolledBack)
	d5 := a.deploy(a.bundle("v5", revision.Revision{Files: map[string]revision.File{"v": {Content: "5"}}}))
	mustStatus(t, d5, api.StatusSucceeded)
	if _, err := os.Stat(filepath.Join(a.cfg.StateDir, "releases", d5.ID)); err != nil {
		t.Errorf("current release pruned")
	}
	hist, _ := a.j.Deployments(0)
	if len(hist) != 3 {
		t.Errorf("history kept %d records, want 3", len(hist))
	}
	if _, err := os.Stat(a.e.LogDir(ids[0])); !os.IsNotExist(err) {
		t.Errorf("logs of a pruned deployment left behind")
	}
}
