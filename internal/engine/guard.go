package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
)

// guardTimeout bounds a guarded command: past it, the agent assesses the
// host as it is.
const guardTimeout = 2 * time.Hour

// guardState connects the worker running a guard with the client running
// the command.
type guardState struct {
	started chan error // checkpoint taken (nil) or not (error)
	done    chan int   // the command's exit code
}

// ErrUnknownGuard is a done report for a guard that is not waiting.
var ErrUnknownGuard = errors.New("no guard is waiting for this id")

// errGuardAbandoned: the command never ran, so there is nothing to undo.
var errGuardAbandoned = errors.New("guard abandoned")

// Guard queues a guarded local change and returns once its checkpoint is
// taken, so the caller can run the command. A failure to take the
// checkpoint (with checkpoint.required) is returned: do not run it then.
func (e *Engine) Guard(ctx context.Context, label string) (*api.Deployment, error) {
	if err := e.gate(); err != nil {
		return nil, err
	}
	if e.o.Checkpoints == nil {
		return nil, ErrNoCheckpoints
	}
	if err := e.refuse(); err != nil {
		return nil, err
	}
	rev := ""
	if cur := e.current(); cur != nil {
		rev = cur.Revision
	}
	d := &api.Deployment{ID: newID(), Kind: api.KindGuard, Revision: rev, Label: label, Status: api.StatusQueued,
		Source: api.Source{Type: "guard", Location: label}, Trigger: "api", CreatedAt: time.Now().UTC(), Steps: []api.Step{}}
	gs := &guardState{started: make(chan error, 1), done: make(chan int, 1)}
	e.mu.Lock()
	e.guards[d.ID] = gs
	e.mu.Unlock()
	if err := e.o.Journal.PutDeployment(d); err != nil {
		return nil, err
	}
	e.kick()
	select {
	case err := <-gs.started:
		if err != nil {
			return nil, err
		}
	case <-ctx.Done():
		e.GuardDone(d.ID, -1)
		return nil, fmt.Errorf("guard %s: gave up waiting for the checkpoint: %w", d.ID, ctx.Err())
	}
	got, err := e.o.Journal.Deployment(d.ID)
	if err != nil {
		return nil, err
	}
	return got, nil
}

// GuardDone reports the guarded command's exit code.
func (e *Engine) GuardDone(id string, code int) error {
	e.mu.Lock()
	gs := e.guards[id]
	e.mu.Unlock()
	if gs == nil {
		return fmt.Errorf("guard %s: %w", id, ErrUnknownGuard)
	}
	select {
	case gs.done <- code:
	default:
	}
	return nil
}

// guard: a checkpoint (reason guard), the command (run by the client),
// then health; unhealthy climbs the ladder from the volumes rung.
func (r *run) guard(ctx context.Context) error {
	r.e.mu.Lock()
	gs := r.e.guards[r.d.ID]
	r.e.mu.Unlock()
	defer func() {
		r.e.mu.Lock()
		delete(r.e.guards, r.d.ID)
		r.e.mu.Unlock()
	}()
	if gs == nil {
		// Queued before a restart: nobody is running the command any more.
		return errors.New("the agent restarted before the guarded command ran; nothing was changed by the guard")
	}
	err := r.step(StepCheckpoint, api.EffectNone, "", "", func() (string, error) {
		kinds := r.cfg.Checkpoint.BeforeDeploy
		if len(kinds) == 0 {
			kinds = []api.CheckpointKind{api.KindEBS}
		}
		cp, err := r.e.o.Checkpoints.Create(ctx, checkpoint.Meta{Kinds: kinds, Reason: checkpoint.ReasonGuard, Label: r.d.Label, Revision: r.d.Revision, Deployment: r.d.ID})
		if err != nil {
			return "", fmt.Errorf("no rollback point, no guarded change: %w", err)
		}
		r.d.Checkpoint = cp.ID
		return "checkpoint " + cp.ID, nil
	})
	gs.started <- err
	if err != nil {
		return err
	}
	err = r.step(StepCommand, api.EffectHost, "", "", func() (string, error) {
		select {
		case code := <-gs.done:
			r.d.ExitCode = &code
			if code == -1 {
				return "the client gave up before running the command", errGuardAbandoned
			}
			return fmt.Sprintf("%q exited %d", r.d.Label, code), nil
		case <-time.After(guardTimeout):
			r.log.Warn("guarded command did not report back; assessing the host as it is", zap.String("guard", r.d.ID))
			return "no report from the command after " + guardTimeout.String(), nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
	if err != nil {
		return err
	}
	return r.assess(ctx, "")
}
