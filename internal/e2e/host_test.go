package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/client"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// This file holds the host helpers every e2e test uses: one agent on one
// instance, agentctl against it, awscli against the bed, and the waits.
// Every wait goes through waitFor (testutil.WaitFor) or, for a step in
// flight, the agent's event stream; every answer is read with ctlJSON or
// decode, which fail the test on output that does not decode instead of
// polling on past it.

// host is one agent "on" one instance: its files, config and process.
type host struct {
	t        *testing.T
	bed      *testbed.Bed
	inst     *testbed.Instance
	bins     testbed.Binaries
	dir      string
	stateDir string
	socket   string
	config   string
	env      []string
	byID     string
	agent    *testbed.Agent
}

// testGID is the socket group used by tests: a numeric gid that need not
// exist in /etc/group, so tests do not change the machine's users.
const testGID = 4242

// newHost creates an instance in moto and a config for an agent on it.
// extra is appended to the config (YAML at top level).
func newHost(t *testing.T, extra string) *host {
	t.Helper()
	return newHostWith(t, testbed.InstanceOptions{}, extra)
}

// newHostWith is newHost with instance options (the loop-device data plane).
func newHostWith(t *testing.T, opts testbed.InstanceOptions, extra string) *host {
	t.Helper()
	return newHostOn(t, peers.Get(t), opts, extra)
}

// newHostOn is newHostWith on a given bed.
func newHostOn(t *testing.T, bed *testbed.Bed, opts testbed.InstanceOptions, extra string) *host {
	t.Helper()
	bins := peers.Binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := bed.NewInstance(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inst.Close)
	dir := t.TempDir()
	// Other uids run agentctl in some tests: let them traverse to the socket.
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	h := &host{t: t, bed: bed, inst: inst, bins: bins, dir: dir,
		stateDir: filepath.Join(dir, "state"), socket: filepath.Join(dir, "run", "agent.sock"),
		config: filepath.Join(dir, "agent.yaml"), env: inst.Env(), byID: filepath.Join(dir, "by-id")}
	if inst.ByIDDir != "" {
		h.byID = inst.ByIDDir
	}
	h.writeConfig(extra)
	return h
}

