package e2e

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/client"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// soak reports whether the long versions run (make soak).
func soak() bool { return os.Getenv("ROLLBACK_AGENT_SOAK") != "" }

// A volume restore killed at each of its AWS calls (held by the proxy)
// resumes on restart: no second volume from the snapshot, the new one
// attached and mounted, the data the checkpoint's. Unmount and mount are
// local and repeatable; the kills land where EC2 is mid-change.
func TestCrashMatrixVolumeRestore(t *testing.T) {
	var table []string
	for _, c := range []struct{ name, action, step string }{
		{"CreateVolume held by the proxy", "CreateVolume", "CreateVolume " + testbed.DataDevice},
		{"DetachVolume held by the proxy", "DetachVolume", "Detach " + testbed.DataDevice},
		{"between detach and attach (AttachVolume held)", "AttachVolume", "Attach " + testbed.DataDevice},
	} {
		t.Run(strings.ReplaceAll(c.action, " ", "_"), func(t *testing.T) {
			table = append(table, crashVolumeRestore(t, c.name, c.action, c.step))
		})
	}
	t.Logf("crash matrix (volume restore):\n| SIGKILL during | outcome | data | volumes attached | made from the snapshot |\n|---|---|---|---|---|\n%s", strings.Join(table, "\n"))
}

func crashVolumeRestore(t *testing.T, name, action, step string) string {
	h := newHostWith(t, testbed.InstanceOptions{DataPlane: true}, "")
	data := filepath.Join(h.dir, "data")
	os.MkdirAll(data, 0o755)
	if err := h.inst.Mount(h.inst.DataVolumeID, data); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.inst.Unmount(data) })
	h.start()
	os.WriteFile(filepath.Join(data, "state"), []byte("checkpointed\n"), 0o644)
	var b api.CheckpointBody
	h.ctlJSON(&b, "checkpoint", "create", "--wait")
	os.WriteFile(filepath.Join(data, "state"), []byte("changed\n"), 0o644)
	remove := h.bed.AWS.AddFault(testbed.Fault{Service: "ec2", Action: action, Kind: testbed.FaultLatency, Latency: 8 * time.Second, Count: 1})
	defer remove()
	r := h.ctl("checkpoint", "restore", b.Checkpoint.ID, "--volumes")
	if r.code != 0 {
		t.Fatalf("restore: %s", r.stderr)
	}
	id := strings.Fields(r.stdout)[1]
	h.waitInStep(id, crashCase{step: step}, "")
	h.agent.Kill()
	h.bed.AWS.ClearFaults()
	// The proxy still delivers the held call after the kill, as EC2
	// would; the restarted agent finds its effect or makes the call again.
	h.start()
	d := h.waitEnd(id)
	if d.Status != api.StatusSucceeded {
		t.Errorf("restore ended %s: %s", d.Status, d.Error)
	}
	got, _ := os.ReadFile(filepath.Join(data, "state"))
	if string(got) != "checkpointed\n" {
		t.Errorf("after the resumed restore: %q", got)
	}
	var vols struct {
		Volumes []struct {
			VolumeId, State string
			Tags            []struct{ Key, Value string }
		}
	}
	awscli(t, h.bed, &vols, "ec2", "describe-volumes", "--filters", "Name=attachment.instance-id,Values="+h.inst.Doc.InstanceID)
	if len(vols.Volumes) != 2 {
		t.Errorf("%d volumes attached after the restore, want 2 (root and the restored data)", len(vols.Volumes))
	}
	var created struct{ Volumes []struct{ VolumeId string } }
	awscli(t, h.bed, &created, "ec2", "describe-volumes", "--filters", "Name=tag:"+checkpoint.TagRestoredFrom+",Values="+b.Checkpoint.Snapshots[1].SnapshotID+","+b.Checkpoint.Snapshots[0].SnapshotID)
	if len(created.Volumes) != 1 {
		t.Errorf("%d volumes made from the snapshot, want 1 (no duplicate after the crash)", len(created.Volumes))
	}
	return fmt.Sprintf("| %s | %s | %s | %d | %d |", name, d.Status, okIf(string(got) == "checkpointed\n"), len(vols.Volumes), len(created.Volumes))
}

