package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// fastHealth is a health section with short timings for tests.
func fastHealth(checks string, window time.Duration) string {
	return fmt.Sprintf(`health:
  checks:
%s
  interval: 200ms
  grace: 200ms
  successes_needed: 2
  failures_allowed: 2
  assess_timeout: 10s
  watch_window: %s
`, checks, window)
}

func (h *host) waitStatus(id string, want ...string) *api.Deployment {
	h.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		var b api.DeploymentBody
		if json.Unmarshal([]byte(h.ctl("show", id, "-o", "json").stdout), &b) == nil {
			for _, w := range want {
				if b.Deployment.Status == w {
					return &b.Deployment
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	h.t.Fatalf("deployment %s never reached %v\n%s", id, want, h.ctl("show", id).stdout)
	return nil
}

func lastDeployment(h *host) api.Deployment {
	var list api.DeploymentList
	json.Unmarshal([]byte(h.ctl("history", "-o", "json").stdout), &list)
	if len(list.Deployments) == 0 {
		h.t.Fatal("no deployments")
	}
	return list.Deployments[0]
}

// v1 healthy; v2 passes ValidateService, then its HTTP check fails inside
// the watch window: the agent rolls back by itself, v1 answers again.
func TestWatchWindowRollsBackWithoutACommand(t *testing.T) {
	port, _ := testbed.FreePort()
	h := newHost(t, fastHealth(fmt.Sprintf("    - {name: web, http: {url: \"http://127.0.0.1:%d/version.txt\", body_contains: v, timeout: 1s}}", port), 30*time.Second))
	h.start()
	app := testbed.WebApp{Dir: filepath.Join(h.dir, "srv", "web"), Run: filepath.Join(h.dir, "run"), Port: port}
	t.Cleanup(app.Stop)
	v1 := h.bundle("v1", app.Revision("v1", ""))
	v2rev := app.Revision("v2", "")
	// v2 starts fine and dies a few seconds later: after ValidateService
	// and the assessment, inside the watch window. (ApplicationStart
	// itself takes half a second more than the script: its server holds
	// the script's output, see hooks/drain.go.)
	v2rev.Hooks["ApplicationStart"] = fmt.Sprintf("(sleep 6; kill $(cat %s/web.pid)) >/dev/null 2>&1 &\n", app.Run) + v2rev.Hooks["ApplicationStart"]
	v2 := h.bundle("v2", v2rev)
	if r := h.ctl("deploy", v1, "--wait"); r.code != 0 || !strings.Contains(r.stdout, "ok   Assess") {
		t.Fatalf("deploy v1: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := h.ctl("deploy", v2, "--wait"); r.code != 0 {
		t.Fatalf("deploy v2 should succeed at first: %d\n%s", r.code, r.stdout)
	}
	if got := httpGet(app.URL()); got != "v2" {
		t.Fatalf("v2 not serving: %q", got)
	}
	id := lastDeployment(h).ID
	if st := h.status(); st.Watch == nil || st.Watch.DeploymentID != id {
		t.Errorf("status shows no watch window for %s: %+v", id, st.Watch)
	}
	d := h.waitStatus(id, api.StatusRolledBack, api.StatusNeedsOperator)
	if d.Status != api.StatusRolledBack || !strings.Contains(d.Error, "watch window") {
		t.Fatalf("ended %s: %s", d.Status, d.Error)
	}
	if got := httpGet(app.URL()); got != "v1" {
		t.Errorf("after the rollback the service answers %q, want v1", got)
	}
	st := h.status()
	if st.Current == nil || st.Current.Revision != "v1" || st.LastGood == nil || st.LastGood.Revision != "v1" {
		t.Errorf("current %+v last good %+v", st.Current, st.LastGood)
	}
	if st.Health == nil || !st.Health.Healthy || len(st.Health.Checks) != 1 {
		t.Errorf("status health %+v", st.Health)
	}
}

// The revision rung cannot help when the bad revision changed data on
// the data volume: the agent climbs to the volumes rung and restores the
// loop-device volume from the pre-deploy checkpoint.
func TestLadderClimbsToTheVolumesRung(t *testing.T) {
	h := newHostWith(t, testbed.InstanceOptions{DataPlane: true}, "")
	data := filepath.Join(h.dir, "data")
	os.MkdirAll(data, 0o755)
	if err := h.inst.Mount(h.inst.DataVolumeID, data); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.inst.Unmount(data) })
	state := filepath.Join(data, "state")
	os.WriteFile(state, []byte("good\n"), 0o644)
	h.writeConfig(fastHealth(fmt.Sprintf("    - {name: data, command: {argv: [grep, -qx, good, %s], timeout: 2s}}", state), 0))
	h.start()
	dest := filepath.Join(h.dir, "srv", "app")
	v1 := h.bundle("v1", testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: "1"}}})
	v2 := h.bundle("v2", testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: "2"}},
		Hooks: map[string]string{"AfterInstall": "echo migrated-badly > " + state}})
	if r := h.ctl("deploy", v1, "--wait"); r.code != 0 {
		t.Fatalf("deploy v1: %s%s", r.stdout, r.stderr)
	}
	r := h.ctl("deploy", v2, "--wait")
	if r.code != 1 {
		t.Fatalf("deploy v2: exit %d\n%s", r.code, r.stdout)
	}
	d := lastDeployment(h)
	if d.Status != api.StatusRolledBack || len(d.Rungs) != 2 || d.Rungs[0].Name != "revision" || d.Rungs[0].Status != api.StepFailed ||
		d.Rungs[1].Name != "volumes" || d.Rungs[1].Status != api.StepSucceeded {
		t.Fatalf("status %s rungs %+v\n%s", d.Status, d.Rungs, r.stdout)
	}
	if b, _ := os.ReadFile(state); string(b) != "good\n" {
		t.Errorf("data after the volumes rung: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "v")); string(b) != "1" {
		t.Errorf("code after the rollback: %q", b)
	}
	for _, s := range []string{"[rollback: revision] Assess", "[rollback: volumes] Detach " + testbed.DataDevice, "[rollback: volumes] Assess"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("progress lacks %q", s)
		}
	}
}