func (h *host) writeConfig(extra string) {
	h.t.Helper()
	cfg := fmt.Sprintf(`application: demo
state_dir: %s
socket: %s
socket_group: "%d"
devices: {by_id_dir: %s}
log_level: debug
%s`, h.stateDir, h.socket, testGID, h.byID, extra)
	if err := os.WriteFile(h.config, []byte(cfg), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// start runs the agent and waits until it answers.
func (h *host) start(extraEnv ...string) {
	h.t.Helper()
	a := h.launch(extraEnv...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.WaitReady(ctx); err != nil {
		h.t.Fatal(err)
	}
}

// launch starts the agent without waiting for it to be ready: for an
// agent expected to die (a hook kills it) before a readiness check could
// see it.
func (h *host) launch(extraEnv ...string) *testbed.Agent {
	h.t.Helper()
	a, err := testbed.StartAgent(h.bins.Agent, h.config, h.socket, append(append([]string{}, h.env...), extraEnv...))
	if err != nil {
		h.t.Fatal(err)
	}
	h.agent = a
	h.t.Cleanup(func() {
		a.Stop()
		if h.t.Failed() {
			h.t.Logf("agent output:\n%s", a.Output())
		}
	})
	return a
}

// runAgentToExit runs the agent expecting it to exit by itself.
func (h *host) runAgentToExit(env []string) (int, string) {
	h.t.Helper()
	a, err := testbed.StartAgent(h.bins.Agent, h.config, h.socket, env)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code, err := a.Wait(ctx)
	if err != nil {
		a.Kill()
		h.t.Fatalf("agent did not exit: %v\n%s", err, a.Output())
	}
	return code, a.Output()
}

type result struct {
	code           int
	stdout, stderr string
}

// ctl runs agentctl against this host's agent.
func (h *host) ctl(args ...string) result {
	h.t.Helper()
	return h.ctlAs(nil, args...)
}

// ctlAs runs agentctl with the given credentials (nil: as the test).
func (h *host) ctlAs(cred *syscall.Credential, args ...string) result {
	h.t.Helper()
	cmd := exec.Command(h.bins.Agentctl, append([]string{"--socket", h.socket}, args...)...)
	cmd.Env = h.env
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = "/"
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatalf("run agentctl %v: %v", args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// ctlJSON runs agentctl args -o json, which must exit 0, and decodes
// its output into out; anything else fails the test with the output.
func (h *host) ctlJSON(out any, args ...string) result {
	h.t.Helper()
	r := h.ctl(append(slices.Clone(args), "-o", "json")...)
	if r.code != 0 {
		h.t.Fatalf("agentctl %s -o json: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	h.decode(r, out, "agentctl "+strings.Join(args, " ")+" -o json")
	return r
}

// decode decodes agentctl's JSON output r (whatever its exit code) into
// out, failing the test when it does not decode.
func (h *host) decode(r result, out any, what string) {
	h.t.Helper()
	if err := json.Unmarshal([]byte(r.stdout), out); err != nil {
		h.t.Fatalf("%s (exit %d): decode: %v\n%s%s", what, r.code, err, r.stdout, r.stderr)
	}
}

// waitFor is the one poller of these helpers: testutil.WaitFor on the
// host's test. try returns nil once the condition holds, or an error
// saying what it saw; it reads answers with ctlJSON, so a broken answer
// fails the test at once rather than being polled past.
func (h *host) waitFor(maxWait time.Duration, what string, try func() error) {
	h.t.Helper()
	testutil.WaitFor(h.t, maxWait, what, try)
}

// awscli runs the aws command against moto and decodes its JSON output.
func awscli(t *testing.T, bed *testbed.Bed, out any, args ...string) {
	t.Helper()
	cmd := exec.Command("aws", append(args, "--output", "json")...)
	cmd.Env = bed.CLIEnv()
	b, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("aws %s: decode: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
}

func httpGet(url string) string {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

func (h *host) bundle(name string, r revision.Revision) string {
	h.t.Helper()
	p := filepath.Join(h.dir, name+".tgz")
	if err := r.TarGz(p); err != nil {
		h.t.Fatal(err)
	}
	return p
}

func (h *host) status() api.Status {
	h.t.Helper()
	var st api.Status
	h.ctlJSON(&st, "status")
	return st
}

// history is agentctl history, newest first.
func (h *host) history() []api.Deployment {
	h.t.Helper()
	var list api.DeploymentList
	h.ctlJSON(&list, "history")
	return list.Deployments
}

// lastDeployment is the newest deployment in the history.
func lastDeployment(h *host) api.Deployment {
	h.t.Helper()
	list := h.history()
	if len(list) == 0 {
		h.t.Fatal("no deployments")
	}
	return list[0]
}

// deployment is the journal's record of id (agentctl show); a record
// that cannot be read fails the test.
func (h *host) deployment(id string) *api.Deployment {
	h.t.Helper()
	var b api.DeploymentBody
	h.ctlJSON(&b, "show", id)
	if b.Deployment.ID != id {
		h.t.Fatalf("agentctl show %s answered deployment %q", id, b.Deployment.ID)
	}
	return &b.Deployment
}

// waitStatus waits until deployment id has one of the statuses want.
func (h *host) waitStatus(id string, want ...api.DeploymentStatus) *api.Deployment {
	h.t.Helper()
	var d *api.Deployment
	h.waitFor(90*time.Second, fmt.Sprintf("deployment %s to be %v", id, want), func() error {
		if d = h.deployment(id); !slices.Contains(want, d.Status) {
			return fmt.Errorf("it is %s: %s", d.Status, d.Error)
		}
		return nil
	})
	return d
}

// waitEnd waits until deployment id has ended.
func (h *host) waitEnd(id string) *api.Deployment {
	h.t.Helper()
	var d *api.Deployment
	h.waitFor(90*time.Second, "deployment "+id+" to end", func() error {
		if d = h.deployment(id); !d.Status.Terminal() {
			return fmt.Errorf("it is %s", d.Status)
		}
		return nil
	})
	return d
}

// waitStep waits until deployment id is in step (for hooks: until the
// armed hook says it started, in out).
func (h *host) waitStep(id, step, out string) {
	h.t.Helper()
	if step != "Install" {
		h.waitFile(90*time.Second, filepath.Join(out, "started"))
		return
	}
	h.waitRunning(id, step, func(s api.Step, _ api.DeploymentStatus) bool { return s.Name == step })
}

// waitInStep waits until the deployment is inside the case's step: an
// armed hook says it started, or the step is running (for a case that
// fails v2: in the rollback).
func (h *host) waitInStep(id string, c crashCase, out string) {
	h.t.Helper()
	if c.arm != "" {
		h.waitStep(id, c.step, out)
		return
	}
	h.waitRunning(id, c.step, func(s api.Step, st api.DeploymentStatus) bool {
		return s.Name == c.step && (!c.failV2 || st == api.StatusRollingBack)
	})
}

// waitFile waits until path exists.
func (h *host) waitFile(maxWait time.Duration, path string) {
	h.t.Helper()
	h.waitFor(maxWait, path+" to appear", func() error {
		_, err := os.Stat(path)
		return err
	})
}

// waitRunning follows deployment id on the agent's event stream
// (GET /v1/events) until a step that match accepts is running: the step
// is journaled as running before its event is sent, and the stream
// starts with the record as it is, so a step already running is seen
// too. match gets the step and the deployment's status at that point.
// It returns at once, so the caller acts (a SIGKILL) while the step is
// still in flight, which a poll of the record could miss.
func (h *host) waitRunning(id, step string, match func(api.Step, api.DeploymentStatus) bool) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := client.New(h.socket)
	defer c.Close()
	var status api.DeploymentStatus
	var seen []string
	found := false
	err := c.Events(ctx, id, func(ev api.Event) bool {
		var s *api.Step
		switch {
		case ev.Deployment != nil:
			status = ev.Deployment.Status
			if n := len(ev.Deployment.Steps); n > 0 {
				s = &ev.Deployment.Steps[n-1]
			}
		case ev.Type == api.EventStatus:
			status = ev.Status
		case ev.Type == api.EventStep:
			s = ev.Step
		}
		if s != nil {
			seen = append(seen, fmt.Sprintf("%s/%s:%s", s.Rung, s.Name, s.Status))
			found = s.Status == api.StepRunning && match(*s, status)
		}
		return !found && !status.Terminal()
	})
	if !found {
		h.t.Fatalf("deployment %s never ran %s (status %s, %v); steps seen: %s", id, step, status, err, strings.Join(seen, " "))
	}
}

// deployRecord deploys a bundle with --wait and returns the
// deployment's record (its Checkpoint field names the rollback point).
func (h *host) deployRecord(bundle string, wantCode int) api.Deployment {
	h.t.Helper()
	if r := h.ctl("deploy", bundle, "--wait"); r.code != wantCode {
		h.t.Fatalf("deploy %s: exit %d, want %d\n%s%s", bundle, r.code, wantCode, r.stdout, r.stderr)
	}
	d := lastDeployment(h)
	if d.Checkpoint == "" {
		h.t.Fatalf("deployment %s took no checkpoint", d.ID)
	}
	return d
}

type awsSnapshot struct {
	SnapshotId, VolumeId, State string
	Tags                        []struct{ Key, Value string }
}

func (s awsSnapshot) tag(k string) string {
	for _, t := range s.Tags {
		if t.Key == k {
			return t.Value
		}
	}
	return ""
}

func snapshotsOf(t *testing.T, bed *testbed.Bed, instance string) []awsSnapshot {
	t.Helper()
	var out struct{ Snapshots []awsSnapshot }
	awscli(t, bed, &out, "ec2", "describe-snapshots", "--owner-ids", "self", "--filters", "Name=tag:"+checkpoint.TagInstance+",Values="+instance)
	return out.Snapshots
}

func (h *host) snapshotsOfCheckpoint(cp string) int {
	h.t.Helper()
	var out struct{ Snapshots []awsSnapshot }
	awscli(h.t, h.bed, &out, "ec2", "describe-snapshots", "--owner-ids", "self", "--filters", "Name=tag:"+checkpoint.TagCheckpoint+",Values="+cp)
	return len(out.Snapshots)
}

// lastGoodCheckpointExists checks, in AWS, the checkpoint of the last good
// deployment after the case (the deployment the host is on).
func (h *host) lastGoodCheckpointExists(v1id string, d *api.Deployment) bool {
	h.t.Helper()
	st := h.status()
	if st.LastGood == nil {
		h.t.Error("no last good deployment")
		return false
	}
	cp := h.deployment(st.LastGood.DeploymentID).Checkpoint
	if cp == "" {
		h.t.Errorf("last good deployment %s has no checkpoint", st.LastGood.DeploymentID)
		return false
	}
	if n := h.snapshotsOfCheckpoint(cp); n != 2 {
		h.t.Errorf("last good checkpoint %s has %d snapshots in AWS, want 2", cp, n)
		return false
	}
	return true
}

// allSnapshotsTagged checks that every snapshot of the instance's volumes
// carries the agent's tags: nothing untagged, so nothing the catalogue
// (and prune) cannot see.
func (h *host) allSnapshotsTagged() bool {
	h.t.Helper()
	var out struct{ Snapshots []awsSnapshot }
	awscli(h.t, h.bed, &out, "ec2", "describe-snapshots", "--owner-ids", "self", "--filters",
		"Name=volume-id,Values="+h.inst.RootVolumeID+","+h.inst.DataVolumeID)
	ok := true
	for _, s := range out.Snapshots {
		if s.tag(checkpoint.TagManaged) != "true" || s.tag(checkpoint.TagCheckpoint) == "" || s.tag(checkpoint.TagInstance) != h.inst.Doc.InstanceID {
			h.t.Errorf("snapshot %s is not tagged as the agent's: %+v", s.SnapshotId, s.Tags)
			ok = false
		}
	}
	return ok
}

// metric reads one value of GET /v1/metrics.
func (h *host) metric(name string) float64 {
	h.t.Helper()
	out, err := exec.Command("curl", "-s", "--unix-socket", h.socket, "http://agent"+api.PathMetrics).Output()
	if err != nil {
		h.t.Fatalf("metrics: %v", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				h.t.Fatalf("metric %s: %v", name, err)
			}
			return v
		}
	}
	h.t.Fatalf("no metric %s in\n%s", name, out)
	return 0
}

// deployJSON deploys with --wait -o json and returns the result and the
// deployment's record; output that is not a record fails the test.
func (h *host) deployJSON(args ...string) (result, api.Deployment) {
	h.t.Helper()
	r := h.ctl(append([]string{"deploy"}, append(args, "--wait", "-o", "json")...)...)
	var d api.Deployment
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		h.t.Fatalf("deploy %v: exit %d, no record: %v\n%s\n%s", args, r.code, err, r.stdout, r.stderr)
	}
	return r, d
}
