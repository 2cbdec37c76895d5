package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/awsconf"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/hooks"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/releases"
	"github.com/rollback-agent/rollback-agent/internal/server"
	"github.com/rollback-agent/rollback-agent/internal/source"
)

// services are the parts that exist once the agent knows who it is.
type services struct {
	ctx         context.Context
	engine      *engine.Engine
	checkpoints *checkpoint.Manager
	ec2         *ec2.Client
	awsCfg      aws.Config
	s3          func(context.Context) (*s3.Client, error)
	obs         *observers
	wg          sync.WaitGroup
	// inbox and channel are the running sources (nil: off); only the
	// agent's loop starts and stops them.
	inbox, channel *runningSource
	// contain is where hooks' cgroups are made, or why there are none.
	contain *hooks.Containment
}

// startServices builds the engine and the sources and starts them.
func (d *Daemon) startServices(ctx context.Context, cfg *config.Config, awsCfg aws.Config) error {
	rel, err := releases.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	d.rebuildInstalled(rel)
	groupID, err := d.groupID()
	if err != nil {
		return err
	}
	var s3once sync.Once
	var s3c *s3.Client
	fetcher := &source.Fetcher{S3: func(context.Context) (*s3.Client, error) {
		s3once.Do(func() { s3c = awsconf.S3(awsCfg) })
		return s3c, nil
	}, Limits: func() config.Limits { return d.cfg.Load().Limits },
		Keys: d.keys, App: func() string { return d.cfg.Load().Application }}
	ec2c := ec2.NewFromConfig(awsCfg)
	// Before the engine starts any hook: each runs in a cgroup of its own
	// so that what it leaves behind can be ended whatever it does to its
	// process group (issue 17.17).
	var contain *hooks.Containment
	if cfg.Limits.HookCgroup == "" {
		contain = hooks.DetectContainment(cfg.StateDir)
	} else if c, err := hooks.ContainUnder(cfg.Limits.HookCgroup); err == nil {
		contain = c
	} else {
		// No silent fallback to another place: no cgroups, said loudly.
		contain = hooks.ProcessGroupsOnly(fmt.Sprintf("limits.hook_cgroup %s: %v", cfg.Limits.HookCgroup, err))
	}
	if contain.On() {
		d.log.Info("hook containment", zap.String("cgroups", contain.Root()))
	} else {
		d.log.Warn("hook containment", zap.String("warning", contain.Warning()))
	}
	d.svc = &services{ctx: ctx, awsCfg: awsCfg, ec2: ec2c, s3: fetcher.S3, contain: contain}
	if d.svc.obs, err = d.newObservers(cfg, awsCfg); err != nil {
		return err
	}
	cps := checkpoint.New(checkpoint.Options{
		EC2: ec2c, Identity: d.identity, Config: d.cfg.Load, Cache: d.journal, Log: d.log,
		OnChange: d.checkpointsChanged,
		Protected: func() map[string]string {
			var op *api.Deployment
			if d.svc.engine != nil {
				op = d.svc.engine.Active()
			}
			return engine.ProtectedCheckpoints(d.journal, op)
		},
	})
	d.svc.checkpoints = cps
	d.deps = d.healthDeps()
	d.mu.Lock()
	bootID := d.bootID
	d.mu.Unlock()
	eng, err := engine.New(engine.Options{
		Config: d.cfg.Load, Journal: d.journal, Releases: rel, StateDir: cfg.StateDir,
		Log: d.log, Fetcher: fetcher, GroupID: groupID, Checkpoints: cps,
		RefreshIdentity: d.refreshIdentity, Health: d.checkers, OnHealth: d.onHealth, BootID: bootID, Gate: d.gate,
		Contain:      contain,
		OnTransition: d.onTransition,
	})
	if err != nil {
		return err
	}
	d.svc.engine = eng
	// Before ready: a root restore finishing on this start is on record
	// by the time a client can ask about it.
	d.setPhase(api.StateStarting, "looking for an unfinished root restore in the instance's tags")
	eng.Prepare(ctx)
	d.svc.wg.Add(2)
	go func() {
		defer d.svc.wg.Done()
		cps.Run(ctx)
	}()
	go func() {
		// The journal only caches the catalogue: rebuild it from AWS.
		defer d.svc.wg.Done()
		if _, err := cps.Catalogue(ctx); err != nil && ctx.Err() == nil {
			d.sourceError("checkpoints")(err)
		}
	}()
	d.svc.wg.Add(1)
	go func() {
		defer d.svc.wg.Done()
		if err := eng.Run(ctx); err != nil {
			d.log.Error("deployment engine stopped", zap.Error(err))
		}
	}()
	// sd_notify STATUS follows the deployments: `systemctl status` shows
	// what the agent is doing right now.
	events, stop := eng.Subscribe("")
	d.svc.wg.Add(1)
	go func() {
		defer d.svc.wg.Done()
		defer stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-events:
				d.notify.status(d.summary())
			}
		}
	}()
	d.mu.Lock()
	newBoot := d.newBoot
	d.mu.Unlock()
	if newBoot && cfg.Boot.Assess {
		eng.BootAssess()
	}
	if err := d.startSources(cfg); err != nil {
		return err
	}
	d.srv.Handle("GET "+api.PathDoctor, d.doctorHandler())
	d.codedeployRoutes(eng)
	return d.runObservers(ctx, cfg)
}

