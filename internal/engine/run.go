package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/engine/rung"
	"github.com/rollback-agent/rollback-agent/internal/journal"
)

// run is one deployment being executed.
type run struct {
	e   *Engine
	d   *api.Deployment
	cfg *config.Config
	log *zap.Logger
	// restored: volumes made from snapshots are in use now; they read
	// slowly until warm, so the next assessment allows for it.
	restored bool
}

// Step names besides the lifecycle events. Names are for people; what a
// step does to the host is its Effect.
const (
	StepFetch       = "Fetch"
	StepUnpack      = "Unpack"
	StepValidate    = "Validate"
	StepCheckpoint  = "Checkpoint"
	StepInstall     = "Install"
	StepUninstall   = "Uninstall"
	StepRecover     = "Recover"
	StepPlan        = "Plan"
	StepCheckDetach = "CheckDetach"
	StepIntent      = "Intent"
	StepAssess      = "Assess"
	StepCommand     = "Command"
	StepReplaceRoot = "ReplaceRoot"
	StepReboot      = "Reboot"
	// StepEndProcesses ends what a rolled-back revision's hooks left running.
	StepEndProcesses = "EndProcesses"
)

// save writes the record. A record that cannot be written stops the
// engine (fault.go): steps are not run without their intent on disk.
func (r *run) save() {
	if err := r.e.o.Journal.PutDeployment(r.d); err != nil {
		r.e.setFault(fmt.Errorf("write the record of %s: %w", r.d.ID, err))
	}
	r.e.setActive(r.d)
}

// setActive keeps a copy of d as the operation in flight while it runs
// or rolls back, and clears it otherwise.
func (e *Engine) setActive(d *api.Deployment) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if d.Status != api.StatusRunning && d.Status != api.StatusRollingBack {
		if e.active != nil && e.active.ID == d.ID {
			e.active = nil
		}
		return
	}
	c := *d
	c.Steps = append([]api.Step(nil), d.Steps...)
	// The worker changes rungs and volume stages in place: readers get
	// their own.
	c.Rungs, c.Volumes = slices.Clone(d.Rungs), slices.Clone(d.Volumes)
	e.active = &c
}

// step journals the intent, runs fn, and journals the result. fn returns
// a detail line for the record. effect says what the step does to the
// host; recovery reads it from the record.
func (r *run) step(name string, effect api.StepEffect, revision string, rung api.RungName, fn func() (string, error)) error {
	if deaths := r.deathsIn(name, revision, rung); deaths >= maxDeathsPerStep {
		// This step kills the agent (a hook that kills its parent, a
		// runaway that gets the agent OOM-killed): running it again would
		// be a crash loop. It fails instead, and the deployment goes on
		// from that failure like from any other.
		fn = func() (string, error) {
			return "", fmt.Errorf("%w: the agent died %d times while this step ran (each time recovery found it running); "+
				"it is not run again: look at its log (`agentctl logs %s`) for what kills the agent", errKillsAgent, deaths, r.d.ID)
		}
	}
	r.d.Steps = append(r.d.Steps, api.Step{Name: name, Status: api.StepRunning, StartedAt: time.Now().UTC(), Revision: revision, Rung: rung, Effect: effect})
	i := len(r.d.Steps) - 1
	r.save()
	if err := r.e.Fault(); err != nil {
		// The intent is not on disk: the side effects must not happen.
		fn = func() (string, error) { return "", r.e.refuse() }
	}
	// Each event gets its own copy of the step: subscribers encode it on
	// their goroutines while this one goes on.
	started := r.d.Steps[i]
	r.e.bus.publish(api.Event{Type: api.EventStep, DeploymentID: r.d.ID, Step: &started})
	r.e.observe(r.d, started, StepStarted)
	detail, err := fn()
	r.e.observe(r.d, started, StepReturned)
	st := r.d.Steps[i]
	st.EndedAt = time.Now().UTC()
	st.Detail = detail
	switch {
	case errors.Is(err, errSkipped):
		st.Status = api.StepSkipped
		err = nil
	case err != nil:
		st.Status = api.StepFailed
		st.Error = err.Error()
	default:
		st.Status = api.StepSucceeded
	}
	r.d.Steps[i] = st
	r.save()
	r.e.bus.publish(api.Event{Type: api.EventStep, DeploymentID: r.d.ID, Step: &st})
	fields := []zap.Field{zap.String("deployment", r.d.ID), zap.String("step", name), zap.String("status", string(st.Status)), zap.Duration("took", st.EndedAt.Sub(st.StartedAt))}
	if err != nil {
		r.log.Warn("step failed", append(fields, zap.Error(err))...)
	} else {
		r.log.Info("step done", fields...)
	}
	return err
}