// AWS at its worst: 30 % throttling, 10 % 5xx, 200 ms latency and
// connection resets after the request reached moto; ten deployments in a
// row still succeed, each with exactly one snapshot set.
func TestTenDeploymentsThroughAWSFaults(t *testing.T) {
	n := 10
	if soak() {
		n = 40
	}
	h := newHost(t, fmt.Sprintf("retention: {keep_checkpoints: %d}\n", 2*n))
	h.start()
	dest := filepath.Join(h.dir, "srv", "app")
	px := h.bed.AWS
	for _, f := range []testbed.Fault{
		{Service: "ec2", Kind: testbed.FaultThrottle, Rate: 0.3},
		{Service: "ec2", Kind: testbed.FaultServerError, Rate: 0.143}, // 10 % of all, after throttling
		{Service: "ec2", Kind: testbed.FaultResetAfterUpstream, Rate: 0.1},
		{Service: "ec2", Kind: testbed.FaultLatency, Latency: 200 * time.Millisecond},
	} {
		defer px.AddFault(f)()
	}
	var cps []string
	for i := 1; i <= n; i++ {
		p := h.bundle(fmt.Sprintf("v%d", i), revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: strconv.Itoa(i)}}})
		if r := h.ctl("deploy", p, "--wait"); r.code != 0 {
			t.Fatalf("deployment %d failed under faults: %s\n%s", i, r.stdout, r.stderr)
		}
		cps = append(cps, lastDeployment(h).Checkpoint)
	}
	px.ClearFaults()
	for i, cp := range cps {
		var out struct{ Snapshots []awsSnapshot }
		awscli(t, h.bed, &out, "ec2", "describe-snapshots", "--owner-ids", "self", "--filters", "Name=tag:"+checkpoint.TagCheckpoint+",Values="+cp)
		if len(out.Snapshots) != 2 {
			t.Errorf("deployment %d: checkpoint %s has %d snapshots, want exactly one set of 2", i+1, cp, len(out.Snapshots))
		}
	}
	if got := len(snapshotsOf(t, h.bed, h.inst.Doc.InstanceID)); got != 2*n {
		t.Errorf("%d snapshots of the instance after %d deployments, want %d (no duplicates)", got, n, 2*n)
	}
	counts := px.Counts()
	t.Logf("EC2 calls seen by the proxy (faults included): CreateSnapshots %d, DescribeSnapshots %d", counts["ec2:CreateSnapshots"], counts["ec2:DescribeSnapshots"])
}

func openFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

// 50 clients hammer GET /v1/status and GET /v1/events during deployments:
// no error, no goroutine or descriptor leak, the deployments unaffected.
func TestSocketUnderLoad(t *testing.T) {
	h := newHost(t, "")
	h.start()
	dur := 8 * time.Second
	if soak() {
		dur = 60 * time.Second
	}
	// Warm up with the same work, so that pools (the SDK's connections to
	// AWS, the journal) are at their working size before the baseline.
	dest := filepath.Join(h.dir, "srv", "app")
	for i := range 3 {
		p := h.bundle(fmt.Sprintf("warm-%d", i), revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "w" + strconv.Itoa(i)}}})
		if r := h.ctl("deploy", p, "--wait"); r.code != 0 {
			t.Fatalf("warm-up deployment %d: %s%s", i, r.stdout, r.stderr)
		}
	}
	// The baseline once the agent is quiet: no operation, and no
	// checkpoint still tracked in the background.
	h.waitFor(time.Minute, "the agent to be quiet after the warm-up", func() error {
		if st := h.status(); st.Operation != nil || st.Checkpoints.Pending != 0 {
			return fmt.Errorf("operation %+v, %d checkpoints pending", st.Operation, st.Checkpoints.Pending)
		}
		return nil
	})
	g0, fd0 := h.metric("go_goroutines"), openFDs(h.agent.PID())
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var calls, failures atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client.New(h.socket)
			for ctx.Err() == nil {
				var err error
				if i%5 == 0 {
					// An event stream, held for a moment, then dropped.
					ectx, ecancel := context.WithTimeout(ctx, 300*time.Millisecond)
					err = c.Events(ectx, "", func(api.Event) bool { return true })
					ecancel()
					if ectx.Err() != nil {
						err = nil
					}
				} else {
					_, err = c.Status(ctx)
				}
				if err != nil && ctx.Err() == nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				calls.Add(1)
			}
			c.Close()
		}()
	}
	deployed := 0
	for i := 1; ctx.Err() == nil; i++ {
		p := h.bundle(fmt.Sprintf("load-v%d", i), revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: strconv.Itoa(i)}}})
		if r := h.ctl("deploy", p, "--wait"); r.code != 0 {
			t.Errorf("deployment %d under load: %s", i, r.stdout)
		}
		deployed++
	}
	wg.Wait()
	if failures.Load() > 0 {
		t.Errorf("%d of %d requests failed under load; first: %v", failures.Load(), calls.Load(), firstErr.Load())
	}
	// Connections close asynchronously: wait for the counts to come back.
	var g1 float64
	var fd1 int
	if err := testutil.Poll(5*time.Second, func() error {
		if g1, fd1 = h.metric("go_goroutines"), openFDs(h.agent.PID()); g1 > g0+8 || fd1 > fd0+4 {
			return errors.New("not back yet")
		}
		return nil
	}); err != nil {
		t.Errorf("leak: goroutines %v → %v, fds %d → %d", g0, g1, fd0, fd1)
	}
	t.Logf("%d requests by 50 clients in %s during %d deployments; goroutines %v → %v, fds %d → %d", calls.Load(), dur, deployed, g0, g1, fd0, fd1)
	if deployed == 0 {
		t.Error("no deployment finished during the load")
	}
}

