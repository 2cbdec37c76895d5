package e2e

import (
	"context"
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
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// The agent through the bed's rules that are about checkpoints, limits
// and S3 (the bed's awsRules table).

// checkpointCreate runs `agentctl checkpoint create` with args and
// returns the checkpoint it printed, failing unless it is completed.
func (h *host) checkpointCreate(args ...string) api.Checkpoint {
	h.t.Helper()
	r := h.ctl(append([]string{"checkpoint", "create", "--wait", "-o", "json"}, args...)...)
	var b api.CheckpointBody
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil || b.Checkpoint.State != api.CheckpointCompleted {
		h.t.Fatalf("checkpoint create %v: exit %d %v\n%s%s", args, r.code, err, r.stdout, r.stderr)
	}
	return b.Checkpoint
}

// A checkpoint taken while EC2 is eventually consistent, and whose
// CreateSnapshots answer is lost after EC2 made the set: the agent finds
// the set by its tag once it is visible (one set, not two), tags each
// snapshot with its device through NotFound answers, and the checkpoint
// ends completed, not failed.
func TestCheckpointUnderEventualConsistency(t *testing.T) {
	h := newHost(t, "")
	h.start()
	defer h.bed.SetRules(testbed.Rules{ConsistencyWindow: 2 * time.Second, UdevDelay: h.bed.Rules().UdevDelay})()
	defer h.bed.AWS.AddFault(testbed.Fault{Service: "ec2", Action: "CreateSnapshots", Kind: testbed.FaultResetAfterUpstream, Count: 1})()
	h.bed.AWS.ResetCounts()
	cp := h.checkpointCreate("--label", "consistency")
	if n := h.bed.AWS.Count("ec2", "CreateSnapshots"); n != 1 {
		t.Errorf("CreateSnapshots sent %d times, want once (the set made before the reset was adopted)", n)
	}
	devices := map[string]string{h.inst.RootVolumeID: testbed.RootDevice, h.inst.DataVolumeID: testbed.DataDevice}
	oneSet := func(cp api.Checkpoint) {
		t.Helper()
		testutil.WaitFor(t, 30*time.Second, "one snapshot set of "+cp.ID+", each snapshot tagged with its device", func() error {
			var mine []awsSnapshot
			for _, s := range snapshotsOf(t, h.bed, h.inst.Doc.InstanceID) {
				if s.tag(checkpoint.TagCheckpoint) == cp.ID {
					mine = append(mine, s)
				}
			}
			if len(mine) != 2 {
				return fmt.Errorf("%d snapshots of checkpoint %s, want one set of 2", len(mine), cp.ID)
			}
			for _, s := range mine {
				if s.tag(checkpoint.TagDevice) != devices[s.VolumeId] {
					return fmt.Errorf("snapshot %s of %s: device tag %q", s.SnapshotId, s.VolumeId, s.tag(checkpoint.TagDevice))
				}
			}
			return nil
		})
	}
	oneSet(cp)
	// Without the reset, the device tags are written at once, into the
	// window: EC2 answers NotFound, and the agent tags again later.
	h.bed.AWS.ResetCounts()
	cp2 := h.checkpointCreate("--label", "consistency, again")
	oneSet(cp2)
	if n := h.bed.AWS.ErrorCount("ec2", "CreateTags", "InvalidSnapshot.NotFound"); n == 0 {
		t.Error("tagging the young snapshots never met NotFound: the consistency window did not apply")
	}
	if c := h.status().Checkpoints.Newest; c == nil || c.ID != cp2.ID || c.State != api.CheckpointCompleted {
		t.Errorf("status: newest checkpoint %+v, want %s completed", c, cp2.ID)
	}
}

// A first snapshot of a large volume takes hours (an AMI up to a day):
// the rung waits rollback.checkpoint_wait, changes nothing, and ends the
// deployment needs_operator saying what is pending and what to run once
// it completes.
func TestSnapshotPendingForHoursEndsNeedsOperator(t *testing.T) {
	t.Run("the volumes rung and a snapshot", func(t *testing.T) {
		h := newHostWith(t, testbed.InstanceOptions{DataPlane: true}, "")
		data := filepath.Join(h.dir, "data")
		os.MkdirAll(data, 0o755)
		if err := h.inst.Mount(h.inst.DataVolumeID, data); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.inst.Unmount(data) })
		state := filepath.Join(data, "state")
		os.WriteFile(state, []byte("good\n"), 0o644)
		h.writeConfig("rollback: {ladder: [revision, volumes], checkpoint_wait: 2s}\n" +
			fastHealth(fmt.Sprintf("    - {name: data, command: {argv: [grep, -qx, good, %s], timeout: 2s}}", state), 0))
		h.start()
		dest := filepath.Join(h.dir, "srv", "app")
		if r := h.ctl("deploy", h.bundle("v1", testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: "1"}}}), "--wait"); r.code != 0 {
			t.Fatalf("deploy v1: %s%s", r.stdout, r.stderr)
		}
		defer h.bed.HoldSnapshots(2 * time.Hour)()
		v2 := h.bundle("v2", testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: "2"}},
			Hooks: map[string]string{"AfterInstall": "echo migrated-badly > " + state}})
		if r := h.ctl("deploy", v2, "--wait"); r.code == 0 {
			t.Fatalf("deploy v2 succeeded:\n%s", r.stdout)
		}
		d := lastDeployment(h)
		for _, s := range []string{"volumes rung: checkpoint " + d.Checkpoint + " is not complete after waiting 2s (rollback.checkpoint_wait)",
			"is pending", "this rung changed nothing", "`agentctl checkpoint restore " + d.Checkpoint + " --volumes`", "needs an operator"} {
			if !strings.Contains(d.Error, s) {
				t.Errorf("error lacks %q:\n%s", s, d.Error)
			}
		}
		if d.Status != api.StatusNeedsOperator {
			t.Errorf("v2 ended %s, want needs_operator", d.Status)
		}
		for _, s := range d.Steps {
			if s.Rung == "volumes" && s.Name != "Assess" {
				t.Errorf("the volumes rung ran %s", s.Name)
			}
		}
		if b, _ := os.ReadFile(state); string(b) != "migrated-badly\n" {
			t.Errorf("data %q: the rung changed it", b)
		}
	})
	t.Run("the root rung and an AMI", func(t *testing.T) {
		h := newHost(t, "")
		sys := filepath.Join(h.dir, "sys")
		os.WriteFile(sys, []byte("ok\n"), 0o644)
		h.writeConfig("checkpoint: {before_deploy: [ami]}\nrollback: {ladder: [revision, root], checkpoint_wait: 2s}\n" +
			fastHealth(fmt.Sprintf("    - {name: sys, command: {argv: [grep, -qx, ok, %s], timeout: 2s}}", sys), 0))
		h.start()
		dest := filepath.Join(h.dir, "srv", "app")
		if r := h.ctl("deploy", h.bundle("v1", testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: "1"}}}), "--wait"); r.code != 0 {
			t.Fatalf("deploy v1: %s%s", r.stdout, r.stderr)
		}
		defer h.bed.HoldImages(24 * time.Hour)()
		// v2 breaks the host's configuration: only the root rung mends it.
		v2 := h.bundle("v2", testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: "2"}},
			Hooks: map[string]string{"AfterInstall": "echo broken > " + sys}})
		if r := h.ctl("deploy", v2, "--wait"); r.code == 0 {
			t.Fatalf("deploy v2 succeeded:\n%s", r.stdout)
		}
		d := lastDeployment(h)
		for _, s := range []string{"root rung: checkpoint " + d.Checkpoint + " is not complete after waiting 2s", "image ami-", "is pending",
			"`agentctl checkpoint restore " + d.Checkpoint + " --root`"} {
			if !strings.Contains(d.Error, s) {
				t.Errorf("error lacks %q:\n%s", s, d.Error)
			}
		}
		if d.Status != api.StatusNeedsOperator {
			t.Errorf("v2 ended %s, want needs_operator", d.Status)
		}
	})
}

