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
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
)

// A deploy takes exactly one snapshot set of the instance's volumes, with
// every tag, and does not wait for it to complete: with completion held
// back 20 s the deployment has succeeded while status still shows the
// checkpoint pending; later it shows it completed.
func TestDeployCheckpointIsTakenButNotWaitedFor(t *testing.T) {
	h := newHost(t, "")
	h.start()
	release := h.bed.HoldSnapshots(20 * time.Second)
	defer release()
	dest := filepath.Join(h.dir, "srv", "app")
	p := h.bundle("v1", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "1"}}})
	if r := h.ctl("deploy", p, "--wait"); r.code != 0 || !strings.Contains(r.stdout, "ok   Checkpoint") {
		t.Fatalf("deploy: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	list := h.history()
	cpID := list[0].Checkpoint
	st := h.status()
	if st.Checkpoints.Newest == nil || st.Checkpoints.Newest.ID != cpID || st.Checkpoints.Newest.State != api.CheckpointPending || st.Checkpoints.Pending != 1 {
		t.Fatalf("right after the deploy, status should show %s pending: %+v", cpID, st.Checkpoints)
	}
	snaps := snapshotsOf(t, h.bed, h.inst.Doc.InstanceID)
	if len(snaps) != 2 {
		t.Fatalf("%d snapshots of the instance, want one set of 2", len(snaps))
	}
	for _, s := range snaps {
		for k, v := range map[string]string{checkpoint.TagApp: "demo", checkpoint.TagCheckpoint: cpID, checkpoint.TagRevision: "v1",
			checkpoint.TagReason: "deploy", checkpoint.TagManaged: "true", checkpoint.TagDeployment: list[0].ID} {
			if s.tag(k) != v {
				t.Errorf("snapshot %s: tag %s = %q, want %q", s.SnapshotId, k, s.tag(k), v)
			}
		}
	}
	h.waitFor(60*time.Second, "the checkpoint to complete in status", func() error {
		if st := h.status(); st.Checkpoints.Newest == nil || st.Checkpoints.Newest.State != api.CheckpointCompleted || st.Checkpoints.Pending != 0 {
			return fmt.Errorf("checkpoints %+v", st.Checkpoints)
		}
		return nil
	})
	if r := h.ctl("status"); !strings.Contains(r.stdout, cpID) {
		t.Errorf("status table does not show the newest checkpoint:\n%s", r.stdout)
	}
}

// With checkpoint.required and a quota error that does not go away, the
// deploy fails cleanly before Install: the previous revision stays.
func TestPersistentQuotaErrorFailsTheDeployBeforeInstall(t *testing.T) {
	h := newHost(t, "checkpoint: {create_timeout: 3s}\n")
	h.start()
	dest := filepath.Join(h.dir, "srv", "app")
	v1 := h.bundle("v1", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "1"}}})
	v2 := h.bundle("v2", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "2"}}})
	if r := h.ctl("deploy", v1, "--wait"); r.code != 0 {
		t.Fatalf("deploy v1: %s%s", r.stdout, r.stderr)
	}
	remove := h.bed.AWS.AddFault(testbed.Fault{Service: "ec2", Action: "CreateSnapshots", Kind: testbed.FaultErrorCode, Code: "ConcurrentSnapshotLimitExceeded"})
	defer remove()
	r := h.ctl("deploy", v2, "--wait")
	if r.code != 1 {
		t.Fatalf("deploy v2: exit %d\n%s", r.code, r.stdout)
	}
	d := lastDeployment(h)
	if d.Status != api.StatusFailed || !strings.Contains(d.Error, "no rollback point, no deploy") || !strings.Contains(d.Error, "ConcurrentSnapshotLimitExceeded") {
		t.Errorf("status %s error %q", d.Status, d.Error)
	}
	for _, s := range d.Steps {
		if s.Name == "Install" && s.Rung == "" {
			t.Errorf("Install ran: %+v", s)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "v")); string(b) != "1" {
		t.Errorf("installed v = %q", b)
	}
}

