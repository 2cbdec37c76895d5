package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
)

// crashCase is one row of the crash matrix: how to get the agent into the
// step, and what the restarted agent must end with.
type crashCase struct {
	name string
	// step is the step (as the journal names it) the kill must land in.
	step string
	// arm arms a hook (event-revision) to hang, or is empty.
	arm string
	// v2Files: the size of v2 (large to be caught in Install or Unpack).
	v2Files int
	// fault is held on the proxy to keep the agent in the step.
	fault *testbed.Fault
	// fromS3 deploys v2 from S3 (for the download step).
	fromS3 bool
	// failV2 makes v2's ValidateService fail, so the kill lands in the
	// revision rollback.
	failV2 bool
	// escapes: v2's ApplicationStart first leaves a setsid sleeper (its
	// application, out of the hook's process group and session), which
	// the recovery's rollback must end (issue 17.17).
	escapes bool
	// want are the acceptable outcomes.
	want []api.DeploymentStatus
}

// The crash matrix: the daemon is SIGKILLed at every step of a
// deployment and of a revision rollback; after a restart each case ends
// in a status that matches the files on disk, the last good checkpoint
// still exists, and every snapshot in AWS is tagged as the agent's.
func TestCrashMatrixDeployAndRollback(t *testing.T) {
	hold := func(service, action string) *testbed.Fault {
		return &testbed.Fault{Service: service, Action: action, Kind: testbed.FaultLatency, Latency: 8 * time.Second, Count: 1}
	}
	cases := []crashCase{
		{name: "download", step: "Fetch", fromS3: true, fault: hold("s3", "GET object"), want: []api.DeploymentStatus{api.StatusSucceeded}},
		{name: "unpack", step: "Unpack", v2Files: 30000, want: []api.DeploymentStatus{api.StatusSucceeded}},
		{name: "ApplicationStop hook", step: "ApplicationStop", arm: "ApplicationStop-v1", want: []api.DeploymentStatus{api.StatusRolledBack}},
		// Killed at its checkpoint, the deployment installed nothing: it
		// ends failed (no rollback point, no deploy) with v1 started again.
		{name: "CreateSnapshots held by the proxy", step: "Checkpoint", fault: hold("ec2", "CreateSnapshots"), want: []api.DeploymentStatus{api.StatusFailed}},
		{name: "BeforeInstall hook", step: "BeforeInstall", arm: "BeforeInstall-v2", want: []api.DeploymentStatus{api.StatusRolledBack}},
		{name: "Install", step: "Install", v2Files: 20000, want: []api.DeploymentStatus{api.StatusRolledBack}},
		{name: "AfterInstall hook", step: "AfterInstall", arm: "AfterInstall-v2", want: []api.DeploymentStatus{api.StatusRolledBack}},
		{name: "ApplicationStart hook", step: "ApplicationStart", arm: "ApplicationStart-v2", want: []api.DeploymentStatus{api.StatusRolledBack}},
		{name: "ValidateService hook", step: "ValidateService", arm: "ValidateService-v2", want: []api.DeploymentStatus{api.StatusRolledBack}},
		{name: "ApplicationStart hook that left a setsid sleeper", step: "ApplicationStart", arm: "ApplicationStart-v2", escapes: true, want: []api.DeploymentStatus{api.StatusRolledBack}},
		{name: "rollback: ApplicationStop of the failed revision", step: "ApplicationStop", arm: "ApplicationStop-v2", failV2: true, want: []api.DeploymentStatus{api.StatusRolledBack}},
		{name: "rollback: BeforeInstall of the last good", step: "BeforeInstall", arm: "BeforeInstall-v1", failV2: true, want: []api.DeploymentStatus{api.StatusRolledBack}},
		{name: "rollback: Install of the last good", step: "Install", v2Files: 20000, failV2: true, want: []api.DeploymentStatus{api.StatusRolledBack}},
		{name: "rollback: AfterInstall of the last good", step: "AfterInstall", arm: "AfterInstall-v1", failV2: true, want: []api.DeploymentStatus{api.StatusRolledBack}},
		{name: "rollback: ApplicationStart of the last good", step: "ApplicationStart", arm: "ApplicationStart-v1", failV2: true, want: []api.DeploymentStatus{api.StatusRolledBack}},
		{name: "rollback: ValidateService of the last good", step: "ValidateService", arm: "ValidateService-v1", failV2: true, want: []api.DeploymentStatus{api.StatusRolledBack}},
	}
	var table []string
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			row := runCrashCase(t, c)
			table = append(table, row)
		})
	}
	t.Logf("crash matrix (deployments and revision rollbacks):\n| SIGKILL during | outcome | on disk | last good checkpoint | AWS resources tagged |\n|---|---|---|---|---|\n%s", strings.Join(table, "\n"))
}