// The room check counts every pending snapshot of the volume, other
// tools' too: with five pending snapshots of the data volume made by a
// backup tool, the agent does not send CreateSnapshots (EC2 would refuse
// it) and says who holds the room.
func TestRoomCheckCountsEveryPendingSnapshot(t *testing.T) {
	h := newHost(t, "checkpoint: {create_timeout: 3s}\n")
	h.start()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	foreign, err := h.bed.ForeignSnapshots(ctx, h.inst.DataVolumeID, 5, time.Hour, map[string]string{"Name": "nightly-backup"})
	if err != nil {
		t.Fatal(err)
	}
	h.bed.AWS.ResetCounts()
	r := h.ctl("checkpoint", "create", "--wait")
	if r.code == 0 {
		t.Fatalf("checkpoint create succeeded with the data volume full:\n%s", r.stdout)
	}
	for _, s := range []string{"no room for another snapshot", h.inst.DataVolumeID + " has 5 pending of at most 5", foreign[0] + " (another tool: nightly-backup)"} {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("error lacks %q:\n%s", s, r.stderr)
		}
	}
	if n := h.bed.AWS.Count("ec2", "CreateSnapshots"); n != 0 {
		t.Errorf("CreateSnapshots sent %d times into a full volume", n)
	}
}

// A revision label of 300 characters, many of them two bytes, and a data
// volume carrying 45 tags of its own: the checkpoint's tags and
// descriptions fit EC2's limits (cut in characters), the restored volume
// keeps as many of the old volume's tags as 50 allow, and a root restore
// with that revision keeps its intent in the instance's tags across the
// reboot.
func TestLongRevisionsAndManyTags(t *testing.T) {
	h, root := rootHost(t, "")
	revision := "release-" + strings.Repeat("ünïcødé-", 36) // 296 characters, 476 bytes
	var tags []string
	for i := range 45 {
		tags = append(tags, fmt.Sprintf("Key=team-%02d,Value=owner-%02d", i, i))
	}
	awscli(t, h.bed, nil, append([]string{"ec2", "create-tags", "--resources", h.inst.DataVolumeID, "--tags"}, tags...)...)
	dest := filepath.Join(h.dir, "srv", "app")
	app := h.bundle("app", testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: "1"}}})
	if r := h.ctl("deploy", app, "--revision", revision, "--wait"); r.code != 0 {
		t.Fatalf("deploy with a long revision: %s%s", r.stdout, r.stderr)
	}
	cp := h.checkpointCreate("--label", strings.Repeat("ł", 300))
	for _, s := range snapshotsOf(t, h.bed, h.inst.Doc.InstanceID) {
		if s.tag(checkpoint.TagCheckpoint) == lastDeployment(h).Checkpoint && !strings.HasPrefix(revision, strings.TrimSuffix(s.tag(checkpoint.TagRevision), "…")) {
			t.Errorf("revision tag %q is not the revision cut on a character", s.tag(checkpoint.TagRevision))
		}
	}
	if r := h.ctl("checkpoint", "restore", cp.ID, "--volumes", "--wait"); r.code != 0 {
		t.Fatalf("volume restore with 45 tags on the old volume: %s%s", r.stdout, r.stderr)
	}
	newVol := lastDeployment(h).Volumes[0].NewVolumeID
	var vols struct {
		Volumes []struct{ Tags []struct{ Key, Value string } }
	}
	awscli(t, h.bed, &vols, "ec2", "describe-volumes", "--volume-ids", newVol)
	kept := 0
	for _, tg := range vols.Volumes[0].Tags {
		if strings.HasPrefix(tg.Key, "team-") {
			kept++
		}
	}
	if n := len(vols.Volumes[0].Tags); n != 50 || kept != 43 {
		t.Errorf("restored volume has %d tags, %d of the old volume's; want 50, 43 (the agent's 7 first)", n, kept)
	}

	reboot := playReboot(h, root)
	r := h.ctl("checkpoint", "restore", cp.ID, "--root")
	if r.code != 0 {
		t.Fatalf("restore --root: %d %s%s", r.code, r.stdout, r.stderr)
	}
	opID := strings.Fields(r.stdout)[1]
	reboot.wait()
	var intent struct{ Tags []struct{ Key, Value string } }
	awscli(t, h.bed, &intent, "ec2", "describe-tags", "--filters", "Name=resource-id,Values="+h.inst.Doc.InstanceID)
	parts := 0
	for _, tg := range intent.Tags {
		if strings.HasPrefix(tg.Key, checkpoint.TagRestoreIntent) {
			parts++
		}
	}
	if parts < 2 {
		t.Errorf("the intent with a %d-character revision is in %d tag(s), want it spread over several", len([]rune(revision)), parts)
	}
	h.start()
	if d := h.waitEnd(opID); d.Status != api.StatusSucceeded || d.Revision != revision {
		t.Errorf("root restore ended %s with revision %q: %s", d.Status, d.Revision, d.Error)
	}
}

