package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// Prune applies retention: the newest retention.keep_checkpoints stay,
// and so does anything younger than retention.max_age among those; never
// a pinned one, the last good deployment's, one in use or still pending.
// Volumes kept after a restore go by the same rules. Only resources
// tagged as this agent's for this instance and app are ever touched, and
// one failed delete does not stop the rest: it is reported.
func (m *Manager) Prune(ctx context.Context, dryRun bool) (*api.PruneReport, error) {
	// One prune at a time (the one after a deployment, agentctl's): two
	// would catalogue the same checkpoints and delete them twice.
	m.pruneMu.Lock()
	defer m.pruneMu.Unlock()
	list, err := m.Catalogue(ctx)
	if err != nil {
		return nil, err
	}
	cfg := m.o.Config()
	keep, maxAge := cfg.Retention.KeepCheckpoints, cfg.Retention.MaxAge
	rep := &api.PruneReport{SchemaVersion: api.SchemaVersion, DryRun: dryRun, Deleted: []string{}, Kept: map[string]string{}}
	now := time.Now()
	for i, c := range list.Checkpoints { // newest first
		old := maxAge > 0 && now.Sub(c.CreatedAt) > maxAge
		switch {
		case c.Protected != "":
			rep.Kept[c.ID] = c.Protected
			continue
		case i < keep && !old:
			rep.Kept[c.ID] = fmt.Sprintf("among the newest %d", keep)
			continue
		}
		if dryRun {
			rep.Deleted = append(rep.Deleted, c.ID)
			continue
		}
		if err := m.delete(ctx, &c); err != nil {
			rep.Errors = append(rep.Errors, err.Error())
			continue
		}
		rep.Deleted = append(rep.Deleted, c.ID)
	}
	for i, v := range list.ReplacedVolumes {
		old := maxAge > 0 && now.Sub(v.ReplacedAt) > maxAge
		if i < keep && !old {
			rep.Kept[v.VolumeID] = "replaced volume kept for undo"
			continue
		}
		if dryRun {
			rep.Deleted = append(rep.Deleted, v.VolumeID)
			continue
		}
		if _, err := m.o.EC2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(v.VolumeID)}); err != nil && !notFound(err) {
			rep.Errors = append(rep.Errors, fmt.Sprintf("DeleteVolume %s: %v", v.VolumeID, err))
			continue
		}
		if err := m.record(func(led *ledger) { delete(led.Volumes, v.VolumeID); delete(led.Replaced, v.VolumeID) }); err != nil {
			m.o.Log.Warn("forget a deleted volume in the ledger", zap.Error(err))
		}
		rep.Deleted = append(rep.Deleted, v.VolumeID)
	}
	if !dryRun && len(rep.Deleted) > 0 {
		m.o.Log.Info("pruned checkpoints", zap.Strings("deleted", rep.Deleted), zap.Strings("errors", rep.Errors))
		if _, err := m.Catalogue(ctx); err != nil {
			m.o.Log.Warn("refresh catalogue after prune", zap.Error(err))
		}
		m.o.OnChange()
	}
	return rep, nil
}

// Delete removes one checkpoint; pinned and protected ones are refused.
func (m *Manager) Delete(ctx context.Context, id string) error {
	c, err := m.Get(ctx, id)
	if err != nil {
		return err
	}
	if c.Protected != "" && c.Protected != "pending" {
		return fmt.Errorf("checkpoint %s is %s; unpin it (agentctl checkpoint unpin) or wait until it is no longer needed: %w", id, c.Protected, ErrProtected)
	}
	if err := m.delete(ctx, c); err != nil {
		return err
	}
	if _, err := m.Catalogue(ctx); err != nil {
		m.o.Log.Warn("refresh catalogue after delete", zap.Error(err))
	}
	m.o.OnChange()
	return nil
}

// ErrProtected refuses to delete a checkpoint that must stay.
var ErrProtected = errors.New("protected")

