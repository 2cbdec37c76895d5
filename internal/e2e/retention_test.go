package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

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

func (h *host) snapshotsOfCheckpoint(cp string) int {
	h.t.Helper()
	var out struct{ Snapshots []awsSnapshot }
	awscli(h.t, h.bed, &out, "ec2", "describe-snapshots", "--owner-ids", "self", "--filters", "Name=tag:"+checkpoint.TagCheckpoint+",Values="+cp)
	return len(out.Snapshots)
}

// Retention through the real daemon: the prune after a successful
// deployment keeps keep_checkpoints newest; a prune never deletes the
// last good deployment's checkpoint, even when newer ones push it out.
func TestRetentionKeepsTheLastGoodCheckpoint(t *testing.T) {
	h := newHost(t, "retention: {keep_checkpoints: 1}\n")
	h.start()
	dest := filepath.Join(h.dir, "srv", "app")
	rev := func(v string, hooks map[string]string) string {
		return h.bundle(v, testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: v}}, Hooks: hooks})
	}
	d1 := h.deployRecord(rev("v1", nil), 0)
	d2 := h.deployRecord(rev("v2", nil), 0)
	// The prune after v2 deletes v1's checkpoint (one is kept: v2's).
	deadline := time.Now().Add(30 * time.Second)
	for h.snapshotsOfCheckpoint(d1.Checkpoint) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint %s of v1 not pruned after v2 succeeded (keep_checkpoints: 1)", d1.Checkpoint)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// v3 fails and rolls back to v2: v2 stays the last good one, its
	// checkpoint older than v3's.
	d3 := h.deployRecord(rev("v3", map[string]string{"ValidateService": "exit 1"}), 1)
	var rep api.PruneReport
	r := h.ctl("checkpoint", "prune", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("prune: %v %s %s", err, r.stdout, r.stderr)
	}
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
	d := h.deployRecord(h.bundle("v1", testbed.Revision{Dest: filepath.Join(h.dir, "srv", "app"), Files: map[string]testbed.File{"v": {Content: "1"}}}), 0)
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
	json.Unmarshal([]byte(h.ctl("checkpoint", "show", d.Checkpoint, "-o", "json").stdout), &b)
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
		return h.bundle(v, testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: v}}})
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
