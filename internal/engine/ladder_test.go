package engine_test

import (
	"cmp"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/engine/rung"
)

// The ladder when rungs fail: each allowed rung is tried in order until
// one leaves the host healthy; when the last fails the deployment needs
// an operator, and the message names every rung that failed and why.
func TestLadderWhenRungsFail(t *testing.T) {
	cases := []struct {
		name   string
		ladder []api.RungName
		// v2Data breaks the data (a migration in AfterInstall): the
		// revision rung alone cannot mend it; v2Sys the host's
		// configuration on the root: only the root rung can.
		v2Data, v2Sys bool
		// fail injects failures into the checkpoint calls.
		fail       map[string]int
		want       api.DeploymentStatus
		wantRungs  string // name=status, in order
		wantV      string
		wantData   string
		wantInErr  []string
		reboots    bool
		pendingFor int
		// held: something the agent cannot release uses the data
		// volume; heldName: the guest holds its device name.
		held       string
		heldName   bool
		wantDataAt string // device to read the data at (default dataDevice)
		wantCalls  map[string]int
		// cold: health rounds the restored volume fails; warmup:
		// rollback.restore_warmup.
		cold   int
		warmup time.Duration
	}{
		{name: "revision rung mends the revision", ladder: []api.RungName{rung.Revision, rung.Volumes},
			want: api.StatusRolledBack, wantRungs: "revision=succeeded", wantV: "v1", wantData: "good"},
		{name: "revision rung fails, volumes rung mends the data", ladder: []api.RungName{rung.Revision, rung.Volumes}, v2Data: true,
			want: api.StatusRolledBack, wantRungs: "revision=failed volumes=succeeded", wantV: "v1", wantData: "good"},
		{name: "the only rung fails", ladder: []api.RungName{rung.Revision}, v2Data: true,
			want: api.StatusNeedsOperator, wantRungs: "revision=failed", wantV: "v1", wantData: "bad",
			wantInErr: []string{"revision rung: ", "needs an operator", "agentctl checkpoint restore"}},
		{name: "volumes rung waits for its checkpoint to complete", ladder: []api.RungName{rung.Volumes}, v2Data: true, pendingFor: 2,
			want: api.StatusRolledBack, wantRungs: "volumes=succeeded", wantV: "v2", wantData: "good"},
		// A first snapshot of a large volume takes hours on EBS: the rung
		// waits rollback.checkpoint_wait (30 minutes, on a clock that
		// jumps), changes nothing, and says what to run once it completes.
		{name: "volumes rung: the checkpoint stays pending for hours", ladder: []api.RungName{rung.Revision, rung.Volumes}, v2Data: true, pendingFor: 1 << 30,
			want: api.StatusNeedsOperator, wantRungs: "revision=failed volumes=failed", wantV: "v1", wantData: "bad",
			wantInErr: []string{"volumes rung: checkpoint ", "is not complete after waiting 30m0s (rollback.checkpoint_wait)", "is pending (0%)",
				"needs an operator", "says completed, run `agentctl checkpoint restore cp-", " --volumes`"}},
		// The old volume is held by something the agent cannot unmount
		// (a partition, LVM, a container's mount): the rung refuses
		// before stopping anything, and says so.
		{name: "volumes rung refuses a volume it cannot release, before stopping anything", ladder: []api.RungName{rung.Revision, rung.Volumes}, v2Data: true,
			held: "a filesystem on partition nvme1n1p1 is mounted at /srv", want: api.StatusNeedsOperator, wantRungs: "revision=failed volumes=failed", wantV: "v1", wantData: "bad",
			wantInErr: []string{"volumes rung: restore /dev/sdf: the agent cannot release", "partition nvme1n1p1", "nothing was stopped"},
			wantCalls: map[string]int{"CheckDetach": 1, "Unmount": 0, "CreateRestoreVolume": 0}},
		// The guest still holds /dev/sdf: the new volume goes to the next
		// free name and is mounted where the old one was.
		{name: "volumes rung attaches at another name when the guest holds the device name", ladder: []api.RungName{rung.Volumes}, v2Data: true, heldName: true,
			want: api.StatusRolledBack, wantRungs: "volumes=succeeded", wantV: "v2", wantData: "good", wantDataAt: "/dev/sdg"},
		// A restored volume reads slowly until warm: without an allowance
		// the first checks after the restore fail it; with
		// rollback.restore_warmup they are allowed to fail for a while.
		{name: "volumes rung: a cold volume fails the assessment without a warm-up", ladder: []api.RungName{rung.Volumes}, v2Data: true, cold: 3,
			want: api.StatusNeedsOperator, wantRungs: "volumes=failed", wantV: "v2", wantData: "good"},
		{name: "volumes rung: a cold volume passes within the warm-up", ladder: []api.RungName{rung.Volumes}, v2Data: true, cold: 3, warmup: 5 * time.Second,
			want: api.StatusRolledBack, wantRungs: "volumes=succeeded", wantV: "v2", wantData: "good", wantInErr: []string{}},
		// The root rung waits for the root snapshot the same way.
		{name: "root rung: the root snapshot stays pending for hours", ladder: []api.RungName{rung.Revision, rung.Root}, v2Sys: true, pendingFor: 1 << 30,
			want: api.StatusNeedsOperator, wantRungs: "revision=failed root=failed", wantV: "v1", wantData: "good",
			wantInErr: []string{"root rung: checkpoint ", "root snapshot snap-", "rollback.checkpoint_wait", " --root`"}},
		{name: "volumes rung cannot detach", ladder: []api.RungName{rung.Revision, rung.Volumes}, v2Data: true, fail: map[string]int{"Detach": 1},
			want: api.StatusNeedsOperator, wantRungs: "revision=failed volumes=failed", wantV: "v1", wantData: "bad (unmounted)",
			wantInErr: []string{"revision rung: ", "volumes rung: ", "Detach: injected failure"}},
		// The journal on the restored root predates the climb: the record
		// keeps only the root rung.
		{name: "revision and volumes fail, root mends the host", ladder: []api.RungName{rung.Revision, rung.Volumes, rung.Root}, v2Sys: true,
			reboots: true, want: api.StatusRolledBack, wantRungs: "root=succeeded", wantV: "v1", wantData: "good"},
		{name: "the volumes rung fails, the root is not allowed", ladder: []api.RungName{rung.Revision, rung.Volumes}, v2Sys: true,
			want: api.StatusNeedsOperator, wantRungs: "revision=failed volumes=failed", wantV: "v1", wantData: "good",
			wantInErr: []string{"revision rung: unhealthy", "volumes rung: unhealthy", "--volumes|--root"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			a, f := ladderAgent(t, c.ladder...)
			mustStatus(t, a.deploy(a.appRev("v1", "ok", nil)), api.StatusSucceeded)
			f.mu.Lock()
			for k, v := range c.fail {
				f.fail[k] = v
			}
			f.pendingReads = c.pendingFor
			f.coldRounds = c.cold
			a.cfg.Rollback.RestoreWarmup = c.warmup
			f.devices[dataDevice].held = c.held
			if c.heldName {
				f.heldNames[dataDevice] = true
			}
			f.mu.Unlock()
			health, extra := "broken", map[string]string(nil)
			switch {
			case c.v2Data:
				health, extra = "ok", a.breakData()
			case c.v2Sys:
				health, extra = "ok", a.breakSys()
			}
			d, err := a.e.Submit(a.request(a.appRev("v2", health, extra)))
			if err != nil {
				t.Fatal(err)
			}
			if c.reboots {
				a.reboot(f)
			}
			got := mustStatus(t, a.wait(d.ID), c.want)
			var rungs []string
			for _, g := range got.Rungs {
				rungs = append(rungs, string(g.Name)+"="+string(g.Status))
			}
			if strings.Join(rungs, " ") != c.wantRungs {
				t.Errorf("rungs %v, want %s", rungs, c.wantRungs)
			}
			if v := a.destFile("v"); v != c.wantV {
				t.Errorf("%q installed, want %s", v, c.wantV)
			}
			at := cmp.Or(c.wantDataAt, dataDevice)
			if data := f.dataContent(at); data != c.wantData {
				t.Errorf("data at %s %q, want %q", at, data, c.wantData)
			}
			for call, n := range c.wantCalls {
				if got := f.count(call); got != n {
					t.Errorf("%d calls to %s, want %d", got, call, n)
				}
			}
			for _, s := range c.wantInErr {
				if !strings.Contains(got.Error, s) {
					t.Errorf("error does not say %q: %s", s, got.Error)
				}
			}
		})
	}
}

