package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/push"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
)

// codedeployAgent plays AWS's CodeDeploy agent on one host for one
// deployment, as its hook executor does (aws-codedeploy-agent,
// lib/instance_agent/plugins/codedeploy/hook_executor.rb): the bundle
// unpacked as deployment-archive, the appspec's scripts of each lifecycle
// event run in order, each in its own process group with the event's
// timeout, with LIFECYCLE_EVENT, DEPLOYMENT_ID, APPLICATION_NAME,
// DEPLOYMENT_GROUP_NAME and DEPLOYMENT_GROUP_ID in its environment; the
// first script that fails fails the deployment. (The agent itself is Ruby
// that talks to the CodeDeploy service's host-command API, which moto does
// not serve: it cannot run here.)
type codedeployAgent struct {
	t       *testing.T
	h       *host
	archive string
	spec    *appspec.AppSpec
	// ran is each script run, as EVENT:LOCATION, and out its output.
	ran []string
	out map[string]string
}

// unpackBundle fetches an uploaded bundle (awscli) and unpacks it.
func unpackBundle(t *testing.T, bed *testbed.Bed, bucket, key string) (string, *appspec.AppSpec) {
	t.Helper()
	dir := t.TempDir()
	tgz := filepath.Join(dir, "bundle.tar.gz")
	awscliRaw(t, bed, "s3", "cp", "s3://"+bucket+"/"+key, tgz)
	archive := filepath.Join(dir, "deployment-archive")
	os.MkdirAll(archive, 0o755)
	if out, err := exec.Command("tar", "-xzf", tgz, "-C", archive).CombinedOutput(); err != nil {
		t.Fatalf("unpack %s: %v\n%s", key, err, out)
	}
	spec, err := appspec.Load(archive, appspec.Options{RevisionDir: archive})
	if err != nil {
		t.Fatalf("the uploaded bundle's appspec: %v", err)
	}
	return archive, spec
}

// deploy runs the lifecycle events of deployment id; it returns the first
// script that failed ("" when none did).
func (c *codedeployAgent) deploy(id string) string {
	c.t.Helper()
	for _, event := range []string{appspec.BeforeInstall, appspec.AfterInstall, appspec.ApplicationStart, appspec.ValidateService} {
		for _, s := range c.spec.Hooks[event] {
			name := event + ":" + s.Location
			c.ran = append(c.ran, name)
			ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
			cmd := exec.CommandContext(ctx, filepath.Join(c.archive, s.Location))
			cmd.Env = append(os.Environ(), "PATH="+c.h.bins.Dir+":"+os.Getenv("PATH"), "ROLLBACK_AGENT_SOCKET="+c.h.socket,
				"LIFECYCLE_EVENT="+event, "DEPLOYMENT_ID="+id, "APPLICATION_NAME=cd-inject-app", "DEPLOYMENT_GROUP_NAME=production",
				"DEPLOYMENT_GROUP_ID=8cd3bfa8-9e72-4cbe-a1e5-da4efc7efd49")
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			cancel()
			c.out[name] = out.String()
			if err != nil {
				return name
			}
		}
	}
	return ""
}

// pushCD pushes dir with --codedeploy-app and returns the CodeDeploy
// deployment id and the bundle's key.
func pushCD(t *testing.T, bed *testbed.Bed, bins testbed.Binaries, dir, version string) (string, string) {
	t.Helper()
	res := workstation(t, bed, bins, "push", dir, "--bucket", "e2e-cd-hooks", "--app", "cd-inject-app", "--version", version,
		"--codedeploy-app", "cd-inject-app", "--deployment-group", "production", "-o", "json")
	mustWork(t, res, "push "+version+" --codedeploy-app")
	var out push.Result
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil || out.CodeDeploy == nil || !out.CodeDeployHooks {
		t.Fatalf("push output %v:\n%s", err, res.stdout)
	}
	return out.CodeDeploy.DeploymentID, out.BundleKey
}

