package engine

import (
	"time"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/releases"
)

// hookSkip says whether a lifecycle event has nothing to run for rel, and
// why (CodeDeploy reports such an event as a no-op).
func hookSkip(event string, rel *releases.Release) (string, bool) {
	switch {
	case rel == nil:
		return "no revision installed", true
	case len(rel.AppSpec.Hooks[event]) == 0:
		return "no scripts", true
	}
	return "", false
}

// skipStep records a step that has nothing to do with one journal write:
// there is no side effect to write ahead of, and a crash before the write
// leaves the journal as if the agent died before the step began, which
// recovery treats the same way. A rollback between revisions without
// traffic or stop hooks skips most of its lifecycle events; each saves one
// fsync'd commit this way.
func (r *run) skipStep(name, revision string, rung api.RungName, detail string) {
	now := time.Now().UTC()
	r.d.Steps = append(r.d.Steps, api.Step{Name: name, Status: api.StepSkipped, StartedAt: now, EndedAt: now, Revision: revision, Rung: rung, Detail: detail, Effect: api.EffectHost})
	st := r.d.Steps[len(r.d.Steps)-1]
	r.save()
	r.e.bus.publish(api.Event{Type: api.EventStep, DeploymentID: r.d.ID, Step: &st})
	r.log.Info("step done", zap.String("deployment", r.d.ID), zap.String("step", name), zap.String("status", string(st.Status)), zap.Duration("took", 0))
}
