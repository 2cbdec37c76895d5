package daemon

import (
	"context"
	"errors"
	"sync"

	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/health"
	"github.com/rollback-agent/rollback-agent/internal/server"
)

// healthDeps builds the clients checks need, lazily: a host without
// CloudWatch checks needs no CloudWatch permission.
func (d *Daemon) healthDeps() health.Deps {
	var once sync.Once
	var cw *cloudwatch.Client
	return health.Deps{CloudWatch: func(context.Context) (health.CloudWatchAPI, error) {
		once.Do(func() { cw = cloudwatch.NewFromConfig(d.svc.awsCfg) })
		return cw, nil
	}}
}

// checkers builds the health checkers of the current config.
func (d *Daemon) checkers() ([]health.Checker, health.Policy, error) {
	cfg := d.cfg.Load()
	cs, err := health.New(cfg.Health.Checks, d.deps)
	return cs, health.PolicyFrom(cfg.Health), err
}

func (d *Daemon) onHealth(sum api.HealthSummary) {
	d.mu.Lock()
	d.lastHealth = &sum
	d.mu.Unlock()
	if d.svc != nil && d.svc.obs != nil {
		d.svc.obs.healthChanged(sum)
	}
	d.notify.status(d.summary())
}

// Health implements server.Backend: every check once, now; one round
// answers everyone who asks while it runs, and a second after. On an idle
// host (no operation, no watch window: nothing else assesses it) the
// result becomes the last known health, as a heartbeat round's does.
func (d *Daemon) Health(ctx context.Context) (*api.HealthReport, error) {
	return d.healthRuns.get(ctx, d.healthRound)
}

func (d *Daemon) healthRound(ctx context.Context) (*api.HealthReport, error) {
	cs, _, err := d.checkers()
	if err != nil {
		return nil, err
	}
	results := health.RunAll(ctx, cs)
	rep := &api.HealthReport{SchemaVersion: api.SchemaVersion, Healthy: true, Checks: results}
	for _, r := range results {
		if !r.Healthy {
			rep.Healthy = false
		}
	}
	if rep.Checks == nil {
		rep.Checks = []api.CheckResult{}
	}
	if len(results) > 0 && ctx.Err() == nil && d.idle() {
		d.onHealth(roundSummary(results, "now"))
	}
	return rep, nil
}

// Guard implements server.Backend.
func (d *Daemon) Guard(ctx context.Context, req api.GuardRequest) (*api.GuardStarted, error) {
	dep, err := d.svc.engine.Guard(ctx, req.Label)
	if errors.Is(err, engine.ErrNoCheckpoints) {
		return nil, server.Conflict(err)
	}
	if err != nil {
		return nil, engineErr(err)
	}
	return &api.GuardStarted{SchemaVersion: api.SchemaVersion, ID: dep.ID, Checkpoint: dep.Checkpoint}, nil
}

// GuardDone implements server.Backend.
func (d *Daemon) GuardDone(_ context.Context, id string, done api.GuardDone) error {
	err := d.svc.engine.GuardDone(id, done.ExitCode)
	if errors.Is(err, engine.ErrUnknownGuard) {
		return server.NotFound(err)
	}
	return err
}