func TestCheckpointCommands(t *testing.T) {
	h := newHost(t, "retention: {keep_checkpoints: 2}\n")
	h.start()
	var ids []string
	for i := range 4 {
		args := []string{"checkpoint", "create", "--label", "manual " + string(rune('a'+i)), "--wait", "-o", "json"}
		if i == 0 {
			args = append(args, "--pin", "--kind", "ebs,ami")
		}
		r := h.ctl(args...)
		var b api.CheckpointBody
		if err := json.Unmarshal([]byte(r.stdout), &b); err != nil || b.Checkpoint.State != api.CheckpointCompleted {
			t.Fatalf("checkpoint create: %d %v\n%s%s", r.code, err, r.stdout, r.stderr)
		}
		ids = append(ids, b.Checkpoint.ID)
	}
	r := h.ctl("checkpoint", "list")
	for _, id := range ids {
		if !strings.Contains(r.stdout, id) {
			t.Errorf("list lacks %s:\n%s", id, r.stdout)
		}
	}
	if r := h.ctl("checkpoint", "show", ids[0]); !strings.Contains(r.stdout, "IMAGE ami-") || !strings.Contains(r.stdout, "pinned") {
		t.Errorf("show:\n%s", r.stdout)
	}
	r = h.ctl("checkpoint", "prune", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "would delete 1: "+ids[1]) || !strings.Contains(r.stdout, "kept "+ids[0]+": pinned") {
		t.Errorf("prune --dry-run:\n%s%s", r.stdout, r.stderr)
	}
	if r := h.ctl("checkpoint", "prune"); r.code != 0 || !strings.Contains(r.stdout, "deleted 1: "+ids[1]) {
		t.Errorf("prune:\n%s%s", r.stdout, r.stderr)
	}
	if r := h.ctl("checkpoint", "delete", ids[0]); r.code != 1 || !strings.Contains(r.stderr, "pinned") {
		t.Errorf("delete pinned: %d %s", r.code, r.stderr)
	}
	h.ctl("checkpoint", "unpin", ids[0])
	if r := h.ctl("checkpoint", "delete", ids[0]); r.code != 0 {
		t.Errorf("delete after unpin: %d %s", r.code, r.stderr)
	}
	if r := h.ctl("checkpoint", "show", "cp-000000000000"); r.code != 1 || !strings.Contains(r.stderr, "no such checkpoint") {
		t.Errorf("show unknown: %d %s", r.code, r.stderr)
	}
	if r := h.ctl("checkpoint", "create", "--kind", "zfs"); r.code != 2 {
		t.Errorf("bad kind: exit %d", r.code)
	}
	// pin ID on an existing checkpoint: then it cannot be deleted.
	if r := h.ctl("checkpoint", "pin", ids[2]); r.code != 0 || !strings.Contains(r.stdout, "checkpoint "+ids[2]+" pinned=true") {
		t.Errorf("pin: %d %s%s", r.code, r.stdout, r.stderr)
	}
	if r := h.ctl("checkpoint", "delete", ids[2]); r.code != 1 || !strings.Contains(r.stderr, "pinned") {
		t.Errorf("delete after pin: %d %s", r.code, r.stderr)
	}
	for _, s := range snapshotsOf(t, h.bed, h.inst.Doc.InstanceID) {
		if s.tag(checkpoint.TagCheckpoint) == ids[2] && s.tag(checkpoint.TagPinned) != "true" {
			t.Errorf("the pin is not in AWS: snapshot of %s tagged %v", ids[2], s.Tags)
		}
	}
	left := snapshotsOf(t, h.bed, h.inst.Doc.InstanceID)
	if len(left) != 4 { // ids[2] and ids[3]: two sets of root+data
		t.Errorf("%d snapshots left, want 4", len(left))
	}
}