func runCrashCase(t *testing.T, c crashCase) string {
	h := newHost(t, "retention: {keep_checkpoints: 20}\n")
	out := filepath.Join(h.dir, "out")
	os.MkdirAll(out, 0o755)
	dest := filepath.Join(h.dir, "srv", "app")
	v1files := revisionFiles("v1", 10)
	v2files := revisionFiles("v2", max(c.v2Files, 10))
	hooks2 := crashHooks(out)
	if c.failV2 {
		hooks2["ValidateService"] += "\nexit 1"
	}
	escaped := filepath.Join(out, "escaped.pid")
	if c.escapes {
		hooks2["ApplicationStart"] = fmt.Sprintf("setsid sleep 1000 < /dev/null > /dev/null 2>&1 &\necho $! > %[1]s.tmp && mv %[1]s.tmp %[1]s\n", escaped) +
			hooks2["ApplicationStart"]
	}
	v1 := h.bundle("v1", revision.Revision{Dest: dest, Files: v1files, Hooks: crashHooks(out)})
	v2 := h.bundle("v2", revision.Revision{Dest: dest, Files: v2files, Hooks: hooks2})
	h.start()
	if r := h.ctl("deploy", v1, "--wait"); r.code != 0 {
		t.Fatalf("deploy v1: %s %s", r.stdout, r.stderr)
	}
	v1id := lastDeployment(h).ID
	src := v2
	if c.fromS3 {
		bucket := fmt.Sprintf("crash-%d", time.Now().UnixNano())
		awscli(t, h.bed, nil, "s3api", "create-bucket", "--bucket", bucket)
		awscli(t, h.bed, nil, "s3api", "put-object", "--bucket", bucket, "--key", "v2.tgz", "--body", v2)
		src = "s3://" + bucket + "/v2.tgz"
	}
	if c.arm != "" {
		os.WriteFile(filepath.Join(out, "arm-"+c.arm), nil, 0o644)
	}
	if c.fault != nil {
		remove := h.bed.AWS.AddFault(*c.fault)
		defer remove()
	}
	r := h.ctl("deploy", src)
	if r.code != 0 {
		t.Fatalf("deploy v2: %s", r.stderr)
	}
	id := strings.Fields(r.stdout)[1]
	h.waitInStep(id, c, out)
	h.agent.Kill()
	killHookGroup(out)
	h.bed.AWS.ClearFaults()

	h.start()
	d := h.waitEnd(id)
	ok := false
	for _, w := range c.want {
		ok = ok || d.Status == w
	}
	if !ok {
		t.Errorf("ended %s, want one of %v: %s", d.Status, c.want, d.Error)
	}
	// The status must match the disk: the current revision's files, exactly.
	st := h.status()
	onDisk := "-"
	if st.Current != nil {
		onDisk = st.Current.Revision
	}
	diff := "no current revision"
	switch onDisk {
	case "v1":
		diff = sameTree(destTree(dest), v1files)
	case "v2":
		diff = sameTree(destTree(dest), v2files)
	}
	if wantRev := map[api.DeploymentStatus]string{api.StatusSucceeded: "v2", api.StatusRolledBack: "v1", api.StatusFailed: "v1"}[d.Status]; onDisk != wantRev {
		t.Errorf("status %s but the current revision is %s", d.Status, onDisk)
	}
	if diff != "" {
		t.Errorf("current revision %s but the files differ: %s", onDisk, diff)
	}
	interrupted := ""
	for _, s := range d.Steps {
		if strings.Contains(s.Error, "interrupted") {
			interrupted = s.Name
		}
	}
	if interrupted != c.step {
		var steps []string
		for _, s := range d.Steps {
			steps = append(steps, fmt.Sprintf("%s/%s:%s[%s](%.60s)", s.Rung, s.Name, s.Status, s.EndedAt.Sub(s.StartedAt).Round(time.Millisecond), s.Error))
		}
		t.Errorf("the journal says %q was interrupted, want %s; steps: %s", interrupted, c.step, strings.Join(steps, " "))
	}
	lastGood := h.lastGoodCheckpointExists(v1id, d)
	tagged := h.allSnapshotsTagged()
	if st.Operation != nil {
		t.Errorf("an operation is still in flight: %+v", st.Operation)
	}
	if c.escapes {
		// The crash killed the hook's group (killHookGroup), not the
		// sleeper in a session of its own: the rollback's EndProcesses did.
		if pid := h.pidOf(escaped); livePid(pid) {
			t.Errorf("v2's setsid sleeper %d survived the crash and the rollback", pid)
		}
	}
	return fmt.Sprintf("| %s | %s | %s %s | %s | %s |", c.name, d.Status, onDisk, okIf(diff == ""), okIf(lastGood), okIf(tagged))
}
