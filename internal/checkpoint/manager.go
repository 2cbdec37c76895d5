package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/clock"
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
	// The ledger (ledger.go) is kept in the journal's meta records.
	MetaStore
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
	// Clock times the waits between retries and polls (nil: the
	// machine's clock); deadlines of API calls stay on the machine's.
	Clock clock.Clock
}

// Manager creates, tracks, lists, prunes and restores checkpoints.
type Manager struct {
	o      Options
	mu     sync.Mutex // one create at a time: creates share volumes' limits
	wake   chan struct{}
	ledger *ledgerStore
	// pruneMu: one prune at a time.
	pruneMu sync.Mutex
	// The background work of creates (settle) runs under life and is
	// counted in background, so Run's end stops and waits for it.
	life           context.Context
	stopBackground context.CancelFunc
	background     sync.WaitGroup
	bgMu           sync.Mutex // orders Add with the Wait at Run's end
}

// goBackground runs fn in the background unless Run has ended (then the
// agent is stopping and fn's work is left to the next start).
func (m *Manager) goBackground(fn func()) {
	m.bgMu.Lock()
	defer m.bgMu.Unlock()
	if m.life.Err() != nil { // Run has ended
		return
	}
	m.background.Add(1)
	go func() {
		defer m.background.Done()
		fn()
	}()
}

// endBackground stops the background work and waits for it.
func (m *Manager) endBackground() {
	m.bgMu.Lock()
	m.stopBackground()
	m.bgMu.Unlock()
	m.background.Wait()
}

