// Package engine is the journaled state machine of deployments,
// rollbacks, restores and guards. Every step is written to the journal
// before its side effects and after, so a crash at any point is resumed
// or rolled back deterministically on the next start. One operation runs
// at a time; later ones wait in the queue. docs/design.md draws the
// lifecycle (status.go holds its table), says what recovery does at each
// step (recover.go), and gives the lock order.
package engine

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/clock"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/health"
	"github.com/rollback-agent/rollback-agent/internal/hooks"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/releases"
)

// Fetcher brings a deployment's bundle to a local file.
type Fetcher interface {
	// Fetch writes the bundle of src to dst (a new file) and returns its
	// sha256 (hex) and size. It may fill in src details (S3 ETag, version).
	Fetch(ctx context.Context, src *api.Source, dst string) (digest string, size int64, err error)
}

// Options wire an Engine.
type Options struct {
	Config   func() *config.Config
	Journal  *journal.Journal
	Releases *releases.Store
	StateDir string
	Log      *zap.Logger
	Fetcher  Fetcher
	// Checkpoints takes and restores rollback points; nil: none are
	// taken and restores are not available (no AWS).
	Checkpoints Checkpoints
	// RefreshIdentity re-reads the instance's volumes after they changed.
	RefreshIdentity func(context.Context) error
	// Health builds the health checkers and policy from the current config;
	// nil means ValidateService is the only check.
	Health func() ([]health.Checker, health.Policy, error)
	// OnHealth receives every assessment's summary (for status).
	OnHealth func(api.HealthSummary)
	// BootID is this boot's id, for the per-boot climb limit.
	BootID string
	// GroupID is DEPLOYMENT_GROUP_ID for hooks: stable per host and app.
	GroupID string
	// MaxEventTime bounds the scripts of one lifecycle event together;
	// zero means appspec.MaxEventTime (CodeDeploy's 3600 s). Tests
	// shorten it.
	MaxEventTime time.Duration
	// OnTransition is told every status change of a record, after it is
	// journaled (metrics, notifications, tests checking the lifecycle).
	OnTransition func(d api.Deployment, from api.DeploymentStatus)
	// OnStep is told when a step starts (its intent is journaled, its
	// side effects not done yet) and when its work returned (done, its
	// result not journaled yet): tracing, and tests that stop the engine
	// at exactly those points as a crash would.
	OnStep func(d *api.Deployment, s api.Step, at StepPoint)
	// Gate, when it returns an error, refuses new deployments, rollbacks
	// and guards (from every source) with it: the agent's record is in
	// trouble an operator must look at first (journal.Trouble).
	Gate func() error
	// Contain says where hooks' cgroups are made (hooks.DetectContainment);
	// nil contains each hook by its process group only.
	Contain *hooks.Containment
	// Clock times the waits that can last hours on AWS (a checkpoint the
	// volumes rung restores, a root replacement task); nil is the
	// machine's clock. Tests pass a fake one.
	Clock clock.Clock
}

// ErrNeedsOperator wraps what the Gate refused with.
var ErrNeedsOperator = errors.New("the agent needs an operator")

// gate asks Options.Gate.
func (e *Engine) gate() error {
	if e.o.Gate == nil {
		return nil
	}
	if err := e.o.Gate(); err != nil {
		return fmt.Errorf("%w: %w", ErrNeedsOperator, err)
	}
	return nil
}

// StepPoint is a point in a step's life that OnStep is told about.
type StepPoint int

// Step points.
const (
	StepStarted StepPoint = iota
	StepReturned
)

// observe calls OnStep, if set.
func (e *Engine) observe(d *api.Deployment, s api.Step, at StepPoint) {
	if e.o.OnStep != nil {
		e.o.OnStep(d, s, at)
	}
}

