package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/identity"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/server"
)

// identity returns the agent's identity as last read.
func (d *Daemon) identity() api.Identity {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ident
}

// refreshIdentity re-reads the instance and its volumes (after a restore
// swapped them).
func (d *Daemon) refreshIdentity(ctx context.Context) error {
	cur := d.identity()
	doc := identity.Doc{InstanceID: cur.InstanceID, Region: cur.Region, AvailabilityZone: cur.AvailabilityZone,
		AccountID: cur.AccountID, InstanceType: cur.InstanceType, Source: cur.Source}
	id, err := identity.Describe(ctx, d.svc.ec2, doc, d.cfg.Load().Devices.ByIDDir, identityWait)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.ident = id
	d.mu.Unlock()
	return nil
}

func checkpointErr(err error) error {
	switch {
	case errors.Is(err, checkpoint.ErrNotFound):
		return server.NotFound(err)
	case errors.Is(err, checkpoint.ErrProtected), errors.Is(err, engine.ErrNoCheckpoints):
		return server.Conflict(err)
	}
	return engineErr(err)
}

// Checkpoints implements server.Backend: the catalogue from AWS, read
// once for every asker and given again for catalogueFresh; a change the
// agent makes to its checkpoints drops it.
func (d *Daemon) Checkpoints(ctx context.Context) (*api.CheckpointList, error) {
	l, err := d.catalogue.get(ctx, d.svc.checkpoints.Catalogue)
	return l, checkpointErr(err)
}

// checkpointsChanged drops the shared catalogue and tells sd_notify.
func (d *Daemon) checkpointsChanged() {
	d.catalogue.invalidate()
	d.notify.status(d.summary())
}

// CreateCheckpoint implements server.Backend. It does not wait for the
// deployment queue: a hook of a running deployment may ask for one.
func (d *Daemon) CreateCheckpoint(ctx context.Context, req api.CheckpointRequest) (*api.Checkpoint, error) {
	kinds := req.Kinds
	if len(kinds) == 0 {
		kinds = d.cfg.Load().Checkpoint.BeforeDeploy
	}
	if len(kinds) == 0 {
		kinds = []api.CheckpointKind{api.KindEBS}
	}
	for _, k := range kinds {
		if k != api.KindEBS && k != api.KindAMI {
			return nil, server.BadRequest(fmt.Errorf("kind %q: want ebs or ami", k))
		}
	}
	reason := req.Reason
	if reason == "" {
		reason = checkpoint.ReasonManual
	}
	if reason == checkpoint.ReasonPackageManager && !d.cfg.Load().Checkpoint.PackageManagers {
		return nil, &server.Error{Status: http.StatusConflict, Code: api.CodeDisabled,
			Err: errors.New("checkpoints before package transactions are off (checkpoint.package_managers in agent.yaml)")}
	}
	rev := ""
	if id, _ := d.journal.Pointer(journal.PointerCurrent); id != "" {
		if dep, err := d.journal.Deployment(id); err == nil {
			rev = dep.Revision
		}
	}
	c, err := d.svc.checkpoints.Create(ctx, checkpoint.Meta{Kinds: kinds, Reason: reason, Label: req.Label, Pin: req.Pin, Revision: rev})
	d.catalogue.invalidate()
	if err != nil && ctx.Err() == nil {
		d.checkpointFailed(reason, req.Label, err)
	}
	return c, checkpointErr(err)
}

// Checkpoint implements server.Backend: from the cache the tracker keeps
// current when it is there (cheap to poll), else from the shared
// catalogue (an unknown id costs no AWS call of its own).
func (d *Daemon) Checkpoint(ctx context.Context, id string) (*api.Checkpoint, error) {
	if c, err := d.svc.checkpoints.Cached(id); err == nil {
		return c, nil
	}
	list, err := d.Checkpoints(ctx)
	if err != nil {
		return nil, err
	}
	for i := range list.Checkpoints {
		if list.Checkpoints[i].ID == id {
			c := list.Checkpoints[i]
			return &c, nil
		}
	}
	return nil, checkpointErr(fmt.Errorf("checkpoint %s: %w", id, checkpoint.ErrNotFound))
}

// PinCheckpoint implements server.Backend.
func (d *Daemon) PinCheckpoint(ctx context.Context, id string, pin bool) (*api.Checkpoint, error) {
	c, err := d.svc.checkpoints.SetPinned(ctx, id, pin)
	d.catalogue.invalidate()
	return c, checkpointErr(err)
}

// DeleteCheckpoint implements server.Backend.
func (d *Daemon) DeleteCheckpoint(ctx context.Context, id string) error {
	err := d.svc.checkpoints.Delete(ctx, id)
	d.catalogue.invalidate()
	return checkpointErr(err)
}

// PruneCheckpoints implements server.Backend.
func (d *Daemon) PruneCheckpoints(ctx context.Context, dryRun bool) (*api.PruneReport, error) {
	rep, err := d.svc.checkpoints.Prune(ctx, dryRun)
	if !dryRun {
		d.catalogue.invalidate()
	}
	return rep, checkpointErr(err)
}

// RestoreCheckpoint implements server.Backend.
func (d *Daemon) RestoreCheckpoint(_ context.Context, id string, req api.RestoreRequest) (*api.Deployment, error) {
	if req.Volumes == req.Root {
		return nil, server.BadRequest(errors.New("say what to restore: volumes or root"))
	}
	dep, err := d.svc.engine.Restore(id, req.Root)
	return dep, checkpointErr(err)
}
