package engine_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/engine"
)

// codedeployAgent is a watched agent (one check: the file ok) with fake
// checkpoints, as a host of a CodeDeploy deployment group runs it.
func codedeployAgent(t *testing.T) (*agent, *fakeCheckpoints, string) {
	t.Helper()
	f := newFakeCheckpoints()
	a, ok := watchedAgent(t, time.Minute, func(c *config.Config) { c.Checkpoint.BeforeDeploy = []api.CheckpointKind{api.KindEBS} })
	a.stop()
	a.cps = f
	a.start()
	return a, f, ok
}

func cdReq(id string) api.CodeDeployRequest {
	return api.CodeDeployRequest{CodeDeploy: api.CodeDeployRef{DeploymentID: id, Application: "shop", DeploymentGroup: "web"}, Revision: "v7"}
}

func gate(t *testing.T, a *agent, id string) *api.Deployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := a.e.CodeDeployGate(ctx, cdReq(id))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func begin(t *testing.T, a *agent, id string) *api.Deployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := a.e.CodeDeployBegin(ctx, cdReq(id))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// BeforeInstall takes the checkpoint (reason codedeploy, labelled with
// CodeDeploy's id) and the record waits; ValidateService assesses health
// and ends it. Current and last good stay the agent's own.
func TestCodeDeployBeginAndGate(t *testing.T) {
	a, f, _ := codedeployAgent(t)
	d := begin(t, a, "d-CODEDEPL1")
	if d.Kind != api.KindCodeDeploy || d.Checkpoint == "" || d.Status != api.StatusRunning || d.CodeDeploy.DeploymentID != "d-CODEDEPL1" || d.Revision != "v7" {
		t.Fatalf("after BeforeInstall: %+v", d)
	}
	cp, _ := f.read(d.Checkpoint)
	if cp == nil || cp.Reason != engine.ReasonCodeDeploy || cp.Label != "d-CODEDEPL1" || cp.Deployment != d.ID {
		t.Errorf("checkpoint %+v", cp)
	}
	// A retried BeforeInstall is the same record, not a second checkpoint.
	if again := begin(t, a, "d-CODEDEPL1"); again.ID != d.ID || f.count("Create") != 1 {
		t.Errorf("a retried BeforeInstall: %s (first %s), %d checkpoints", again.ID, d.ID, f.count("Create"))
	}
	end := gate(t, a, "d-CODEDEPL1")
	if end.ID != d.ID || end.Status != api.StatusSucceeded || end.Health == nil || !end.Health.Healthy {
		t.Fatalf("after ValidateService: %+v", end)
	}
	if cur := a.current(); cur != nil {
		t.Errorf("a CodeDeploy deployment became the agent's current revision: %+v", cur)
	}
	want := []string{d.ID + " →queued", d.ID + " queued→running", d.ID + " running→succeeded"}
	a.mu.Lock()
	got := strings.Join(a.transitions, ",")
	a.mu.Unlock()
	for _, w := range want[1:] {
		if !strings.Contains(got, w) {
			t.Errorf("transitions %s: no %q", got, w)
		}
	}
}

// An unhealthy host closes the gate: the record ends failed, naming the
// checkpoint, and never climbs the ladder (CodeDeploy's rollback does).
func TestCodeDeployGateClosesWhenUnhealthy(t *testing.T) {
	a, f, ok := codedeployAgent(t)
	d := begin(t, a, "d-CODEDEPL2")
	if err := os.Remove(ok); err != nil {
		t.Fatal(err)
	}
	end := gate(t, a, "d-CODEDEPL2")
	if end.Status != api.StatusFailed || len(end.Rungs) != 0 || !strings.Contains(end.Error, "CodeDeploy fails this host's deployment") || !strings.Contains(end.Error, d.Checkpoint) {
		t.Fatalf("a closed gate: %s rungs %v: %s", end.Status, end.Rungs, end.Error)
	}
	if f.count("Restore") != 0 || f.count("CreateVolume") != 0 {
		t.Errorf("the agent restored something: %v", f.calls)
	}
}

// A new CodeDeploy deployment that begins while one waits for its gate
// supersedes it (CodeDeploy's rollback after a failed AfterInstall, say):
// the old record ends failed saying why, the new one goes on.
func TestCodeDeploySupersededByTheNext(t *testing.T) {
	a, _, _ := codedeployAgent(t)
	old := begin(t, a, "d-CODEDEPL3")
	next := begin(t, a, "d-CODEDEPL4")
	o := a.wait(old.ID)
	if o.Status != api.StatusFailed || !strings.Contains(o.Error, "d-CODEDEPL4 began here first") {
		t.Errorf("superseded record: %s: %s", o.Status, o.Error)
	}
	if end := gate(t, a, "d-CODEDEPL4"); end.ID != next.ID || end.Status != api.StatusSucceeded {
		t.Errorf("the next one: %+v", end)
	}
}

// A gate without a BeforeInstall still runs and is recorded, without a
// checkpoint, saying so.
func TestCodeDeployGateWithoutBegin(t *testing.T) {
	a, f, _ := codedeployAgent(t)
	end := gate(t, a, "d-CODEDEPL5")
	if end.Status != api.StatusSucceeded || end.Checkpoint != "" || len(end.Warnings) == 0 || f.count("Create") != 0 {
		t.Errorf("gate only: %+v", end)
	}
	if _, err := a.e.CodeDeployGate(context.Background(), cdReq("")); err == nil {
		t.Error("a gate without DEPLOYMENT_ID was taken")
	}
}

// The agent restarting while CodeDeploy runs keeps the record: recovery
// waits for the gate again, with the checkpoint it took.
func TestCodeDeploySurvivesAnAgentRestart(t *testing.T) {
	a, f, _ := codedeployAgent(t)
	a.stop()
	a.dieAt(engine.StepCodeDeploy, "", 1, engine.StepStarted)
	a.start()
	d := begin(t, a, "d-CODEDEPL6")
	a.crash()
	end := gate(t, a, "d-CODEDEPL6")
	if end.ID != d.ID || end.Status != api.StatusSucceeded || end.Checkpoint != d.Checkpoint || f.count("Create") != 1 {
		t.Errorf("after a restart: %+v (first %+v), %d checkpoints", end, d, f.count("Create"))
	}
}
