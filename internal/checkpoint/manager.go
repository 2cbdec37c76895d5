package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
)

// Cache holds the catalogue between calls to AWS, so that the deploy's
// critical path and status never wait on EC2. AWS stays the truth: the
// catalogue is rebuilt from it. The journal implements it.
type Cache interface {
	Checkpoints() ([]api.Checkpoint, error)
	PutCheckpoint(c *api.Checkpoint) error
	DeleteCheckpoint(id string) error
	// ReplaceCheckpoints replaces the cache with list, keeping entries
	// written since `since` (created while the list was being read).
	ReplaceCheckpoints(list []api.Checkpoint, since time.Time) error
}

// Options wire a Manager.
type Options struct {
	EC2      EC2
	Identity func() api.Identity
	Config   func() *config.Config
	Cache    Cache
	Log      *zap.Logger
	// OnChange is called when a checkpoint is created or changes state.
	OnChange func()
	// Protected returns checkpoint ids prune must keep and why (the last
	// good deployment's, one an operation is using).
	Protected func() map[string]string
	// PollInterval is the first delay of completion tracking (default 2s).
	PollInterval time.Duration
}

// Manager creates, tracks, lists, prunes and restores checkpoints.
type Manager struct {
	o    Options
	mu   sync.Mutex // one create at a time: creates share volumes' limits
	wake chan struct{}
}

// New returns a manager; Run tracks completion in the background.
func New(o Options) *Manager {
	if o.PollInterval == 0 {
		o.PollInterval = 2 * time.Second
	}
	if o.OnChange == nil {
		o.OnChange = func() {}
	}
	if o.Protected == nil {
		o.Protected = func() map[string]string { return nil }
	}
	return &Manager{o: o, wake: make(chan struct{}, 1)}
}

func (m *Manager) kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Create takes a checkpoint of the instance per meta.Kinds. It returns as
// soon as the create calls have returned: the point in time is fixed then;
// completion is tracked in the background. Throttling and snapshot rate
// limits are retried within checkpoint.create_timeout, and after any
// failure the checkpoint is looked up by its tag before it is created
// again, so an ambiguous failure never makes two.
func (m *Manager) Create(ctx context.Context, meta Meta) (*api.Checkpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cfg := m.o.Config()
	ident := m.o.Identity()
	if len(meta.Kinds) == 0 {
		return nil, errors.New("checkpoint: no kind asked for (ebs, ami)")
	}
	if meta.ID == "" {
		meta.ID = NewID()
	}
	if meta.Created.IsZero() {
		meta.Created = time.Now().UTC()
	}
	cp := &api.Checkpoint{
		ID: meta.ID, Kinds: meta.Kinds, State: api.CheckpointPending, CreatedAt: meta.Created, Reason: meta.Reason,
		Label: meta.Label, Revision: meta.Revision, Deployment: meta.Deployment, Pinned: meta.Pin,
	}
	bctx, cancel := context.WithTimeout(ctx, cfg.Checkpoint.CreateTimeout)
	defer cancel()
	if err := m.waitForRoom(bctx, ident); err != nil {
		return nil, err
	}
	var errs []error
	for _, kind := range meta.Kinds {
		switch kind {
		case api.KindEBS:
			snaps, err := m.createSnapshots(bctx, meta, ident, cfg)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			cp.Snapshots = snaps
		case api.KindAMI:
			img, err := m.createImage(bctx, meta, ident, cfg)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			cp.Image = img
		default:
			errs = append(errs, fmt.Errorf("checkpoint: unknown kind %q (ebs, ami)", kind))
		}
	}
	if cp.Snapshots != nil || cp.Image != nil {
		// Whatever was created is tagged and in the catalogue, even when
		// another kind failed: prune will find it.
		if err := m.o.Cache.PutCheckpoint(cp); err != nil {
			m.o.Log.Warn("cache checkpoint", zap.Error(err))
		}
		// The first completion poll waits a poll interval: a snapshot is
		// never complete at once, and the deploy goes on meanwhile.
		time.AfterFunc(m.o.PollInterval, m.kick)
		m.o.OnChange()
		go m.tagDevices(cp)
	}
	if err := errors.Join(errs...); err != nil {
		return cp, err
	}
	m.o.Log.Info("checkpoint taken", zap.String("checkpoint", cp.ID), zap.Any("kinds", cp.Kinds), zap.String("reason", cp.Reason),
		zap.Int("snapshots", len(cp.Snapshots)))
	return cp, nil
}

// maxPendingPerVolume is EBS's limit of pending snapshots per volume
// (st1/sc1: 1); another CreateSnapshots would fail with
// ConcurrentSnapshotLimitExceeded, so wait for room instead.
func maxPendingPerVolume(volumeType string) int {
	if volumeType == "st1" || volumeType == "sc1" {
		return 1
	}
	return 5
}

// waitForRoom waits, within the create budget, until no volume has its
// maximum of pending snapshots, counting the agent's own from the cache
// (no API call on the deploy's critical path).
func (m *Manager) waitForRoom(ctx context.Context, ident api.Identity) error {
	for {
		full := ""
		cached, _ := m.o.Cache.Checkpoints()
		pending := map[string]int{}
		for _, c := range cached {
			for _, s := range c.Snapshots {
				if s.State == api.CheckpointPending {
					pending[s.VolumeID]++
				}
			}
		}
		for _, v := range ident.Volumes {
			if pending[v.VolumeID] >= maxPendingPerVolume(v.VolumeType) {
				full = fmt.Sprintf("%s has %d pending snapshots (the EBS limit)", v.VolumeID, pending[v.VolumeID])
			}
		}
		if full == "" {
			return nil
		}
		m.o.Log.Info("waiting for snapshots to complete before taking another", zap.String("volume", full))
		m.kick()
		select {
		case <-ctx.Done():
			return fmt.Errorf("checkpoint: %s, and none completed in time: %w", full, ctx.Err())
		case <-time.After(m.o.PollInterval):
		}
	}
}