// smallFS mounts a fresh ext4 filesystem of size MiB at dir (a loop device).
func smallFS(t *testing.T, dir string, mib int) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "small.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, int64(mib)<<20)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	os.MkdirAll(dir, 0o755)
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
}

func randomFiles(n, size int) map[string]revision.File {
	files := map[string]revision.File{"v": {Content: "big"}}
	for i := range n {
		b := make([]byte, size)
		rand.Read(b)
		files[fmt.Sprintf("blob%02d", i)] = revision.File{Content: string(b)}
	}
	return files
}

// A disk that fills up during Install or Unpack: the deployment fails
// cleanly and rolls back; nothing is left half-installed.
func TestDiskFullDuringInstallAndUnpack(t *testing.T) {
	h := newHost(t, "")
	dest := filepath.Join(h.dir, "srv")
	smallFS(t, dest, 8)
	h.start()
	app := filepath.Join(dest, "app")
	v1files := map[string]revision.File{"v": {Content: "1"}, "small": {Content: "x"}}
	v1 := h.bundle("v1", revision.Revision{Dest: app, Files: v1files})
	if r := h.ctl("deploy", v1, "--wait"); r.code != 0 {
		t.Fatalf("deploy v1: %s", r.stdout)
	}
	// 12 MiB of incompressible files into 8 MiB: Install hits ENOSPC.
	v2 := h.bundle("v2", revision.Revision{Dest: app, Files: randomFiles(12, 1<<20)})
	r := h.ctl("deploy", v2, "--wait")
	if r.code != 1 {
		t.Fatalf("deploy v2 onto a full disk: exit %d\n%s", r.code, r.stdout)
	}
	d := lastDeployment(h)
	if d.Status != api.StatusRolledBack || !strings.Contains(d.Error, "no space left on device") {
		t.Errorf("status %s error %q", d.Status, d.Error)
	}
	if diff := sameTree(destTree(app), v1files); diff != "" {
		t.Errorf("after the failed install the files differ from v1: %s", diff)
	}
	leftovers, _ := filepath.Glob(filepath.Join(app, "*rollback-agent-tmp"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}

	// Now the state dir is the small disk: Unpack hits ENOSPC, before
	// anything changed.
	h.agent.Stop()
	h.stateDir = filepath.Join(h.dir, "smallstate")
	smallFS(t, h.stateDir, 8)
	h.writeConfig("")
	h.start()
	// A new state dir knows nothing of what the first one installed: use
	// a fresh destination.
	app = filepath.Join(dest, "app2")
	v1 = h.bundle("v1b", revision.Revision{Dest: app, Files: v1files})
	v2 = h.bundle("v2b", revision.Revision{Dest: app, Files: randomFiles(12, 1<<20)})
	if r := h.ctl("deploy", v1, "--wait"); r.code != 0 {
		t.Fatalf("deploy v1 again: %s", r.stdout)
	}
	r = h.ctl("deploy", v2, "--wait")
	d = lastDeployment(h)
	if r.code != 1 || d.Status != api.StatusFailed || !strings.Contains(d.Error, "no space left on device") {
		t.Errorf("unpack onto a full disk: exit %d status %s error %q", r.code, d.Status, d.Error)
	}
	if diff := sameTree(destTree(app), v1files); diff != "" {
		t.Errorf("a failed unpack changed the installed files: %s", diff)
	}
	if _, err := os.Stat(filepath.Join(h.stateDir, "releases", d.ID)); err == nil {
		t.Errorf("the half-unpacked release %s was left in the state dir", d.ID)
	}
	if st := h.status(); st.Current == nil || st.Current.Revision != "v1b" {
		t.Errorf("current after the failed unpack: %+v", st.Current)
	}
}
