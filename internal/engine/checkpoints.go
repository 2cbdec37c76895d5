package engine

import (
	"context"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
)

// Checkpoints is everything the engine needs of rollback points: take one
// before a change, wait until it can be restored, and restore data and
// root volumes from it stage by stage (each stage safe to repeat, so a
// crash resumes where it stopped). *checkpoint.Manager implements it
// against EC2 and the host's block devices; the engine's tests use an
// in-memory one.
type Checkpoints interface {
	// BeforeDeploy takes the checkpoint.before_deploy policy's rollback
	// point for d: its id ("" when the policy takes none) and a detail
	// line for the step.
	BeforeDeploy(ctx context.Context, d *api.Deployment) (id, detail string, err error)
	// Create takes a checkpoint now (guards, pre-restore points).
	Create(ctx context.Context, meta checkpoint.Meta) (*api.Checkpoint, error)
	// Cached is the checkpoint as last seen by completion tracking (no
	// AWS call); Get asks AWS.
	Cached(id string) (*api.Checkpoint, error)
	Get(ctx context.Context, id string) (*api.Checkpoint, error)
	// Catalogue rebuilds the list from AWS; Prune applies retention.
	Catalogue(ctx context.Context) (*api.CheckpointList, error)
	Prune(ctx context.Context, dryRun bool) (*api.PruneReport, error)

	// The data volumes rung, in its stages. CheckDetach runs before
	// anything is stopped and refuses an old volume the agent could not
	// release (EC2 would leave its detach busy with the application
	// stopped).
	PlanVolumeRestore(ctx context.Context, id string) ([]api.VolumeRestore, error)
	CreateRestoreVolume(ctx context.Context, opID, checkpointID string, vr *api.VolumeRestore) error
	CheckDetach(vr *api.VolumeRestore) error
	Unmount(vr *api.VolumeRestore) error
	Detach(ctx context.Context, checkpointID string, vr *api.VolumeRestore) error
	Attach(ctx context.Context, vr *api.VolumeRestore) (dev string, err error)
	Mount(vr *api.VolumeRestore, dev string) error

	// The root rung: the intent outlives the reboot in the instance's
	// tags, since the journal on the restored root predates it.
	PlanRootRestore(ctx context.Context, id string) (*api.RootRestore, error)
	SetRootIntent(ctx context.Context, in checkpoint.RootIntent) error
	ClearRootIntent(ctx context.Context) error
	RootIntentNow(ctx context.Context) (*checkpoint.RootIntent, error)
	// AdoptRestored records as the agent's own the checkpoints a root
	// restore's intent names (the restored journal predates them).
	AdoptRestored(in checkpoint.RootIntent) error
	StartRootReplace(ctx context.Context, opID string, rr *api.RootRestore) error
	WaitRootTask(ctx context.Context, taskID string, timeout time.Duration) (state string, err error)
	FindRootTask(ctx context.Context, checkpointID string, since time.Time) (taskID string, err error)
}

// The checkpoint manager is the engine's Checkpoints.
var _ Checkpoints = (*checkpoint.Manager)(nil)