// Operations other than a deployment, killed at each of their steps: a
// manual rollback and a volume restore start over (every stage is safe to
// repeat) and succeed; a guard killed while its command runs is assessed
// as it is; one killed before it could tell the client to run the command
// ends failed, having changed nothing.
func TestMatrixOtherKindsKilled(t *testing.T) {
	type kindCase struct {
		kind api.DeploymentKind
		step string
		at   engine.StepPoint
		want api.DeploymentStatus
	}
	var cases []kindCase
	for _, s := range []string{"ApplicationStop", engine.StepCheckpoint, "BeforeInstall", engine.StepInstall, "ValidateService", engine.StepAssess} {
		cases = append(cases, kindCase{api.KindRollback, s, engine.StepStarted, api.StatusSucceeded}, kindCase{api.KindRollback, s, engine.StepReturned, api.StatusSucceeded})
	}
	for _, s := range []string{engine.StepPlan, engine.StepCheckDetach + " " + dataDevice, "CreateVolume " + dataDevice, "Unmount " + dataDevice, "Detach " + dataDevice, "Attach " + dataDevice, "Mount " + dataDevice, engine.StepAssess} {
		cases = append(cases, kindCase{api.KindRestore, s, engine.StepStarted, api.StatusSucceeded}, kindCase{api.KindRestore, s, engine.StepReturned, api.StatusSucceeded})
	}
	cases = append(cases, kindCase{api.KindGuard, engine.StepCommand, engine.StepStarted, api.StatusSucceeded},
		kindCase{api.KindGuard, engine.StepCheckpoint, engine.StepStarted, api.StatusFailed})
	for _, c := range cases {
		p := "started"
		if c.at == engine.StepReturned {
			p = "returned"
		}
		t.Run(string(c.kind)+" "+c.step+" "+p, func(t *testing.T) {
			t.Parallel()
			a, f := ladderAgent(t, rung.Revision)
			d1 := mustStatus(t, a.deploy(a.appRev("v1", "ok", nil)), api.StatusSucceeded)
			mustStatus(t, a.deploy(a.appRev("v2", "ok", nil)), api.StatusSucceeded)
			a.stop()
			a.dieAt(c.step, "", 1, c.at)
			a.start()
			var id, wantV, wantData string
			switch c.kind {
			case api.KindRollback:
				d, err := a.e.Rollback("")
				if err != nil {
					t.Fatal(err)
				}
				id, wantV, wantData = d.ID, "v1", "good"
			case api.KindRestore:
				// The data changes after v1's checkpoint; the restore
				// brings back what it held then.
				if err := os.WriteFile(filepath.Join(a.dir, "data"), []byte("changed"), 0o644); err != nil {
					t.Fatal(err)
				}
				d, err := a.e.Restore(d1.Checkpoint, false)
				if err != nil {
					t.Fatal(err)
				}
				id, wantV, wantData = d.ID, "v2", "good"
			case api.KindGuard:
				ctx, cancel := context.WithCancel(context.Background())
				t.Cleanup(cancel)
				e := a.e
				go func() {
					if g, err := e.Guard(ctx, "apt upgrade"); err == nil {
						e.GuardDone(g.ID, 0)
					}
				}()
				wantV, wantData = "v2", "good"
			}
			a.crash()
			if id == "" {
				id = a.newestOfKind(api.KindGuard)
			}
			mustStatus(t, a.wait(id), c.want)
			if v := a.destFile("v"); v != wantV {
				t.Errorf("%q installed, want %s", v, wantV)
			}
			if data := f.dataContent(dataDevice); data != wantData {
				t.Errorf("data %q, want %q", data, wantData)
			}
			if c.kind == api.KindRestore && len(f.restoreVolumes()) != 1 {
				t.Errorf("restore volumes made: %v", f.restoreVolumes())
			}
		})
	}
}

