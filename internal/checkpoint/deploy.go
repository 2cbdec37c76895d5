package checkpoint

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/clock"
)

// BeforeDeploy implements the engine's Checkpointer: the rollback point
// checkpoint.before_deploy asks for. With checkpoint.required false a
// failure is only a warning in the step.
func (m *Manager) BeforeDeploy(ctx context.Context, d *api.Deployment) (string, string, error) {
	cfg := m.o.Config()
	if len(cfg.Checkpoint.BeforeDeploy) == 0 {
		return "", "checkpoint.before_deploy is []: no checkpoint", nil
	}
	reason := ReasonDeploy
	if d.Kind == api.KindRollback {
		reason = "rollback"
	}
	cp, err := m.Create(ctx, Meta{Kinds: cfg.Checkpoint.BeforeDeploy, Reason: reason, Revision: d.Revision, Deployment: d.ID})
	if err != nil {
		if !cfg.Checkpoint.Required {
			m.o.Log.Warn("no checkpoint, deploying anyway (checkpoint.required is false)", zap.Error(err))
			return "", "no checkpoint (checkpoint.required is false): " + err.Error(), nil
		}
		return "", "", fmt.Errorf("no rollback point, no deploy (checkpoint.required): %w", err)
	}
	return cp.ID, describe(cp), nil
}

func describe(cp *api.Checkpoint) string {
	var parts []string
	if len(cp.Snapshots) > 0 {
		ids := make([]string, len(cp.Snapshots))
		for i, s := range cp.Snapshots {
			ids[i] = s.SnapshotID
		}
		parts = append(parts, fmt.Sprintf("snapshot set %s", strings.Join(ids, ",")))
	}
	if cp.Image != nil {
		parts = append(parts, "image "+cp.Image.ImageID+" ("+cp.Image.Name+")")
	}
	return cp.ID + ": " + strings.Join(parts, "; ") + " (completion tracked in the background)"
}

// settle runs off the critical path after a create. It tags each
// snapshot with its device name (CreateSnapshots puts one tag set on
// every snapshot, and after a restore the volume ids no longer say which
// device a snapshot belongs to), retrying while EC2 does not know the
// snapshots yet (eventual consistency: NotFound for a moment after the
// create). After a create that was retried following an ambiguous
// failure it also removes a second set the first attempt may have made
// after all: snapshots of this instance's own volumes carrying this new
// checkpoint's id that are not the set the agent kept.
func (m *Manager) settle(cp *api.Checkpoint, retried bool, ident api.Identity) {
	ctx, cancel := context.WithTimeout(m.life, notFoundGrace)
	defer cancel()
	for _, s := range cp.Snapshots {
		if s.DeviceName == "" {
			continue
		}
		err := m.untilKnown(ctx, func() error {
			_, err := m.o.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{s.SnapshotID}, Tags: toTags(map[string]string{TagDevice: s.DeviceName})})
			return err
		})
		if err != nil && m.life.Err() == nil {
			m.o.Log.Warn("tag snapshot with its device (the catalogue falls back to the agent's record)", zap.String("snapshot", s.SnapshotID), zap.Error(err))
		}
	}
	if retried {
		m.dropDuplicates(ctx, cp, ident)
	}
}

// untilKnown calls fn until it does not answer NotFound, with backoff,
// until ctx ends.
func (m *Manager) untilKnown(ctx context.Context, fn func() error) error {
	delay := 250 * time.Millisecond
	for {
		err := fn()
		if err == nil || !notFound(err) {
			return err
		}
		if clock.Sleep(ctx, m.o.Clock, delay) != nil {
			return err
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// dropDuplicates deletes snapshots of the instance's volumes tagged with
// cp's id that are not cp's, once cp's own are visible by the tag.
func (m *Manager) dropDuplicates(ctx context.Context, cp *api.Checkpoint, ident api.Identity) {
	mine := map[string]bool{}
	for _, s := range cp.Snapshots {
		mine[s.SnapshotID] = true
	}
	ours := map[string]bool{}
	for _, v := range ident.Volumes {
		ours[v.VolumeID] = true
	}
	delay := time.Second
	for {
		found, err := m.findSnapshots(ctx, cp.ID)
		seen := 0
		for _, s := range found {
			if mine[aws.ToString(s.SnapshotId)] {
				seen++
			}
		}
		if err == nil && seen == len(mine) {
			for _, s := range found {
				id := aws.ToString(s.SnapshotId)
				if mine[id] || !ours[aws.ToString(s.VolumeId)] {
					continue
				}
				if _, err := m.o.EC2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: s.SnapshotId}); err != nil && !notFound(err) {
					m.o.Log.Warn("delete a duplicate snapshot set left by a retried create", zap.String("snapshot", id), zap.Error(err))
					continue
				}
				m.o.Log.Warn("deleted a duplicate snapshot a retried create left", zap.String("checkpoint", cp.ID), zap.String("snapshot", id))
			}
			return
		}
		if clock.Sleep(ctx, m.o.Clock, delay) != nil {
			return
		}
		delay = min(2*delay, 30*time.Second)
	}
}