// clearSourceError drops a source's problem once it works again.
func (d *Daemon) clearSourceError(name string) {
	d.mu.Lock()
	delete(d.sourceErrs, name)
	d.mu.Unlock()
}

func (d *Daemon) sourceError(name string) func(error) {
	return func(err error) {
		d.log.Warn("source problem", zap.String("source", name), zap.Error(err))
		d.mu.Lock()
		d.sourceErrs[name] = err.Error()
		d.mu.Unlock()
	}
}

// groupID is DEPLOYMENT_GROUP_ID for hooks: a UUID made once per state dir.
func (d *Daemon) groupID() (string, error) {
	id, err := d.journal.GetMeta("deployment_group_id")
	if err != nil || id != "" {
		return id, err
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	id = fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
	return id, d.journal.SetMeta("deployment_group_id", id)
}

// Deploy implements server.Backend.
func (d *Daemon) Deploy(_ context.Context, req api.DeployRequest) (*api.Deployment, error) {
	src, err := source.Parse(req.Source)
	if err != nil {
		return nil, server.BadRequest(err)
	}
	src.AllowUnsigned = req.AllowUnsigned
	dep, err := d.svc.engine.Submit(engine.Request{Source: src, Revision: req.Revision, Trigger: "api", IgnoreApplicationStopFailures: req.IgnoreApplicationStopFailures})
	return dep, engineErr(err)
}

// engineErr maps the engine's refusals to HTTP at the service edge: one
// that stopped taking work (it cannot record it) is 503, the agent
// answers but cannot do this until it is restarted with the cause fixed;
// one whose record an operator must look at first (a lost journal) is
// 409, until `agentctl acknowledge`.
func engineErr(err error) error {
	if errors.Is(err, engine.ErrStopped) {
		return &server.Error{Status: http.StatusServiceUnavailable, Code: api.CodeUnavailable, Err: err}
	}
	return needsOperator(err)
}

// Rollback implements server.Backend.
func (d *Daemon) Rollback(_ context.Context, req api.RollbackRequest) (*api.Deployment, error) {
	dep, err := d.svc.engine.Rollback(req.To)
	if errors.Is(err, engine.ErrNoTarget) {
		return nil, server.Conflict(err)
	}
	return dep, engineErr(err)
}

// Deployments implements server.Backend.
func (d *Daemon) Deployments(limit int) ([]api.Deployment, error) {
	return d.journal.Deployments(limit)
}

// Deployment implements server.Backend.
func (d *Daemon) Deployment(id string) (*api.Deployment, error) {
	// The operation in flight is newest in memory (after the journal
	// failed, only there).
	if op := d.svc.engine.Active(); op != nil && op.ID == id && d.engineFault() != nil {
		return op, nil
	}
	dep, err := d.journal.Deployment(id)
	if errors.Is(err, journal.ErrNotFound) {
		return nil, server.NotFound(fmt.Errorf("no deployment %s (see agentctl history)", id))
	}
	return dep, err
}

// Subscribe implements server.Backend.
func (d *Daemon) Subscribe(id string) (<-chan api.Event, func()) { return d.svc.engine.Subscribe(id) }

// LogDir implements server.Backend.
func (d *Daemon) LogDir(id string) string { return d.svc.engine.LogDir(id) }
