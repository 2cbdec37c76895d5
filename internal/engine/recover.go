package engine

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// recover finishes or rolls back what the last run of the agent left in
// flight, from the journal, so the host never stays half-installed:
//   - a deployment that had not changed the host yet starts over;
//   - one that had is rolled back like a failed deployment (the step the
//     crash interrupted is marked failed, CodeDeploy's FailedAfterRestart);
//   - a rollback in progress climbs its rung again from the start (every
//     step of the rung is safe to repeat).
func (e *Engine) recover(ctx context.Context) error {
	deps, err := e.o.Journal.Deployments(0)
	if err != nil {
		return fmt.Errorf("engine: recovery: %w", err)
	}
	for i := len(deps) - 1; i >= 0; i-- {
		d := &deps[i]
		if d.Status != api.StatusRunning && d.Status != api.StatusRollingBack {
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		r := &run{e: e, d: d, cfg: e.o.Config(), log: e.o.Log}
		interrupted := markInterrupted(d)
		e.o.Log.Warn("recovering a deployment interrupted by an agent restart",
			zap.String("deployment", d.ID), zap.String("status", string(d.Status)), zap.String("step", interrupted))
		switch {
		case d.Status == api.StatusRunning && d.Kind == api.KindCodeDeploy:
			// CodeDeploy goes on without this agent: wait for its
			// ValidateService again (the checkpoint, if taken, stays).
			r.startOver(fmt.Sprintf("agent restarted during %s of a CodeDeploy deployment: waiting for its ValidateService again", interrupted))
		case d.Status == api.StatusRunning && d.Kind == api.KindGuard && r.hostChanged():
			// The command may or may not have run: health decides.
			r.d.Error = "the agent restarted during the guarded change"
			if err := r.assess(ctx, ""); err != nil {
				r.fail(ctx, err)
			} else {
				r.finish(api.StatusSucceeded, nil)
			}
		case d.Status == api.StatusRunning && lifecycleDone(d):
			// Only the bookkeeping after the last hook was lost.
			r.succeed()
		case d.Status == api.StatusRunning && (d.Kind == api.KindRollback || d.Kind == api.KindRestore || d.Kind == api.KindRestoreRoot):
			// A manual rollback is an install of a known revision, and every
			// stage of a restore is safe to repeat: do it again.
			r.startOver(fmt.Sprintf("agent restarted during %s: the rollback starts over", interrupted))
		case d.Status == api.StatusRollingBack:
			r.d.Error = appendError(r.d.Error, fmt.Sprintf("agent restarted during %s of the rollback; the rung starts over", interrupted))
			r.resumeClimb(ctx)
		case !r.hostChanged():
			r.startOver(fmt.Sprintf("agent restarted during %s, before the host was changed: the deployment starts over", interrupted))
		default:
			r.fail(ctx, fmt.Errorf("FailedAfterRestart: the agent restarted during %s; failing in-progress lifecycle event after an agent restart", interrupted))
		}
	}
	return nil
}

// startOver queues the operation again, with a step saying why.
func (r *run) startOver(why string) {
	r.recoverStep(why)
	r.setStatus(api.StatusQueued)
}

// recoverStep records what recovery decided, as a step that changes
// nothing.
func (r *run) recoverStep(detail string) {
	now := time.Now().UTC()
	r.d.Steps = append(r.d.Steps, api.Step{Name: StepRecover, Status: api.StepSucceeded, StartedAt: now, EndedAt: now, Detail: detail, Effect: api.EffectNone})
}

// markInterrupted marks the step that was running when the agent died as
// failed and returns its name.
func markInterrupted(d *api.Deployment) string {
	name := "start-up"
	for i := range d.Steps {
		s := &d.Steps[i]
		if s.Status == api.StepRunning {
			s.Status = api.StepFailed
			s.EndedAt = time.Now().UTC()
			s.Error = "interrupted: the agent stopped or crashed during this step"
			s.Interrupted = true
			name = s.Name
		}
	}
	if name == "start-up" && len(d.Steps) > 0 {
		name = "after " + d.Steps[len(d.Steps)-1].Name
	}
	return name
}

func appendError(prev, next string) string {
	if prev == "" {
		return next
	}
	return prev + "; " + next
}

// lifecycleDone reports whether the last lifecycle event of the
// deployment's own revision ended well and nothing was left running.
func lifecycleDone(d *api.Deployment) bool {
	if len(d.Steps) == 0 || len(d.Rungs) > 0 {
		return false
	}
	last := d.Steps[len(d.Steps)-1]
	return last.Name == eventsAfterCopy[len(eventsAfterCopy)-1] && last.Rung == "" &&
		(last.Status == api.StepSucceeded || last.Status == api.StepSkipped)
}