// A revision pushed with --codedeploy-app carries the checkpoint first in
// BeforeInstall and the health gate last in ValidateService, beside the
// user's own hooks (read from the uploaded bundle). Run as the CodeDeploy
// agent runs them, the hooks make the real agent record the deployment
// (kind codedeploy, CodeDeploy's id), take the checkpoint before any
// other BeforeInstall script, and gate on its health checks: a failing
// check fails ValidateService. The same bundle deployed by the agent
// itself runs them as no-ops. agentctl doctor then wants the CodeDeploy
// agent, which is not installed here.
func TestCodeDeployInjectedHooks(t *testing.T) {
	bed := peers.Get(t)
	bins := peers.Binaries(t)
	awscli(t, bed, nil, "s3api", "create-bucket", "--bucket", "e2e-cd-hooks")
	awscli(t, bed, nil, "deploy", "create-application", "--application-name", "cd-inject-app")
	awscli(t, bed, nil, "deploy", "create-deployment-group", "--application-name", "cd-inject-app", "--deployment-group-name", "production",
		"--service-role-arn", "arn:aws:iam::123456789012:role/codedeploy")
	flag := filepath.Join(t.TempDir(), "healthy")
	os.WriteFile(flag, nil, 0o644)
	check := fmt.Sprintf("    - {name: gate, command: {argv: [test, -f, %s], timeout: 5s}}", flag)
	h := newHost(t, fastHealth(check, 0))
	h.start()

	// The user's revision: its own BeforeInstall and ValidateService.
	dest := filepath.Join(h.dir, "opt", "cd-inject-app")
	src := filepath.Join(t.TempDir(), "rev")
	rev := revision.Revision{Dest: dest, Files: map[string]revision.File{"index.html": {Content: "v1\n"}},
		Hooks: map[string]string{"BeforeInstall": "echo user before-install", "ValidateService": "echo user validate"}}
	if err := rev.WriteDir(src); err != nil {
		t.Fatal(err)
	}
	cd1, key := pushCD(t, bed, bins, src, "v1")
	if b, _ := os.ReadFile(filepath.Join(src, "appspec.yml")); strings.Contains(string(b), push.InjectedDir) {
		t.Error("push changed the directory's own appspec")
	}
	archive, spec := unpackBundle(t, bed, "e2e-cd-hooks", key)
	locations := func(ev string) []string {
		var out []string
		for _, s := range spec.Hooks[ev] {
			out = append(out, s.Location)
		}
		return out
	}
	if got := locations(appspec.BeforeInstall); !slices.Equal(got, []string{push.InjectedBeforeInstall, "scripts/BeforeInstall.sh"}) {
		t.Errorf("BeforeInstall of the uploaded bundle: %v", got)
	}
	if got := locations(appspec.ValidateService); !slices.Equal(got, []string{"scripts/ValidateService.sh", push.InjectedValidateService}) {
		t.Errorf("ValidateService of the uploaded bundle: %v", got)
	}

	// CodeDeploy deployment 1, healthy.
	cda := &codedeployAgent{t: t, h: h, archive: archive, spec: spec, out: map[string]string{}}
	if failed := cda.deploy(cd1); failed != "" {
		t.Fatalf("%s failed:\n%s", failed, cda.out[failed])
	}
	if cda.ran[0] != "BeforeInstall:"+push.InjectedBeforeInstall || cda.ran[len(cda.ran)-1] != "ValidateService:"+push.InjectedValidateService {
		t.Errorf("scripts ran in the order %v", cda.ran)
	}
	if out := cda.out["BeforeInstall:"+push.InjectedBeforeInstall]; !strings.Contains(out, "taken before CodeDeploy deployment "+cd1) {
		t.Errorf("the checkpoint hook said:\n%s", out)
	}
	if out := cda.out["ValidateService:"+push.InjectedValidateService]; !strings.Contains(out, "health gate open for CodeDeploy deployment "+cd1) {
		t.Errorf("the gate said:\n%s", out)
	}
	rec := lastDeployment(h)
	if rec.Kind != api.KindCodeDeploy || rec.Status != api.StatusSucceeded || rec.CodeDeploy == nil || rec.CodeDeploy.DeploymentID != cd1 ||
		rec.CodeDeploy.DeploymentGroup != "production" || rec.Revision != "v1" || rec.Checkpoint == "" {
		t.Fatalf("the agent's record of CodeDeploy deployment %s: %+v", cd1, rec)
	}
	var list api.CheckpointList
	h.ctlJSON(&list, "checkpoint", "list")
	if len(list.Checkpoints) != 1 || list.Checkpoints[0].ID != rec.Checkpoint || list.Checkpoints[0].Reason != "codedeploy" ||
		list.Checkpoints[0].Label != cd1 || list.Checkpoints[0].Deployment != rec.ID {
		t.Errorf("checkpoints: %+v (want the one of %s, labelled %s)", list.Checkpoints, rec.ID, cd1)
	}
	if hist := h.ctl("history"); !strings.Contains(hist.stdout, "codedeploy") || !strings.Contains(hist.stdout, rec.ID) {
		t.Errorf("agentctl history:\n%s", hist.stdout)
	}

	// CodeDeploy deployment 2: the health check fails, so does the gate
	// (and with it ValidateService); the record says why, and CodeDeploy's
	// rollback is left to CodeDeploy.
	cd2, key2 := pushCD(t, bed, bins, src, "v2")
	archive2, spec2 := unpackBundle(t, bed, "e2e-cd-hooks", key2)
	os.Remove(flag)
	cda2 := &codedeployAgent{t: t, h: h, archive: archive2, spec: spec2, out: map[string]string{}}
	if failed := cda2.deploy(cd2); failed != "ValidateService:"+push.InjectedValidateService {
		t.Fatalf("with a failing check, %q failed (want the gate):\n%v", failed, cda2.out)
	}
	if out := cda2.out["ValidateService:"+push.InjectedValidateService]; !strings.Contains(out, "health gate CLOSED for CodeDeploy deployment "+cd2) {
		t.Errorf("the closed gate said:\n%s", out)
	}
	rec2 := lastDeployment(h)
	if rec2.Kind != api.KindCodeDeploy || rec2.Status != api.StatusFailed || rec2.CodeDeploy.DeploymentID != cd2 || len(rec2.Rungs) != 0 ||
		!strings.Contains(rec2.Error, "CodeDeploy fails this host's deployment") {
		t.Errorf("the record of the failed gate: %+v", rec2)
	}

	// The agent deploying the same bundle itself: the injected hooks do
	// nothing (the agent takes its own checkpoint and is its own gate).
	os.WriteFile(flag, nil, 0o644)
	tgz := filepath.Join(h.dir, "same.tar.gz")
	awscliRaw(t, bed, "s3", "cp", "s3://e2e-cd-hooks/"+key, tgz)
	if r := h.ctl("deploy", tgz, "--wait"); r.code != 0 {
		t.Fatalf("the agent deploying the CodeDeploy bundle: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	own := lastDeployment(h)
	if own.Kind != api.KindDeploy || own.Status != api.StatusSucceeded {
		t.Errorf("own deployment: %+v", own)
	}
	if logs := h.ctl("logs", own.ID, "--event", "BeforeInstall").stdout; !strings.Contains(logs, "run by rollback-agent's own deployment") {
		t.Errorf("the injected hook inside the agent's own deployment:\n%s", logs)
	}
	n := 0
	for _, d := range h.history() {
		if d.Kind == api.KindCodeDeploy {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d codedeploy records, want 2", n)
	}

	// agentctl doctor: this host takes CodeDeploy deployments, and AWS's
	// CodeDeploy agent is not installed on this machine.
	var rep api.DoctorReport
	r := h.ctl("doctor", "-o", "json", "--timeout", "60s")
	h.decode(r, &rep, "agentctl doctor -o json")
	found := false
	for _, c := range rep.Checks {
		if c.Name == "codedeploy-agent" {
			found = true
			if c.Result != api.DoctorFail || !strings.Contains(c.Detail, "not installed") || !strings.Contains(c.Detail, "recorded CodeDeploy deployments") {
				t.Errorf("doctor's codedeploy-agent line: %+v", c)
			}
		}
	}
	if !found || r.code != 1 {
		t.Errorf("agentctl doctor: exit %d, codedeploy-agent line %v", r.code, found)
	}
}
