package checkpoint

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
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

// tagDevices adds each snapshot's device name, off the critical path:
// CreateSnapshots puts one tag set on every snapshot, and after a restore
// the volume ids no longer say which device a snapshot belongs to.
func (m *Manager) tagDevices(cp *api.Checkpoint) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, s := range cp.Snapshots {
		if s.DeviceName == "" {
			continue
		}
		_, err := m.o.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{s.SnapshotID}, Tags: toTags(map[string]string{TagDevice: s.DeviceName})})
		if err != nil {
			m.o.Log.Warn("tag snapshot with its device", zap.String("snapshot", s.SnapshotID), zap.Error(err))
		}
	}
}