// newestOfKind is the id of the newest operation of kind in the journal.
func (a *agent) newestOfKind(kind api.DeploymentKind) string {
	a.t.Helper()
	deps, err := a.j.Deployments(0)
	if err != nil {
		a.t.Fatal(err)
	}
	for _, d := range deps {
		if d.Kind == kind {
			return d.ID
		}
	}
	a.t.Fatalf("no %s in the journal", kind)
	return ""
}

// A step that kills the agent every time it runs (a hook doing
// `kill -9 $PPID`) would be a crash loop: recovery starts a manual
// rollback over, and the rollback runs the step again. After three deaths
// in the same step the engine fails it instead of running it again, and
// the operation ends; the step's record says why.
func TestStepThatKeepsKillingTheAgentIsFailed(t *testing.T) {
	a, _ := ladderAgent(t, rung.Revision)
	mustStatus(t, a.deploy(a.appRev("v1", "ok", nil)), api.StatusSucceeded)
	mustStatus(t, a.deploy(a.appRev("v2", "ok", nil)), api.StatusSucceeded)
	a.stop()
	a.dieAt("BeforeInstall", "", 1, engine.StepStarted)
	a.start()
	rb, err := a.e.Rollback("")
	if err != nil {
		t.Fatal(err)
	}
	for death := 1; death <= 3; death++ {
		a.die()
		if death < 3 {
			a.dieAt("BeforeInstall", "", 1, engine.StepStarted)
		} else {
			a.killAt = nil
		}
		a.start()
	}
	got := mustStatus(t, a.wait(rb.ID), api.StatusNeedsOperator)
	var bi []api.Step
	for _, s := range got.Steps {
		if s.Name == "BeforeInstall" {
			bi = append(bi, s)
		}
	}
	if len(bi) != 4 || bi[3].Interrupted || !strings.Contains(bi[3].Error, "the agent died 3 times while this step ran") {
		t.Fatalf("BeforeInstall records: %+v", bi)
	}
	if !strings.Contains(got.Error, "step kills the agent") {
		t.Errorf("error: %s", got.Error)
	}
}