// Restore of data volumes with loop devices: data v1, checkpoint, data
// v2, restore: the mounted filesystem holds v1 again, the application was
// stopped around the swap, the old volume is detached, kept and tagged.
func TestRestoreDataVolume(t *testing.T) {
	h := newHostWith(t, testbed.InstanceOptions{DataPlane: true}, "")
	data := filepath.Join(h.dir, "data")
	os.MkdirAll(data, 0o755)
	if err := h.inst.Mount(h.inst.DataVolumeID, data); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.inst.Unmount(data) })
	h.start()
	out := filepath.Join(h.dir, "out")
	os.MkdirAll(out, 0o755)
	app := h.bundle("app", revision.Revision{Dest: filepath.Join(h.dir, "srv", "app"), Files: map[string]revision.File{"v": {Content: "1"}},
		Hooks: map[string]string{
			"ApplicationStop":  "echo stop >> " + filepath.Join(out, "events"),
			"ApplicationStart": "echo start >> " + filepath.Join(out, "events") + "; cat " + filepath.Join(data, "state.txt") + " >> " + filepath.Join(out, "events") + " || true",
		}})
	if r := h.ctl("deploy", app, "--wait"); r.code != 0 {
		t.Fatalf("deploy: %s%s", r.stdout, r.stderr)
	}
	os.WriteFile(filepath.Join(data, "state.txt"), []byte("data-v1\n"), 0o644)
	// What the new volume and its mount must keep: a user tag and the
	// volume's attributes in EC2, the mount options on the host.
	awscli(t, h.bed, nil, "ec2", "create-tags", "--resources", h.inst.DataVolumeID, "--tags", "Key=team,Value=payments")
	if out, err := exec.Command("mount", "-o", "remount,noatime", data).CombinedOutput(); err != nil {
		t.Fatalf("remount noatime: %v %s", err, out)
	}
	optsBefore := mountOptions(t, data)
	r := h.ctl("checkpoint", "create", "--wait", "-o", "json")
	var b api.CheckpointBody
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil {
		t.Fatalf("%v %s %s", err, r.stdout, r.stderr)
	}
	os.WriteFile(filepath.Join(data, "state.txt"), []byte("data-v2\n"), 0o644)
	os.Remove(filepath.Join(out, "events"))

	r = h.ctl("checkpoint", "restore", b.Checkpoint.ID, "--volumes", "--wait")
	if r.code != 0 {
		t.Fatalf("restore: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(data, "state.txt")); string(got) != "data-v1\n" {
		t.Errorf("after the restore %s holds %q, want data-v1", data, got)
	}
	if ev, _ := os.ReadFile(filepath.Join(out, "events")); string(ev) != "stop\nstart\ndata-v1\n" {
		t.Errorf("application hooks around the swap: %q", ev)
	}
	var vols struct {
		Volumes []struct {
			VolumeId, State string
			Tags            []struct{ Key, Value string }
			Attachments     []struct{ InstanceId, Device string }
		}
	}
	awscli(t, h.bed, &vols, "ec2", "describe-volumes", "--volume-ids", h.inst.DataVolumeID)
	old := vols.Volumes[0]
	replacedBy := ""
	for _, tg := range old.Tags {
		if tg.Key == checkpoint.TagReplacedBy {
			replacedBy = tg.Value
		}
	}
	if old.State != "available" || replacedBy == "" {
		t.Fatalf("old volume: state %s, replaced-by %q", old.State, replacedBy)
	}
	st := h.status()
	found := false
	for _, v := range st.Identity.Volumes {
		if v.DeviceName == testbed.DataDevice && v.VolumeID == replacedBy {
			found = true
		}
	}
	if !found {
		t.Errorf("status does not show %s at %s: %+v", replacedBy, testbed.DataDevice, st.Identity.Volumes)
	}
	if r := h.ctl("checkpoint", "list"); !strings.Contains(r.stdout, h.inst.DataVolumeID) || !strings.Contains(r.stdout, "undo") {
		t.Errorf("list does not show the kept volume:\n%s", r.stdout)
	}
	if got := mountOptions(t, data); got != optsBefore || !strings.Contains(got, "noatime") {
		t.Errorf("mount options after the restore %q, before %q", got, optsBefore)
	}
	var both struct {
		Volumes []struct {
			VolumeId, VolumeType, AvailabilityZone string
			Size                                   int
			Encrypted                              bool
			Tags                                   []struct{ Key, Value string }
		}
	}
	awscli(t, h.bed, &both, "ec2", "describe-volumes", "--volume-ids", h.inst.DataVolumeID, replacedBy)
	if len(both.Volumes) != 2 {
		t.Fatalf("describe-volumes: %+v", both.Volumes)
	}
	o, n := both.Volumes[0], both.Volumes[1]
	if o.VolumeId != h.inst.DataVolumeID {
		o, n = n, o
	}
	if n.VolumeType != o.VolumeType || n.Size != o.Size || n.Encrypted != o.Encrypted || n.AvailabilityZone != o.AvailabilityZone {
		t.Errorf("new volume %+v does not copy the old one %+v", n, o)
	}
	team := ""
	for _, tg := range n.Tags {
		if tg.Key == "team" {
			team = tg.Value
		}
	}
	if team != "payments" {
		t.Errorf("the new volume lost the user tag team=payments: %v", n.Tags)
	}
}