// New returns a manager; Run tracks completion in the background.
func New(o Options) *Manager {
	if o.PollInterval == 0 {
		o.PollInterval = 2 * time.Second
	}
	o.Clock = clock.Or(o.Clock)
	if o.OnChange == nil {
		o.OnChange = func() {}
	}
	if o.Protected == nil {
		o.Protected = func() map[string]string { return nil }
	}
	life, stop := context.WithCancel(context.Background())
	return &Manager{o: o, wake: make(chan struct{}, 1), ledger: &ledgerStore{meta: o.Cache}, life: life, stopBackground: stop}
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
	if err := m.waitForRoom(bctx, ident, cfg, meta.Kinds); err != nil {
		return nil, err
	}
	var errs []error
	retried := false
	for _, kind := range meta.Kinds {
		switch kind {
		case api.KindEBS:
			snaps, again, err := m.createSnapshots(bctx, meta, ident, cfg)
			retried = again
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
		// Whatever was created is in the agent's ledger and in the
		// catalogue, even when another kind failed: prune will find it.
		if err := m.record(func(led *ledger) { led.add(cp) }); err != nil {
			m.o.Log.Error("record the checkpoint in the ledger: it will not be listed nor pruned", zap.String("checkpoint", cp.ID), zap.Error(err))
		}
		if err := m.o.Cache.PutCheckpoint(cp); err != nil {
			m.o.Log.Warn("cache checkpoint", zap.Error(err))
		}
		// The first completion poll waits a poll interval: a snapshot is
		// never complete at once, and the deploy goes on meanwhile.
		time.AfterFunc(m.o.PollInterval, m.kick)
		m.o.OnChange()
		m.goBackground(func() { m.settle(cp, retried, ident) })
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
// ConcurrentSnapshotLimitExceeded, so wait for room instead. Every
// pending snapshot of the volume counts: an AMI's, those of AWS Backup,
// DLM or an operator, not only the agent's (EBS User Guide, "Create
// Amazon EBS snapshots").
func maxPendingPerVolume(volumeType string) int {
	if volumeType == "st1" || volumeType == "sc1" {
		return 1
	}
	return 5
}

// waitForRoom waits, within the create budget, until every volume the
// checkpoint snapshots has room for the snapshots it adds (one per kind
// that covers it). It asks EC2 for every pending snapshot of those
// volumes, whoever made them, and adds the agent's own pending ones from
// the cache (a snapshot made a moment ago may be missing from EC2's
// filtered lists: eventual consistency).
func (m *Manager) waitForRoom(ctx context.Context, ident api.Identity, cfg *config.Config, kinds []api.CheckpointKind) error {
	adds := map[string]int{}
	vols := map[string]api.Volume{}
	for _, k := range kinds {
		covered := ident.Volumes
		if k == api.KindEBS {
			_, chosen, err := instanceSpec(ident, cfg.Checkpoint.Volumes)
			if err != nil {
				return nil // createSnapshots says what is wrong
			}
			covered = chosen
		}
		for _, v := range covered {
			adds[v.VolumeID]++
			vols[v.VolumeID] = v
		}
	}
	if len(vols) == 0 {
		return nil
	}
	for {
		full, err := m.fullVolumes(ctx, vols, adds)
		if err != nil {
			m.o.Log.Warn("counting the pending snapshots of the volumes", zap.Error(err))
			return nil // CreateSnapshots itself refuses, and is retried
		}
		if full == "" {
			return nil
		}
		m.o.Log.Info("waiting for pending snapshots to complete before taking another (EBS limit per volume)", zap.String("volumes", full))
		m.kick()
		if clock.Sleep(ctx, m.o.Clock, m.o.PollInterval) != nil {
			return fmt.Errorf("checkpoint: no room for another snapshot: %s, and none completed within checkpoint.create_timeout: %w", full, ctx.Err())
		}
	}
}

// fullVolumes names the volumes without room, with who holds their
// pending snapshots ("" when all have room).
func (m *Manager) fullVolumes(ctx context.Context, vols map[string]api.Volume, adds map[string]int) (string, error) {
	ids := make([]string, 0, len(vols))
	for id := range vols {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	pending := map[string]map[string]string{} // volume → snapshot → who
	p := ec2.NewDescribeSnapshotsPaginator(m.o.EC2, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []types.Filter{
		{Name: aws.String("volume-id"), Values: ids},
		{Name: aws.String("status"), Values: []string{string(types.SnapshotStatePending)}},
	}})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return "", fmt.Errorf("DescribeSnapshots pending of %s: %w", strings.Join(ids, ","), err)
		}
		for _, s := range out.Snapshots {
			v := aws.ToString(s.VolumeId)
			if pending[v] == nil {
				pending[v] = map[string]string{}
			}
			pending[v][aws.ToString(s.SnapshotId)] = snapshotOwner(tagMap(s.Tags))
		}
	}
	cached, _ := m.o.Cache.Checkpoints()
	for _, c := range cached {
		for _, s := range c.Snapshots {
			if s.State == api.CheckpointPending && vols[s.VolumeID].VolumeID != "" {
				if pending[s.VolumeID] == nil {
					pending[s.VolumeID] = map[string]string{}
				}
				pending[s.VolumeID][s.SnapshotID] = "checkpoint " + c.ID
			}
		}
	}
	var full []string
	for _, id := range ids {
		limit := maxPendingPerVolume(vols[id].VolumeType)
		if len(pending[id])+adds[id] <= limit {
			continue
		}
		var who []string
		for snap, w := range pending[id] {
			who = append(who, snap+" ("+w+")")
		}
		slices.Sort(who)
		full = append(full, fmt.Sprintf("%s has %d pending of at most %d: %s", id, len(pending[id]), limit, strings.Join(who, ", ")))
	}
	return strings.Join(full, "; "), nil
}

// snapshotOwner says who made a snapshot, from its tags.
func snapshotOwner(tags map[string]string) string {
	switch {
	case tags[TagCheckpoint] != "":
		return "rollback-agent checkpoint " + tags[TagCheckpoint]
	case tags["aws:backup:source-resource"] != "" || tags["aws:backup:source-resource-arn"] != "":
		return "AWS Backup"
	case tags["aws:dlm:lifecycle-policy-id"] != "":
		return "Data Lifecycle Manager policy " + tags["aws:dlm:lifecycle-policy-id"]
	case tags["Name"] != "":
		return "another tool: " + tags["Name"]
	}
	return "another tool"
}

// record changes the ledger.
func (m *Manager) record(fn func(*ledger)) error {
	return m.ledger.update(m.o.Cache, m.o.Identity().Volumes, fn)
}
