package engine

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/engine/rung"
	"github.com/rollback-agent/rollback-agent/internal/health"
	"github.com/rollback-agent/rollback-agent/internal/journal"
)

// watchState is the watch window of the last successful deployment.
type watchState struct {
	id     string
	until  time.Time
	cancel context.CancelFunc
}

// job is work health asks the worker for.
type job struct {
	kind    string // "watch-failed", "boot"
	id      string
	reason  string
	summary *api.HealthSummary
	// assessment is which assessment found it unhealthy.
	assessment string
}

// Watching returns the deployment whose watch window is open and when it
// closes ("" when none is).
func (e *Engine) Watching() (string, time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.watch == nil {
		return "", time.Time{}
	}
	return e.watch.id, e.watch.until
}

func (e *Engine) stopWatch() {
	e.mu.Lock()
	w := e.watch
	e.watch = nil
	e.mu.Unlock()
	if w != nil {
		w.cancel()
	}
}

// startWatch keeps assessing d for health.watch_window after it
// succeeded. Unhealthy inside the window rolls d back exactly like a
// failed deployment (CodeDeploy's alarm-based rollback, but also after
// the deployment ended).
func (e *Engine) startWatch(d *api.Deployment) {
	cfg := e.o.Config()
	if e.o.Health == nil || cfg.Health.WatchWindow <= 0 {
		return
	}
	checkers, policy, err := e.o.Health()
	if err != nil || len(checkers) == 0 {
		return
	}
	e.stopWatch()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watchState{id: d.ID, until: time.Now().Add(cfg.Health.WatchWindow), cancel: cancel}
	e.mu.Lock()
	e.watch = w
	e.mu.Unlock()
	e.o.Log.Info("watch window open", zap.String("deployment", d.ID), zap.Duration("for", cfg.Health.WatchWindow))
	go func() {
		a := health.Watch(ctx, checkers, policy, cfg.Health.WatchWindow, func(round int, results []api.CheckResult) {
			e.bus.publish(api.Event{Type: api.EventMessage, DeploymentID: d.ID, Message: "watch " + roundLine(round, results)})
		})
		e.mu.Lock()
		mine := e.watch == w
		if mine {
			e.watch = nil
		}
		e.mu.Unlock()
		sum := a.Summary()
		if a.Interrupted || !mine {
			return
		}
		e.reportHealth(sum)
		if a.Healthy {
			e.o.Log.Info("watch window closed healthy", zap.String("deployment", d.ID))
			return
		}
		e.o.Log.Warn("unhealthy in the watch window: rolling back", zap.String("deployment", d.ID), zap.String("reason", a.Reason))
		e.jobs <- job{kind: "watch-failed", id: d.ID, reason: "unhealthy in the watch window: " + a.Reason, summary: &sum, assessment: api.AssessmentWatchWindow}
		e.kick()
	}()
}

// BootAssess asks the worker to assess the current revision after a boot.
func (e *Engine) BootAssess() {
	e.jobs <- job{kind: "boot"}
	e.kick()
}

func (e *Engine) runJob(ctx context.Context, j job) {
	switch j.kind {
	case "watch-failed":
		e.rollBackSucceeded(ctx, j.id, j.reason, j.summary, j.assessment)
	case "boot":
		e.bootAssess(ctx)
	}
}

// rollBackSucceeded climbs the ladder for a deployment that had
// succeeded, if it is still current (a newer one would have ended its
// window).
func (e *Engine) rollBackSucceeded(ctx context.Context, id, reason string, sum *api.HealthSummary, assessment string) {
	cur, _ := e.o.Journal.Pointer(journal.PointerCurrent)
	d, err := e.o.Journal.Deployment(id)
	if err != nil || cur != id || d.Status != api.StatusSucceeded {
		e.o.Log.Info("not rolling back: the deployment is no longer current", zap.String("deployment", id))
		return
	}
	r := &run{e: e, d: d, cfg: e.o.Config(), log: e.o.Log}
	r.d.Error = reason
	r.d.Health = sum
	r.d.Assessment = assessment
	switch {
	case d.Kind == api.KindRollback:
		// A rollback never triggers another rollback: climbing from here
		// would go back toward the revision that was rolled away from.
		r.d.Error = fmt.Sprintf("%s; this was a rollback, and a rollback never triggers another one: look at `agentctl show %s`, fix the cause, then run `agentctl rollback --to <revision>` or `agentctl checkpoint restore`",
			reason, d.ID)
		r.finish(api.StatusNeedsOperator, nil)
	case !r.automatic():
		// The revision stays installed and current; a human decides.
		r.d.Error = reason + "; " + automaticOff
		r.finish(api.StatusNeedsOperator, nil)
	default:
		r.climb(ctx, rung.Revision)
	}
}

// bootAssess assesses the current revision on the first start of a boot;
// failing it starts the ladder from the revision rung.
func (e *Engine) bootAssess(ctx context.Context) {
	d := e.current()
	if d == nil || e.o.Health == nil {
		return
	}
	checkers, policy, err := e.o.Health()
	if err != nil || len(checkers) == 0 {
		return
	}
	e.o.Log.Info("assessing the current revision after boot", zap.String("deployment", d.ID), zap.String("revision", d.Revision))
	a := health.Assess(ctx, checkers, policy, nil)
	sum := a.Summary()
	e.reportHealth(sum)
	if a.Healthy || a.Interrupted {
		return
	}
	e.rollBackSucceeded(ctx, d.ID, fmt.Sprintf("unhealthy after boot %s: %s", e.o.BootID, a.Reason), &sum, api.AssessmentBoot)
}