// delete removes a checkpoint's snapshots and deregisters its image with
// its snapshots, after checking every resource is one the agent's ledger
// records and is tagged as ours.
func (m *Manager) delete(ctx context.Context, c *api.Checkpoint) error {
	ident := m.o.Identity()
	app, inst := m.o.Config().Application, ident.InstanceID
	led, err := m.ledger.read(m.o.Cache, ident.Volumes)
	if err != nil {
		return err
	}
	if led.Checkpoints[c.ID] == nil {
		if m.gone(ctx, c) {
			return nil // deleted a moment ago (the ledger forgot it then)
		}
		return fmt.Errorf("checkpoint %s is not in the agent's ledger: its resources were not made by this agent and are left alone", c.ID)
	}
	var errs []error
	if len(c.Snapshots) > 0 {
		ids := make([]string, len(c.Snapshots))
		for i, s := range c.Snapshots {
			ids[i] = s.SnapshotID
		}
		out, err := m.o.EC2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: ids})
		if err != nil && !notFound(err) {
			return fmt.Errorf("checkpoint %s: DescribeSnapshots before delete: %w", c.ID, err)
		}
		if out != nil {
			for _, s := range out.Snapshots {
				if !ours(tagMap(s.Tags), app, inst) {
					errs = append(errs, fmt.Errorf("checkpoint %s: snapshot %s is not tagged as this agent's: left alone", c.ID, aws.ToString(s.SnapshotId)))
					continue
				}
				if ok, why := led.trustSnapshot(c.ID, aws.ToString(s.SnapshotId), aws.ToString(s.VolumeId), ident.Volumes); !ok {
					errs = append(errs, fmt.Errorf("checkpoint %s: snapshot %s left alone: %s", c.ID, aws.ToString(s.SnapshotId), why))
					continue
				}
				_, err := m.o.EC2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: s.SnapshotId})
				if err != nil && !notFound(err) {
					errs = append(errs, fmt.Errorf("checkpoint %s: DeleteSnapshot %s: %w", c.ID, aws.ToString(s.SnapshotId), err))
				}
			}
		}
	}
	if c.Image != nil {
		out, err := m.o.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{c.Image.ImageID}})
		switch {
		case err != nil && !notFound(err):
			errs = append(errs, fmt.Errorf("checkpoint %s: DescribeImages before deregister: %w", c.ID, err))
		case err == nil && len(out.Images) == 1 && !ours(tagMap(out.Images[0].Tags), app, inst):
			errs = append(errs, fmt.Errorf("checkpoint %s: image %s is not tagged as this agent's: left alone", c.ID, c.Image.ImageID))
		case err == nil && len(out.Images) == 1 && led.Checkpoints[c.ID].Image != c.Image.ImageID:
			errs = append(errs, fmt.Errorf("checkpoint %s: image %s is not in the agent's ledger: left alone", c.ID, c.Image.ImageID))
		case err == nil && len(out.Images) == 1:
			res, err := m.o.EC2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(c.Image.ImageID), DeleteAssociatedSnapshots: aws.Bool(true)})
			if err != nil {
				errs = append(errs, fmt.Errorf("checkpoint %s: DeregisterImage %s: %w", c.ID, c.Image.ImageID, err))
				break
			}
			for _, r := range res.DeleteSnapshotResults {
				if r.ReturnCode != types.SnapshotReturnCodesSuccess && r.ReturnCode != "" {
					errs = append(errs, fmt.Errorf("checkpoint %s: DeregisterImage %s: snapshot %s not deleted: %s", c.ID, c.Image.ImageID, aws.ToString(r.SnapshotId), r.ReturnCode))
				}
			}
		}
	}
	if len(errs) == 0 {
		if err := m.o.Cache.DeleteCheckpoint(c.ID); err != nil {
			m.o.Log.Warn("uncache checkpoint", zap.Error(err))
		}
		if err := m.record(func(led *ledger) { delete(led.Checkpoints, c.ID) }); err != nil {
			m.o.Log.Warn("forget a deleted checkpoint in the ledger", zap.Error(err))
		}
	}
	return errors.Join(errs...)
}

// gone is true when none of c's resources exists any more.
func (m *Manager) gone(ctx context.Context, c *api.Checkpoint) bool {
	for _, s := range c.Snapshots {
		out, err := m.o.EC2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{s.SnapshotID}})
		if !notFound(err) && (err != nil || len(out.Snapshots) > 0) {
			return false
		}
	}
	if c.Image != nil {
		out, err := m.o.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{c.Image.ImageID}})
		if !notFound(err) && (err != nil || len(out.Images) > 0) {
			return false
		}
	}
	return true
}