// restore-instance twice for the same instance and image (the first new
// instance was terminated, or failed its checks): each run launches its
// own instance, where a ClientToken made of the instance and image would
// give the first launch back. The instance has EC2's 50 tags: the new
// one gets them all, without the agent's note.
func TestRestoreInstanceTwiceLaunchesTwice(t *testing.T) {
	h := newHost(t, "")
	var tags []string
	for i := range 50 {
		tags = append(tags, fmt.Sprintf("Key=k%02d,Value=v%02d", i, i))
	}
	awscli(t, h.bed, nil, append([]string{"ec2", "create-tags", "--resources", h.inst.Doc.InstanceID, "--tags"}, tags...)...)
	var img struct{ ImageId string }
	awscli(t, h.bed, &img, "ec2", "create-image", "--instance-id", h.inst.Doc.InstanceID, "--name", "twice-"+h.inst.Doc.InstanceID, "--no-reboot")
	launch := func() checkpoint.ReplaceInstanceResult {
		cmd := exec.Command(h.bins.Agentctl, "restore-instance", "--instance", h.inst.Doc.InstanceID, "--image", img.ImageId, "-o", "json")
		cmd.Env = h.bed.CLIEnv()
		out, err := cmd.Output()
		var res checkpoint.ReplaceInstanceResult
		if err != nil || json.Unmarshal(out, &res) != nil || res.NewInstanceID == "" {
			t.Fatalf("restore-instance: %v\n%s", err, out)
		}
		return res
	}
	first, second := launch(), launch()
	if first.NewInstanceID == second.NewInstanceID {
		t.Errorf("the second restore-instance got the first launch back (%s)", first.NewInstanceID)
	}
	var desc struct {
		Reservations []struct {
			Instances []struct{ Tags []struct{ Key string } }
		}
	}
	awscli(t, h.bed, &desc, "ec2", "describe-instances", "--instance-ids", second.NewInstanceID)
	if n := len(desc.Reservations[0].Instances[0].Tags); n != 50 {
		t.Errorf("the new instance has %d tags, want the old one's 50", n)
	}
}

// A channel in a bucket the role may not list, then in another region:
// a missing channel document is 403, and the agent says which grants may
// be missing or that it may not exist; once the bucket is in eu-west-1,
// S3's 301 is followed and the release deploys.
func TestChannelUnderS3Refusals(t *testing.T) {
	r := newReleaseRig(t, "e2e-s3-refusals")
	undo := r.bed.S3WithoutListBucket(r.bucket)
	w := r.waitWarning("403")
	for _, s := range []string{"s3:GetObject", "s3:ListBucket", "does not exist"} {
		if !strings.Contains(w, s) {
			t.Errorf("channel warning lacks %q: %s", s, w)
		}
	}
	undo()
	defer r.bed.S3BucketInRegion(r.bucket, "eu-west-1")()
	// The release engineer pushes in the bucket's region.
	cmd := exec.Command(r.h.bins.Agentctl, "push", r.generatedDir("v1"), "--bucket", r.bucket, "--app", "demo", "--version", "v1",
		"--sign-key", r.key, "--destination", r.app.Dir, "--channel", "prod")
	cmd.Env = append(r.bed.BaseEnv(), "AWS_REGION=eu-west-1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("push in eu-west-1: %v\n%s", err, out)
	}
	r.waitServing("v1")
}