// A reboot (a new boot id) while the app is broken rolls back; once the
// climbs allowed are used up, the agent stops in needs_operator and does
// not loop.
func TestBootAssessmentRollsBackThenStopsAtTheLimit(t *testing.T) {
	h := newHost(t, "")
	bootFile := filepath.Join(h.dir, "boot_id")
	os.WriteFile(bootFile, []byte("boot-1\n"), 0o644)
	dest := filepath.Join(h.dir, "srv", "app")
	check := fmt.Sprintf("    - {name: app, command: {argv: [grep, -qx, good, %s/health], timeout: 2s}}", dest)
	h.writeConfig(fastHealth(check, 0) + "boot: {id_file: " + bootFile + "}\nrollback: {max_climbs_per_boot: 1, max_climbs_per_day: 1}\n")
	h.start()
	v1 := h.bundle("v1", testbed.Revision{Dest: dest, Files: map[string]testbed.File{"health": {Content: "good\n"}, "v": {Content: "1"}}})
	v2 := h.bundle("v2", testbed.Revision{Dest: dest, Files: map[string]testbed.File{"health": {Content: "good\n"}, "v": {Content: "2"}}})
	for _, b := range []string{v1, v2} {
		if r := h.ctl("deploy", b, "--wait"); r.code != 0 {
			t.Fatalf("deploy %s: %s%s", b, r.stdout, r.stderr)
		}
	}
	v2id := lastDeployment(h).ID
	reboot := func(id string) {
		h.agent.Stop()
		os.WriteFile(bootFile, []byte(id+"\n"), 0o644)
		h.start()
	}
	// v2 comes up broken after the reboot.
	os.WriteFile(filepath.Join(dest, "health"), []byte("bad\n"), 0o644)
	reboot("boot-2")
	d := h.waitStatus(v2id, api.StatusRolledBack, api.StatusNeedsOperator)
	if d.Status != api.StatusRolledBack || !strings.Contains(d.Error, "unhealthy after boot boot-2") {
		t.Fatalf("after the reboot: %s: %s", d.Status, d.Error)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "v")); string(b) != "1" {
		t.Errorf("not back on v1: %q", b)
	}
	// v2 again, broken again after another reboot: the one climb a day
	// is used up: needs_operator, not another rollback.
	if r := h.ctl("deploy", v2, "--wait"); r.code != 0 {
		t.Fatalf("redeploy v2: %s", r.stdout)
	}
	v2again := lastDeployment(h).ID
	os.WriteFile(filepath.Join(dest, "health"), []byte("bad\n"), 0o644)
	reboot("boot-3")
	d = h.waitStatus(v2again, api.StatusNeedsOperator, api.StatusRolledBack)
	if d.Status != api.StatusNeedsOperator || !strings.Contains(d.Error, "automatic rollbacks already in the last 24 hours") {
		t.Fatalf("at the limit: %s: %s", d.Status, d.Error)
	}
	st := h.status()
	if st.State != api.StateNeedsOperator || st.Operator == nil || !strings.Contains(st.Summary, "NEEDS OPERATOR") {
		t.Errorf("status does not say it needs an operator: %s %+v", st.State, st.Operator)
	}
	if r := h.ctl("status"); !strings.Contains(r.stdout, "NEEDS OPERATOR") || !strings.Contains(r.stdout, "Next:") {
		t.Errorf("status table:\n%s", r.stdout)
	}
	// Another reboot: nothing more happens (no loop).
	reboot("boot-4")
	time.Sleep(2 * time.Second)
	var list api.DeploymentList
	json.Unmarshal([]byte(h.ctl("history", "-o", "json").stdout), &list)
	for _, dep := range list.Deployments {
		if dep.Status == api.StatusRollingBack || dep.Status == api.StatusRunning {
			t.Errorf("still climbing after the limit: %s %s", dep.ID, dep.Status)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "v")); string(b) != "2" {
		t.Errorf("the host was changed after the limit: v=%q", b)
	}
}