// Engine runs deployments.
type Engine struct {
	o    Options
	bus  *bus
	wake chan struct{}

	mu     sync.Mutex
	active *api.Deployment
	watch  *watchState
	guards map[string]*guardState
	// pruning: a checkpoint prune runs; pruneAgain: another was asked for.
	pruning, pruneAgain bool
	// fault, once set, stops the engine taking work (fault.go).
	fault error
	// codedeploys are the CodeDeploy deployments begun or gated here,
	// by CodeDeploy deployment id (codedeploy.go).
	codedeploys map[string]*cdState

	// prepared: Prepare has looked for an unfinished root restore;
	// resume is the one it found.
	prepareMu sync.Mutex
	prepared  bool
	resume    *rootResume

	// jobs are rollbacks health asked for (watch window, boot); the worker
	// runs them between queued operations.
	jobs chan job
}

// New returns an engine; call Run to start its worker.
func New(o Options) (*Engine, error) {
	for _, d := range []string{o.downloadsDir(), o.logsDir()} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("engine: create %s: %w", d, err)
		}
	}
	o.Clock = clock.Or(o.Clock)
	return &Engine{o: o, bus: newBus(), wake: make(chan struct{}, 1), jobs: make(chan job, 16), guards: map[string]*guardState{}}, nil
}

func (o Options) downloadsDir() string { return filepath.Join(o.StateDir, "downloads") }
func (o Options) logsDir() string      { return filepath.Join(o.StateDir, "logs") }

// LogDir is where the hook output of a deployment lives.
func (e *Engine) LogDir(id string) string { return filepath.Join(e.o.logsDir(), id) }

// Subscribe streams events of deployment id ("" for all).
func (e *Engine) Subscribe(id string) (<-chan api.Event, func()) { return e.bus.Subscribe(id) }

// Active returns a copy of the operation in flight, if any.
func (e *Engine) Active() *api.Deployment {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.active == nil {
		return nil
	}
	c := *e.active
	c.Steps = append([]api.Step(nil), e.active.Steps...)
	// The worker changes rungs and volume stages in place: readers get
	// their own.
	c.Rungs, c.Volumes = slices.Clone(e.active.Rungs), slices.Clone(e.active.Volumes)
	return &c
}

// Request asks for a deployment.
type Request struct {
	Source                        api.Source
	Revision                      string
	Trigger                       string
	IgnoreApplicationStopFailures bool
}

// Submit records a queued deployment and wakes the worker.
func (e *Engine) Submit(req Request) (*api.Deployment, error) {
	if err := e.gate(); err != nil {
		return nil, err
	}
	if req.Source.Type == "" || req.Source.Location == "" {
		return nil, fmt.Errorf("engine: a deployment needs a source")
	}
	if err := e.refuse(); err != nil {
		return nil, err
	}
	rev := req.Revision
	if rev == "" {
		rev = RevisionFromLocation(req.Source.Location)
	}
	d := &api.Deployment{
		ID: newID(), Kind: api.KindDeploy, Revision: rev, Source: req.Source, Status: api.StatusQueued,
		Trigger: req.Trigger, CreatedAt: time.Now().UTC(), Steps: []api.Step{},
		IgnoreApplicationStopFailures: req.IgnoreApplicationStopFailures,
	}
	d.Release = d.ID
	if err := e.o.Journal.PutDeployment(d); err != nil {
		return nil, err
	}
	e.o.Log.Info("deployment queued", zap.String("deployment", d.ID), zap.String("revision", rev), zap.String("source", req.Source.Location))
	e.bus.publish(api.Event{Type: api.EventStatus, DeploymentID: d.ID, Status: d.Status})
	e.kick()
	return d, nil
}

