package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// Forged checkpoints (issue 17, item 7), through the real daemon: anyone
// who may tag in the account puts rollback-agent:* tags claiming this
// host on resources that are not its own — snapshots of another
// instance's volume (newer than every real checkpoint, one of them with
// the id of a real one), an AMI of another instance with a real
// checkpoint's id, and a detached volume of someone else's tagged as a
// volume this host's restore replaced, long ago. Retention after a
// deployment and `agentctl checkpoint prune` keep this host's real
// rollback points, delete none of the forged resources, and the
// catalogue lists none of them.
func TestForgedCheckpointsAreNeverPruned(t *testing.T) {
	h := newHost(t, "retention: {keep_checkpoints: 2, max_age: 240h}\n")
	h.start()
	dest := filepath.Join(h.dir, "srv", "app")
	rev := func(v string) string {
		return h.bundle(v, testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: v}}})
	}
	d1 := h.deployRecord(rev("v1"), 0)
	d2 := h.deployRecord(rev("v2"), 0)

	other, err := h.bed.NewInstance(t.Context(), testbed.InstanceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	claim := func(cp, kind string, created time.Time) map[string]string {
		return map[string]string{checkpoint.TagManaged: "true", checkpoint.TagApp: "demo", checkpoint.TagInstance: h.inst.Doc.InstanceID,
			checkpoint.TagCheckpoint: cp, checkpoint.TagKind: kind, checkpoint.TagCreated: created.UTC().Format(time.RFC3339Nano)}
	}
	future := time.Now().Add(time.Hour)
	var forged []string
	for i, cp := range []string{"cp-f0f0f0f0f0f0", "cp-f1f1f1f1f1f1", d2.Checkpoint} {
		var snap struct{ SnapshotId string }
		awscli(t, h.bed, &snap, "ec2", "create-snapshot", "--volume-id", other.DataVolumeID,
			"--tag-specifications", tagSpec("snapshot", claim(cp, "ebs", future.Add(time.Duration(i)*time.Minute))))
		forged = append(forged, snap.SnapshotId)
	}
	var img struct{ ImageId string }
	awscli(t, h.bed, &img, "ec2", "create-image", "--instance-id", other.Doc.InstanceID, "--name", "forged-"+other.Doc.InstanceID, "--no-reboot",
		"--tag-specifications", tagSpec("image", claim(d1.Checkpoint, "ami", future)))
	// The variant: a replaced-by tag on a volume nobody uses, old enough
	// for max_age: prune would delete it on the word of the tag.
	old := claim(d1.Checkpoint, "ebs", time.Now().Add(-30*24*time.Hour))
	old[checkpoint.TagReplacedBy] = "vol-0123456789abcdef0"
	var vol struct{ VolumeId string }
	awscli(t, h.bed, &vol, "ec2", "create-volume", "--availability-zone", other.Doc.AvailabilityZone, "--size", "1",
		"--tag-specifications", tagSpec("volume", old))

	d3 := h.deployRecord(rev("v3"), 0) // its success prunes
	if r := h.ctl("checkpoint", "prune"); r.code != 0 {
		t.Fatalf("checkpoint prune: %s%s", r.stdout, r.stderr)
	}
	list := h.ctl("checkpoint", "list").stdout
	for _, id := range append(forged, img.ImageId, vol.VolumeId, "cp-f0f0f0f0f0f0", "cp-f1f1f1f1f1f1") {
		if strings.Contains(list, id) {
			t.Errorf("checkpoint list shows the forged %s:\n%s", id, list)
		}
	}
	// Keep 2: v3's and v2's checkpoints (v3 is the last good one).
	for _, d := range []string{d2.Checkpoint, d3.Checkpoint} {
		if n := h.snapshotsOfCheckpoint(d); n < 2 {
			t.Errorf("real checkpoint %s has %d snapshots left, want its set of 2:\n%s", d, n, list)
		}
	}
	for _, id := range forged {
		var out struct{ Snapshots []struct{ SnapshotId string } }
		awscli(t, h.bed, &out, "ec2", "describe-snapshots", "--filters", "Name=snapshot-id,Values="+id)
		if len(out.Snapshots) != 1 {
			t.Errorf("forged snapshot %s was deleted", id)
		}
	}
	var imgs struct{ Images []struct{ ImageId string } }
	awscli(t, h.bed, &imgs, "ec2", "describe-images", "--filters", "Name=image-id,Values="+img.ImageId)
	if len(imgs.Images) != 1 {
		t.Errorf("the forged image %s was deregistered", img.ImageId)
	}
	var vols struct{ Volumes []struct{ VolumeId string } }
	awscli(t, h.bed, &vols, "ec2", "describe-volumes", "--filters", "Name=volume-id,Values="+vol.VolumeId)
	if len(vols.Volumes) != 1 {
		t.Errorf("the volume tagged replaced-by (not this host's) was deleted")
	}
	if out := h.agent.Output(); !strings.Contains(out, "that the agent did not make: ignored, never pruned") {
		t.Error("the agent did not say it ignored the forged resources")
	}
}

// tagSpec is awscli's --tag-specifications for one resource type, as
// JSON (tag values with colons defeat the shorthand).
func tagSpec(resourceType string, tags map[string]string) string {
	type tag struct{ Key, Value string }
	var ts []tag
	for k, v := range tags {
		ts = append(ts, tag{k, v})
	}
	b, _ := json.Marshal([]struct {
		ResourceType string
		Tags         []tag
	}{{resourceType, ts}})
	return string(b)
}