// agentctl guard: a breaking change is undone through the volumes rung
// (exit 1); a harmless one is kept (exit 0).
func TestGuardedLocalChanges(t *testing.T) {
	h := newHostWith(t, testbed.InstanceOptions{DataPlane: true}, "")
	data := filepath.Join(h.dir, "data")
	os.MkdirAll(data, 0o755)
	if err := h.inst.Mount(h.inst.DataVolumeID, data); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.inst.Unmount(data) })
	state := filepath.Join(data, "state")
	os.WriteFile(state, []byte("good\n"), 0o644)
	h.writeConfig(fastHealth(fmt.Sprintf("    - {name: data, command: {argv: [grep, -qx, good, %s], timeout: 2s}}", state), 0))
	h.start()
	r := h.ctl("guard", "--", "sh", "-c", "echo upgrading; echo broken > "+state)
	if r.code != 1 || !strings.Contains(r.stdout, "upgrading") {
		t.Fatalf("guard of a breaking change: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(state); string(b) != "good\n" {
		t.Errorf("the guard did not restore the data: %q", b)
	}
	d := lastDeployment(h)
	if d.Kind != api.KindGuard || d.Status != api.StatusRolledBack || len(d.Rungs) != 1 || d.Rungs[0].Name != "volumes" {
		t.Errorf("guard record: %s %s rungs %+v", d.Kind, d.Status, d.Rungs)
	}
	if r := h.ctl("guard", "--label", "noop", "--", "true"); r.code != 0 {
		t.Errorf("guard -- true: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if d := lastDeployment(h); d.Status != api.StatusSucceeded || d.Label != "noop" || d.Checkpoint == "" {
		t.Errorf("kept change: %+v", d)
	}
	if r := h.ctl("guard", "--", "sh", "-c", "exit 7"); r.code != 7 {
		t.Errorf("a failing but harmless command: exit %d, want its own 7", r.code)
	}
}

// agentctl health runs the checks now: a real HTTP server and a CloudWatch
// alarm in moto, both ways.
func TestHealthCommand(t *testing.T) {
	port, _ := testbed.FreePort()
	alarm := "demo-5xx-" + fmt.Sprint(time.Now().UnixNano())
	h := newHost(t, fastHealth(fmt.Sprintf("    - {name: web, http: {url: \"http://127.0.0.1:%d/\", timeout: 1s}}\n    - {name: alarms, cloudwatch_alarm: {alarm_names: [%s]}}", port, alarm), 0))
	awscli(t, h.bed, nil, "cloudwatch", "put-metric-alarm", "--alarm-name", alarm, "--metric-name", "5xx", "--namespace", "demo",
		"--statistic", "Sum", "--period", "60", "--evaluation-periods", "1", "--threshold", "1", "--comparison-operator", "GreaterThanThreshold")
	awscli(t, h.bed, nil, "cloudwatch", "set-alarm-state", "--alarm-name", alarm, "--state-value", "OK", "--state-reason", "fine")
	h.start()
	r := h.ctl("health")
	if r.code != 1 || !strings.Contains(r.stdout, "web") || !strings.Contains(r.stdout, "FAIL") {
		t.Errorf("with nothing on the port: exit %d\n%s", r.code, r.stdout)
	}
	srv := testbed.WebApp{Dir: t.TempDir(), Run: t.TempDir(), Port: port}
	os.WriteFile(filepath.Join(srv.Dir, "index.html"), []byte("ok"), 0o644)
	stop := startPythonServer(t, port, srv.Dir)
	defer stop()
	if r := h.ctl("health"); r.code != 0 || !strings.Contains(r.stdout, "healthy") {
		t.Errorf("all good: exit %d\n%s", r.code, r.stdout)
	}
	awscli(t, h.bed, nil, "cloudwatch", "set-alarm-state", "--alarm-name", alarm, "--state-value", "ALARM", "--state-reason", "5xx spike")
	r = h.ctl("health", "-o", "json")
	var rep api.HealthReport
	json.Unmarshal([]byte(r.stdout), &rep)
	if r.code != 1 || rep.Healthy || len(rep.Checks) != 2 || rep.Checks[1].Healthy || !strings.Contains(rep.Checks[1].Output, "5xx spike") {
		t.Errorf("alarm in ALARM: exit %d %+v", r.code, rep)
	}
}

// startPythonServer serves dir on port until the returned stop is called.
func startPythonServer(t *testing.T, port int, dir string) func() {
	t.Helper()
	cmd := exec.Command("python3", "-m", "http.server", fmt.Sprint(port), "--bind", "127.0.0.1", "--directory", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && strings.HasPrefix(httpGet(fmt.Sprintf("http://127.0.0.1:%d/", port)), "error") {
		time.Sleep(50 * time.Millisecond)
	}
	return func() { cmd.Process.Kill(); cmd.Wait() }
}