// Rollback queues a manual rollback to the revision or deployment id in
// to; empty means the newest good deployment before the current one.
func (e *Engine) Rollback(to string) (*api.Deployment, error) {
	if err := e.refuse(); err != nil {
		return nil, err
	}
	if err := e.gate(); err != nil {
		return nil, err
	}
	target, err := e.rollbackTarget(to)
	if err != nil {
		return nil, err
	}
	d := &api.Deployment{
		ID: newID(), Kind: api.KindRollback, Revision: target.Revision, Digest: target.Digest, Status: api.StatusQueued,
		Source:  api.Source{Type: "release", Location: target.Release},
		Trigger: "api", CreatedAt: time.Now().UTC(), Steps: []api.Step{}, Release: target.Release, RollbackTo: target.ID,
	}
	if err := e.o.Journal.PutDeployment(d); err != nil {
		return nil, err
	}
	e.o.Log.Info("rollback queued", zap.String("deployment", d.ID), zap.String("to", target.ID), zap.String("revision", target.Revision))
	e.bus.publish(api.Event{Type: api.EventStatus, DeploymentID: d.ID, Status: d.Status})
	e.kick()
	return d, nil
}

// ErrNoTarget means a rollback has nothing to go back to.
var ErrNoTarget = errors.New("no revision to roll back to")

func (e *Engine) rollbackTarget(to string) (*api.Deployment, error) {
	deps, err := e.o.Journal.Deployments(0)
	if err != nil {
		return nil, err
	}
	current, _ := e.o.Journal.Pointer(journal.PointerCurrent)
	var curRelease string
	for _, d := range deps {
		if d.ID == current {
			curRelease = d.Release
		}
	}
	for i := range deps {
		d := &deps[i]
		if d.Status != api.StatusSucceeded || !e.o.Releases.Exists(d.Release) {
			continue
		}
		switch {
		case to == "" && d.ID != current && d.Release != curRelease:
			return d, nil
		case to != "" && (d.ID == to || d.Revision == to):
			return d, nil
		}
	}
	if to == "" {
		return nil, fmt.Errorf("engine: %w: no earlier successful deployment whose revision is still on disk", ErrNoTarget)
	}
	return nil, fmt.Errorf("engine: %w: no successful deployment or revision %q with its revision still on disk (see agentctl history)", ErrNoTarget, to)
}

func (e *Engine) kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run recovers whatever a crash interrupted, then runs queued operations
// one at a time until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	e.prepare(ctx, 0)
	if e.resume != nil {
		e.resumeRootRestore(ctx, e.resume)
	}
	if err := e.recover(ctx); err != nil {
		e.setFault(err)
	}
	defer e.stopWatch()
	for {
		if e.Fault() != nil {
			// Nothing more is taken; status says why.
			<-ctx.Done()
			return nil
		}
		select {
		case j := <-e.jobs:
			e.runJob(ctx, j)
			continue
		default:
		}
		d, err := e.nextQueued()
		if err != nil {
			e.setFault(fmt.Errorf("read the queue: %w", err))
			continue
		}
		if d != nil {
			e.execute(ctx, d)
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.wake:
		case j := <-e.jobs:
			e.runJob(ctx, j)
		}
	}
}

func (e *Engine) nextQueued() (*api.Deployment, error) {
	deps, err := e.o.Journal.Deployments(0)
	if err != nil {
		return nil, err
	}
	for i := len(deps) - 1; i >= 0; i-- {
		if deps[i].Status == api.StatusQueued {
			return &deps[i], nil
		}
	}
	return nil, nil
}

// newID returns a CodeDeploy-style deployment id, d-XXXXXXXXX.
func newID() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "d-" + string(b)
}

// RevisionFromLocation labels a revision by its file or directory name.
func RevisionFromLocation(loc string) string {
	loc = strings.TrimRight(loc, "/")
	if i := strings.Index(loc, "?"); i >= 0 {
		loc = loc[:i]
	}
	base := filepath.Base(loc)
	for _, ext := range []string{".tar.gz", ".tgz", ".tar", ".zip"} {
		if strings.HasSuffix(strings.ToLower(base), ext) {
			return base[:len(base)-len(ext)]
		}
	}
	return base
}
