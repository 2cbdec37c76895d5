package engine_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/clock"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/engine/rung"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
)

// The in-process crash matrix and ladder: the engine over a real journal,
// real hooks and real files, with checkpoints in memory (fakeCheckpoints),
// killed at every step of every kind of operation and rung; after the
// restart each case must end as the table says, with the files, the data
// volume and the journal agreeing. The e2e crash matrix does the same to
// the real daemon with SIGKILL, loop devices and moto; this one runs in
// seconds, without root.

const dataDevice = "/dev/sdf"

// ladderAgent is an agent with fake checkpoints over one data volume
// (the file "data" in its dir, "good" to start with) whose one health
// check passes while the installed revision's file "health" says ok, the
// data says good and the host's configuration (the file "sys", on the
// root) says ok; rollback.ladder is ladder.
func ladderAgent(t *testing.T, ladder ...api.RungName) (*agent, *fakeCheckpoints) {
	t.Helper()
	f := newFakeCheckpoints()
	a := newAgentYAML(t, func(dir string) string {
		return fmt.Sprintf(`health:
  checks:
    - {name: app, command: {argv: [sh, -c, 'c=$(cat %[4]s 2>/dev/null || echo 0); if [ "$c" -gt 0 ]; then echo $((c-1)) > %[4]s; echo cold; exit 1; fi; test "$(cat %[1]s)" = ok && test "$(cat %[2]s)" = good && test "$(cat %[3]s)" = ok'], timeout: 5s}}
  interval: 10ms
  grace: 0s
  successes_needed: 1
  failures_allowed: 1
  assess_timeout: 10s
  watch_window: 0s
`, filepath.Join(dir, "opt", "shop", "health"), filepath.Join(dir, "data"), filepath.Join(dir, "sys"), filepath.Join(dir, "data.cold"))
	}, func(c *config.Config) {
		c.Rollback.Ladder = ladder
		c.Rollback.MaxClimbsPerBoot, c.Rollback.MaxClimbsPerDay = 100, 100
		c.Rollback.RestoreWarmup = 0 // the cold-volume cases set it
	})
	// newAgentYAML started an engine without checkpoints: start again
	// with them (the first never ran anything).
	a.stop()
	a.cps = f
	// Waits that last up to hours on AWS (a pending checkpoint) pass in
	// no time: the clock jumps to each sleeper's deadline.
	a.clock = clock.NewFake(time.Now(), true)
	f.snapRoot = a.snapRoot
	f.addDataVolume(dataDevice, filepath.Join(a.dir, "data"), "good")
	if err := os.WriteFile(filepath.Join(a.dir, "sys"), []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	a.start()
	return a, f
}

// appRev is revision v: its health file says health, and hooks (which
// record their order) run the extra commands given per event.
func (a *agent) appRev(v, health string, extra map[string]string) string {
	return a.bundle(v, revision.Revision{Files: map[string]revision.File{"v": {Content: v}, "health": {Content: health}},
		Hooks: recordHooks(a.out, extra)})
}

// breakData is a v2 whose AfterInstall (a migration, run once) leaves the
// data broken: only the volumes rung mends it.
func (a *agent) breakData() map[string]string {
	return map[string]string{"AfterInstall": "printf bad > " + filepath.Join(a.dir, "data")}
}

// breakSys is a v2 whose AfterInstall changes the host's configuration
// on the root volume: neither the revision nor the volumes rung mends it.
func (a *agent) breakSys() map[string]string {
	return map[string]string{"AfterInstall": "printf broken > " + filepath.Join(a.dir, "sys")}
}

type matrixCase struct {
	step  string
	rung  api.RungName
	n     int // which run of the step (default 1)
	at    engine.StepPoint
	want  api.DeploymentStatus
	wantV string // the revision in dest/v after it ended
}

func (c matrixCase) label() string {
	p := "started"
	if c.at == engine.StepReturned {
		p = "returned"
	}
	r := ""
	if c.rung != "" {
		r = string(c.rung) + " rung, "
	}
	return fmt.Sprintf("%s%s %s", r, c.step, p)
}

// deployCrashes: v1 is good; a good v2 is deployed and the agent dies at
// the step. Before the host changed it starts over and succeeds; after,
// recovery fails the step and the revision rung brings v1 back.
func TestMatrixDeployKilledAtEveryStep(t *testing.T) {
	var cases []matrixCase
	for _, s := range []string{engine.StepFetch, engine.StepUnpack, engine.StepValidate} {
		for _, at := range []engine.StepPoint{engine.StepStarted, engine.StepReturned} {
			cases = append(cases, matrixCase{step: s, at: at, want: api.StatusSucceeded, wantV: "v2"})
		}
	}
	for _, s := range []string{"ApplicationStop", "BeforeInstall", engine.StepInstall, "AfterInstall", "ApplicationStart", "ValidateService", engine.StepAssess} {
		for _, at := range []engine.StepPoint{engine.StepStarted, engine.StepReturned} {
			cases = append(cases, matrixCase{step: s, at: at, want: api.StatusRolledBack, wantV: "v1"})
		}
	}
	// Killed at its checkpoint, the deployment installed nothing: it ends
	// failed (no rollback point, no deploy) with v1 started again.
	cases = append(cases, matrixCase{step: engine.StepCheckpoint, at: engine.StepStarted, want: api.StatusFailed, wantV: "v1"},
		matrixCase{step: engine.StepCheckpoint, at: engine.StepReturned, want: api.StatusFailed, wantV: "v1"})
	for _, c := range cases {
		t.Run(c.label(), func(t *testing.T) {
			t.Parallel()
			a, f := ladderAgent(t, rung.Revision, rung.Volumes)
			mustStatus(t, a.deploy(a.appRev("v1", "ok", nil)), api.StatusSucceeded)
			a.stop()
			a.dieAt(c.step, c.rung, max(c.n, 1), c.at)
			a.start()
			d, err := a.e.Submit(a.request(a.appRev("v2", "ok", nil)))
			if err != nil {
				t.Fatal(err)
			}
			a.crash()
			got := mustStatus(t, a.wait(d.ID), c.want)
			a.checkEnd(got, c.wantV, f)
		})
	}
}

// checkEnd checks what every case must leave: the files of wantV, the
// current pointer on a revision whose files are on disk, healthy data,
// at most one climb recorded, no step left running.
func (a *agent) checkEnd(d *api.Deployment, wantV string, f *fakeCheckpoints) {
	a.t.Helper()
	if v := a.destFile("v"); v != wantV {
		a.t.Errorf("%s ended %s with %q installed, want %s\nsteps %s", d.ID, d.Status, v, wantV, strings.Join(stepNames(d), " "))
	}
	if cur := a.current(); cur == nil || cur.Revision != a.destFile("v") {
		what := "none"
		if cur != nil {
			what = cur.ID + " of " + cur.Revision
		}
		a.t.Errorf("the current deployment is %s but %q is installed", what, a.destFile("v"))
	}
	if got := f.dataContent(dataDevice); got != "good" {
		a.t.Errorf("data %q after %s", got, d.Status)
	}
	for _, s := range d.Steps {
		if s.Status == api.StepRunning {
			a.t.Errorf("step %s still running after the deployment ended", s.Name)
		}
	}
	if v, _ := a.j.GetMeta("climbs"); strings.Count(v, `"at"`) > 1 {
		a.t.Errorf("one failed deployment counted %d climbs: %s", strings.Count(v, `"at"`), v)
	}
}

// current is the deployment the journal says is current.
func (a *agent) current() *api.Deployment {
	id, _ := a.j.Pointer("current")
	if id == "" {
		return nil
	}
	d, err := a.j.Deployment(id)
	if err != nil {
		return nil
	}
	return d
}

// A v2 that is unhealthy after install climbs the revision rung; the agent
// dies at every step of the rung; the climb resumes and brings v1 back,
// counted once against the limits.
func TestMatrixRevisionRungKilledAtEveryStep(t *testing.T) {
	var cases []matrixCase
	for _, s := range []string{"ApplicationStop", "BeforeInstall", engine.StepInstall, "AfterInstall", "ApplicationStart", "ValidateService", engine.StepAssess} {
		for _, at := range []engine.StepPoint{engine.StepStarted, engine.StepReturned} {
			cases = append(cases, matrixCase{step: s, rung: rung.Revision, at: at, want: api.StatusRolledBack, wantV: "v1"})
		}
	}
	for _, c := range cases {
		t.Run(c.label(), func(t *testing.T) {
			t.Parallel()
			a, f := ladderAgent(t, rung.Revision)
			mustStatus(t, a.deploy(a.appRev("v1", "ok", nil)), api.StatusSucceeded)
			a.stop()
			a.dieAt(c.step, c.rung, 1, c.at)
			a.start()
			d, err := a.e.Submit(a.request(a.appRev("v2", "broken", nil)))
			if err != nil {
				t.Fatal(err)
			}
			a.crash()
			got := mustStatus(t, a.wait(d.ID), c.want)
			a.checkEnd(got, c.wantV, f)
			if len(got.Rungs) == 0 || got.Rungs[len(got.Rungs)-1].Status != api.StepSucceeded {
				t.Errorf("rungs %+v", got.Rungs)
			}
		})
	}
}

// A v2 whose migration breaks the data climbs to the volumes rung; the
// agent dies at every stage of the volume swap; the rung resumes from its
// journaled stage and ends with the checkpoint's data, one new volume
// made, not two.
func TestMatrixVolumesRungKilledAtEveryStage(t *testing.T) {
	steps := []string{engine.StepPlan, engine.StepCheckDetach + " " + dataDevice, "CreateVolume " + dataDevice, "ApplicationStop", "Unmount " + dataDevice, "Detach " + dataDevice,
		"Attach " + dataDevice, "Mount " + dataDevice, "ApplicationStart", "ValidateService", engine.StepAssess}
	for _, s := range steps {
		for _, at := range []engine.StepPoint{engine.StepStarted, engine.StepReturned} {
			c := matrixCase{step: s, rung: rung.Volumes, at: at, want: api.StatusRolledBack, wantV: "v2"}
			t.Run(c.label(), func(t *testing.T) {
				t.Parallel()
				a, f := ladderAgent(t, rung.Volumes)
				mustStatus(t, a.deploy(a.appRev("v1", "ok", nil)), api.StatusSucceeded)
				a.stop()
				a.dieAt(c.step, c.rung, 1, c.at)
				a.start()
				d, err := a.e.Submit(a.request(a.appRev("v2", "ok", a.breakData())))
				if err != nil {
					t.Fatal(err)
				}
				a.crash()
				got := mustStatus(t, a.wait(d.ID), c.want)
				// The volumes rung does not change the revision: v2 stays,
				// with the data as it was before it.
				a.checkEnd(got, "v2", f)
				if vols := f.restoreVolumes(); len(vols) != 1 {
					t.Errorf("restore volumes made: %v", vols)
				}
			})
		}
	}
}

// The same with the guest holding /dev/sdf: the new volume goes to the
// next free name; killed while attaching or mounting there, the rung
// resumes at that name (AttachedAs is journaled with the stage), not at
// the held one, and makes no second volume.
func TestMatrixVolumesRungAtAnotherNameKilled(t *testing.T) {
	for _, s := range []string{"Attach " + dataDevice, "Mount " + dataDevice, engine.StepAssess} {
		for _, at := range []engine.StepPoint{engine.StepStarted, engine.StepReturned} {
			c := matrixCase{step: s, rung: rung.Volumes, at: at, want: api.StatusRolledBack, wantV: "v2"}
			t.Run(c.label(), func(t *testing.T) {
				t.Parallel()
				a, f := ladderAgent(t, rung.Volumes)
				mustStatus(t, a.deploy(a.appRev("v1", "ok", nil)), api.StatusSucceeded)
				f.mu.Lock()
				f.heldNames[dataDevice] = true
				f.mu.Unlock()
				a.stop()
				a.dieAt(c.step, c.rung, 1, c.at)
				a.start()
				d, err := a.e.Submit(a.request(a.appRev("v2", "ok", a.breakData())))
				if err != nil {
					t.Fatal(err)
				}
				a.crash()
				got := mustStatus(t, a.wait(d.ID), c.want)
				if data := f.dataContent("/dev/sdg"); data != "good" {
					t.Errorf("data at /dev/sdg %q, want good", data)
				}
				if vols := f.restoreVolumes(); len(vols) != 1 {
					t.Errorf("restore volumes made: %v", vols)
				}
				if len(got.Volumes) != 1 || got.Volumes[0].AttachedAs != "/dev/sdg" {
					t.Errorf("volume plan %+v, want attached as /dev/sdg", got.Volumes)
				}
			})
		}
	}
}

// The root rung: the root volume is replaced from the checkpoint and the
// host reboots onto it, with the journal as it was at the checkpoint.
// The agent dies at every step before the reboot, or after it while the
// rung starts and assesses the installed revision; each case ends
// rolled_back with v1 (the root's) installed, after one replacement.
func TestMatrixRootRungKilledAtEveryStep(t *testing.T) {
	type rootCase struct {
		matrixCase
		rebootsFirst bool // the agent dies after the reboot
	}
	var cases []rootCase
	for _, s := range []string{engine.StepPlan, engine.StepCheckpoint, engine.StepIntent, engine.StepReplaceRoot} {
		for _, at := range []engine.StepPoint{engine.StepStarted, engine.StepReturned} {
			cases = append(cases, rootCase{matrixCase: matrixCase{step: s, rung: rung.Root, at: at}})
		}
	}
	cases = append(cases, rootCase{matrixCase: matrixCase{step: engine.StepReboot, rung: rung.Root, at: engine.StepStarted}})
	for _, s := range []string{"ApplicationStart", "ValidateService", engine.StepAssess} {
		for _, at := range []engine.StepPoint{engine.StepStarted, engine.StepReturned} {
			cases = append(cases, rootCase{matrixCase: matrixCase{step: s, rung: rung.Root, at: at}, rebootsFirst: true})
		}
	}
	cases = append(cases, rootCase{}) // not killed: the reboot alone
	for _, c := range cases {
		name := c.label()
		if c.step == "" {
			name = "no kill"
		} else if c.rebootsFirst {
			name = "after the reboot, " + name
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a, f := ladderAgent(t, rung.Root)
			mustStatus(t, a.deploy(a.appRev("v1", "ok", nil)), api.StatusSucceeded)
			a.stop()
			if c.step != "" && !c.rebootsFirst {
				a.dieAt(c.step, c.rung, 1, c.at)
			}
			a.start()
			d, err := a.e.Submit(a.request(a.appRev("v2", "broken", nil)))
			if err != nil {
				t.Fatal(err)
			}
			if c.step != "" && !c.rebootsFirst {
				a.crash()
			}
			if c.rebootsFirst {
				a.dieAt(c.step, c.rung, 1, c.at)
			}
			a.reboot(f)
			if c.rebootsFirst {
				a.crash()
			}
			got := mustStatus(t, a.wait(d.ID), api.StatusRolledBack)
			a.checkEnd(got, "v1", f)
			if n := f.count("StartRootReplace"); n != 1 {
				t.Errorf("%d root replacements", n)
			}
			if in, _ := f.RootIntentNow(t.Context()); in != nil {
				t.Errorf("the restore intent is still on the instance: %+v", in)
			}
		})
	}
}