// mountOptions is the per-mount options of the mount at dir, from
// /proc/self/mountinfo.
func mountOptions(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	opts := ""
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[4] == dir {
			opts = f[5] // the last mount there wins
		}
	}
	if opts == "" {
		t.Fatalf("%s is not a mount point", dir)
	}
	return opts
}

// agentctl restore-instance, from a "workstation" (AWS credentials in the
// environment, no agent): new instance from the AMI, EIP moved, old one
// stopped, and what changed printed.
func TestRestoreInstanceCommand(t *testing.T) {
	h := newHost(t, "")
	var img struct{ ImageId string }
	awscli(t, h.bed, &img, "ec2", "create-image", "--instance-id", h.inst.Doc.InstanceID, "--name", "web-"+h.inst.Doc.InstanceID, "--no-reboot")
	var eip struct{ AllocationId string }
	awscli(t, h.bed, &eip, "ec2", "allocate-address", "--domain", "vpc")
	awscli(t, h.bed, nil, "ec2", "associate-address", "--allocation-id", eip.AllocationId, "--instance-id", h.inst.Doc.InstanceID)
	var prof struct{ InstanceProfile struct{ Arn string } }
	awscli(t, h.bed, &prof, "iam", "create-instance-profile", "--instance-profile-name", "web-"+h.inst.Doc.InstanceID)
	awscli(t, h.bed, nil, "ec2", "associate-iam-instance-profile", "--instance-id", h.inst.Doc.InstanceID, "--iam-instance-profile", "Arn="+prof.InstanceProfile.Arn)
	cmd := exec.Command(h.bins.Agentctl, "restore-instance", "--instance", h.inst.Doc.InstanceID, "--image", img.ImageId, "--eip", eip.AllocationId, "-o", "json")
	cmd.Env = h.bed.CLIEnv()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("restore-instance: %v\n%s", err, out)
	}
	var res checkpoint.ReplaceInstanceResult
	if err := json.Unmarshal(out, &res); err != nil || res.NewInstanceID == "" || res.OldInstanceID != h.inst.Doc.InstanceID {
		t.Fatalf("result %s: %v", out, err)
	}
	var addr struct{ Addresses []struct{ InstanceId string } }
	awscli(t, h.bed, &addr, "ec2", "describe-addresses", "--allocation-ids", eip.AllocationId)
	if len(addr.Addresses) != 1 || addr.Addresses[0].InstanceId != res.NewInstanceID {
		t.Errorf("EIP on %+v, want %s", addr, res.NewInstanceID)
	}
	type instance struct {
		InstanceId, InstanceType, SubnetId string
		State                              struct{ Name string }
		IamInstanceProfile                 struct{ Arn string }
		SecurityGroups                     []struct{ GroupId string }
	}
	describe := func(id string) instance {
		var desc struct {
			Reservations []struct{ Instances []instance }
		}
		awscli(t, h.bed, &desc, "ec2", "describe-instances", "--instance-ids", id)
		if len(desc.Reservations) != 1 || len(desc.Reservations[0].Instances) != 1 {
			t.Fatalf("describe-instances %s: %+v", id, desc)
		}
		return desc.Reservations[0].Instances[0]
	}
	oldI, newI := describe(h.inst.Doc.InstanceID), describe(res.NewInstanceID)
	if s := oldI.State.Name; s != "stopped" && s != "stopping" {
		t.Errorf("old instance %s", s)
	}
	if newI.IamInstanceProfile.Arn != prof.InstanceProfile.Arn || newI.InstanceType != oldI.InstanceType || newI.SubnetId != oldI.SubnetId ||
		fmt.Sprint(newI.SecurityGroups) != fmt.Sprint(oldI.SecurityGroups) {
		t.Errorf("the new instance does not keep the old one's settings:\nold %+v\nnew %+v", oldI, newI)
	}
	cmd = exec.Command(h.bins.Agentctl, "restore-instance", "--instance", h.inst.Doc.InstanceID)
	cmd.Env = h.bed.CLIEnv()
	if err := cmd.Run(); err == nil || err.(*exec.ExitError).ExitCode() != 2 {
		t.Errorf("missing --image: %v", err)
	}
}