// errSkipped marks a step that had nothing to do.
var errSkipped = errors.New("skipped")

// maxDeathsPerStep is how many times the agent may die inside one step
// (same name, revision and rung) before the step is failed rather than
// run again.
const maxDeathsPerStep = 3

// errKillsAgent marks a step failed because it kept killing the agent.
var errKillsAgent = errors.New("step kills the agent")

// deathsIn counts the agent's deaths inside the step of that name,
// revision and rung, from the record.
func (r *run) deathsIn(name, revision string, rung api.RungName) int {
	n := 0
	for _, s := range r.d.Steps {
		if s.Interrupted && s.Name == name && s.Revision == revision && s.Rung == rung {
			n++
		}
	}
	return n
}

// setStatus moves the record to a status that is not the end of it.
func (r *run) setStatus(status api.DeploymentStatus) { r.transition(status, nil) }

// finish ends the deployment with a terminal status; pointers that follow
// from it change in the same transaction.
func (r *run) finish(status api.DeploymentStatus, pointers map[string]string) {
	r.transition(status, pointers)
	r.log.Info("deployment ended", zap.String("deployment", r.d.ID), zap.String("status", string(r.d.Status)), zap.String("error", r.d.Error))
}

// transition is the one place a record's status changes: checked against
// the lifecycle table (status.go), written with the pointers that follow
// from it in one journal transaction, then told to subscribers. A change
// the table does not allow is a bug; the record goes to needs_operator
// saying so, and its pointers are left alone.
func (r *run) transition(to api.DeploymentStatus, pointers map[string]string) {
	from := r.d.Status
	if !Allowed(from, to) {
		bad := errTransition{id: r.d.ID, from: from, to: to}
		r.log.Error("refused a status change", zap.Error(bad))
		r.d.Error = appendError(r.d.Error, bad.Error())
		to, pointers = api.StatusNeedsOperator, nil
	}
	r.d.Status = to
	if to.Terminal() {
		r.d.EndedAt = time.Now().UTC()
	}
	err := r.e.o.Journal.Update(func(t *journal.Tx) error {
		if err := t.PutDeployment(r.d); err != nil {
			return err
		}
		for k, v := range pointers {
			if err := t.SetPointer(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		r.e.setFault(fmt.Errorf("write the status %s of %s: %w", to, r.d.ID, err))
	}
	r.e.setActive(r.d)
	r.e.bus.publish(api.Event{Type: api.EventStatus, DeploymentID: r.d.ID, Status: to, Message: r.d.Error})
	if r.e.o.OnTransition != nil {
		r.e.o.OnTransition(*r.d, from)
	}
}

// execute runs a queued deployment or rollback to its end.
func (e *Engine) execute(ctx context.Context, d *api.Deployment) {
	r := &run{e: e, d: d, cfg: e.o.Config(), log: e.o.Log}
	if d.Kind == api.KindCodeDeploy {
		// Its hooks wait for the record's end, not the step's.
		defer e.codedeployEnded(d)
	}
	d.StartedAt = time.Now().UTC()
	// A new operation ends the watch window of the previous deployment.
	e.stopWatch()
	if d.PreviousGood == "" {
		d.PreviousGood, _ = e.o.Journal.Pointer(journal.PointerLastGood)
	}
	r.setStatus(api.StatusRunning)
	var err error
	switch d.Kind {
	case api.KindRollback:
		err = r.rollbackTo(ctx)
	case api.KindRestore:
		err = r.restoreVolumes(ctx, "")
	case api.KindRestoreRoot:
		err = r.restoreRoot(ctx, "")
	case api.KindGuard:
		err = r.guard(ctx)
	case api.KindCodeDeploy:
		err = r.codedeploy(ctx)
	default:
		err = r.deploy(ctx)
	}
	if r.e.Fault() != nil {
		r.halt()
		return
	}
	if ctx.Err() != nil {
		// The agent is stopping: the record stays in flight and the next
		// start recovers it from the journal.
		r.log.Warn("agent stopping mid-deployment; it will be recovered at next start", zap.String("deployment", d.ID))
		return
	}
	if err != nil {
		r.fail(ctx, err)
		return
	}
	if r.d.Status != api.StatusRunning {
		return
	}
	if d.Kind == api.KindRestore || d.Kind == api.KindRestoreRoot || d.Kind == api.KindGuard || d.Kind == api.KindCodeDeploy {
		// These change the host, not which revision is current (a
		// CodeDeploy revision is CodeDeploy's to track).
		r.finish(api.StatusSucceeded, nil)
		return
	}
	r.succeed()
	e.startWatch(d)
}

// succeed makes the deployment current and the last good one, and prunes.
func (r *run) succeed() {
	// Prune first, so that once the record says succeeded the retention
	// it implies is done; this deployment is about to be current.
	r.e.prune(r.cfg, r.d.ID, r.d.Release)
	r.finish(api.StatusSucceeded, map[string]string{journal.PointerCurrent: r.d.ID, journal.PointerLastGood: r.d.ID})
}

// hostChanged reports whether a step that changes the host has started
// (each step says so in its record): before that, a failure leaves the
// host as it was.
func (r *run) hostChanged() bool {
	return slices.ContainsFunc(r.d.Steps, api.Step.ChangesHost)
}

// fail decides what a failure leads to: a plain failure when the host was
// not changed or automatic rollback is off, otherwise the ladder. A
// rollback never triggers another rollback.
func (r *run) fail(ctx context.Context, cause error) {
	r.d.Error = cause.Error()
	switch {
	case !r.hostChanged() || errors.Is(cause, errGuardAbandoned):
		r.finish(api.StatusFailed, nil)
	case r.d.Kind == api.KindCodeDeploy:
		r.codedeployFailed(cause)
	case r.d.Kind == api.KindRestore || r.d.Kind == api.KindRestoreRoot:
		r.d.Error = fmt.Sprintf("restore of checkpoint %s failed after it changed the host: %v; look at `agentctl show %s`, fix the cause, then run `agentctl checkpoint restore %s` again (each stage is safe to repeat)",
			r.d.Checkpoint, cause, r.d.ID, r.d.Checkpoint)
		r.finish(api.StatusNeedsOperator, nil)
	case r.d.Kind == api.KindRollback:
		r.d.Error = fmt.Sprintf("rollback failed: %v; the host may be half-installed: fix the cause, then run `agentctl rollback --to <revision>` or deploy a fixed revision", cause)
		r.finish(api.StatusNeedsOperator, nil)
	case !r.automatic():
		r.d.Error = fmt.Sprintf("%v; %s", cause, automaticOff)
		r.finish(api.StatusFailed, nil)
	default:
		r.climb(ctx, r.firstRung())
	}
}

// automatic reports whether a failure may climb the ladder by itself.
func (r *run) automatic() bool { return r.cfg.Rollback.Automatic && len(r.cfg.Rollback.Ladder) > 0 }

// automaticOff is the hint when it may not.
const automaticOff = "automatic rollback is off (rollback.automatic / rollback.ladder): run `agentctl rollback` to restore the last good revision"

// firstRung is where a climb for this operation starts: a guarded
// package upgrade is not a revision, so it starts at the volumes.
func (r *run) firstRung() api.RungName {
	if r.d.Kind == api.KindGuard {
		return rung.Volumes
	}
	return rung.Revision
}
