package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
)

// Retention through the real daemon: the prune after a successful
// deployment keeps keep_checkpoints newest; a prune never deletes the
// last good deployment's checkpoint, even when newer ones push it out.
func TestRetentionKeepsTheLastGoodCheckpoint(t *testing.T) {
	h := newHost(t, "retention: {keep_checkpoints: 1}\n")
	h.start()
	dest := filepath.Join(h.dir, "srv", "app")
	rev := func(v string, hooks map[string]string) string {
		return h.bundle(v, revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: v}}, Hooks: hooks})
	}
	d1 := h.deployRecord(rev("v1", nil), 0)
	d2 := h.deployRecord(rev("v2", nil), 0)
	// The prune after v2 deletes v1's checkpoint (one is kept: v2's).
	h.waitFor(30*time.Second, "the prune of v1's checkpoint "+d1.Checkpoint+" after v2 succeeded (keep_checkpoints: 1)", func() error {
		if n := h.snapshotsOfCheckpoint(d1.Checkpoint); n != 0 {
			return fmt.Errorf("%d snapshots left", n)
		}
		return nil
	})
	// v3 fails and rolls back to v2: v2 stays the last good one, its
	// checkpoint older than v3's.
	d3 := h.deployRecord(rev("v3", map[string]string{"ValidateService": "exit 1"}), 1)
	var rep api.PruneReport
	h.ctlJSON(&rep, "checkpoint", "prune")
	for _, id := range rep.Deleted {
		if id == d2.Checkpoint {
			t.Errorf("prune deleted %s, the last good deployment's checkpoint", id)
		}
	}
	if n := h.snapshotsOfCheckpoint(d2.Checkpoint); n != 2 {
		t.Errorf("last good checkpoint %s has %d snapshots in AWS, want 2", d2.Checkpoint, n)
	}
	if n := h.snapshotsOfCheckpoint(d3.Checkpoint); n != 2 {
		t.Errorf("newest checkpoint %s has %d snapshots in AWS, want 2", d3.Checkpoint, n)
	}
}

// With before_deploy: [ebs, ami] a deploy takes an AMI too, named
// <app>-<revision>-<short id>, with the agent's tags on the image.
func TestDeployTakesAnAMIWhenConfigured(t *testing.T) {
	h := newHost(t, "checkpoint: {before_deploy: [ebs, ami]}\n")
	h.start()
	d := h.deployRecord(h.bundle("v1", revision.Revision{Dest: filepath.Join(h.dir, "srv", "app"), Files: map[string]revision.File{"v": {Content: "1"}}}), 0)
	var out struct {
		Images []struct {
			ImageId, Name string
			Tags          []struct{ Key, Value string }
		}
	}
	awscli(t, h.bed, &out, "ec2", "describe-images", "--owners", "self", "--filters", "Name=tag:"+checkpoint.TagCheckpoint+",Values="+d.Checkpoint)
	if len(out.Images) != 1 {
		t.Fatalf("%d images for checkpoint %s, want 1", len(out.Images), d.Checkpoint)
	}
	img := out.Images[0]
	if !regexp.MustCompile(`^demo-v1-[0-9a-f]+$`).MatchString(img.Name) {
		t.Errorf("image name %q, want demo-v1-<short id>", img.Name)
	}
	tags := map[string]string{}
	for _, tg := range img.Tags {
		tags[tg.Key] = tg.Value
	}
	for k, v := range map[string]string{checkpoint.TagApp: "demo", checkpoint.TagInstance: h.inst.Doc.InstanceID, checkpoint.TagManaged: "true",
		checkpoint.TagReason: "deploy", checkpoint.TagRevision: "v1"} {
		if tags[k] != v {
			t.Errorf("image tag %s = %q, want %q (all: %v)", k, tags[k], v, tags)
		}
	}
	var b api.CheckpointBody
	h.ctlJSON(&b, "checkpoint", "show", d.Checkpoint)
	if b.Checkpoint.Image == nil || b.Checkpoint.Image.ImageID != img.ImageId || !slices.Contains(b.Checkpoint.Kinds, api.KindAMI) {
		t.Errorf("checkpoint show: %+v", b.Checkpoint)
	}
}

// `agentctl rollback --to DEPLOYMENT-ID --wait` goes back to exactly that
// deployment's revision and exits 0 once it succeeded.
func TestRollbackToADeploymentIDAndWait(t *testing.T) {
	h := newHost(t, "")
	h.start()
	dest := filepath.Join(h.dir, "srv", "app")
	rev := func(v string) string {
		return h.bundle(v, revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: v}}})
	}
	d1 := h.deployRecord(rev("v1"), 0)
	h.deployRecord(rev("v2"), 0)
	h.deployRecord(rev("v3"), 0)
	r := h.ctl("rollback", "--to", d1.ID, "--wait")
	if r.code != 0 {
		t.Fatalf("rollback --to %s --wait: exit %d\n%s%s", d1.ID, r.code, r.stdout, r.stderr)
	}
	d := lastDeployment(h)
	if d.Kind != api.KindRollback || d.Status != api.StatusSucceeded || d.RollbackTo != d1.ID {
		t.Errorf("rollback record: kind %s status %s to %q, want a succeeded rollback to %s", d.Kind, d.Status, d.RollbackTo, d1.ID)
	}
	if st := h.status(); st.Current == nil || st.Current.Revision != "v1" {
		t.Errorf("current after the rollback: %+v", st.Current)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "v")); string(b) != "v1" {
		t.Errorf("files after the rollback: v=%q", b)
	}
}
