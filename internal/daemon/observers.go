package daemon

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/awsconf"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/fleet"
	"github.com/rollback-agent/rollback-agent/internal/health"
	"github.com/rollback-agent/rollback-agent/internal/metrics"
	"github.com/rollback-agent/rollback-agent/internal/notify"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
	"github.com/rollback-agent/rollback-agent/internal/version"
)

// observers are what the agent tells the world beyond its socket: the
// counters of the metrics, the notifications, this host's document in
// S3 and the metrics' listener and textfile. All of them hang off the
// engine's one transition hook (onTransition) and the health reports; a
// failure of any of them is logged and counted and never reaches a
// deployment. They are built from the config at start (a reload does not
// change them).
type observers struct {
	counters *metrics.Counters
	notify   *notify.Dispatcher
	fleet    *fleet.Publisher
	textfile chan struct{}

	mu sync.Mutex
	// healthy and healthSince: the last assessment's verdict and since
	// when the host has been so (the host document's health.since).
	healthy     *bool
	healthSince time.Time
}

// newObservers builds the observers the config asks for; Run starts them.
func (d *Daemon) newObservers(cfg *config.Config, awsCfg aws.Config) (*observers, error) {
	o := &observers{counters: metrics.NewCounters(), textfile: make(chan struct{}, 1)}
	var targets []notify.Target
	if cfg.Notify.SNSTopicARN != "" {
		targets = append(targets, notify.SNS{Client: sns.NewFromConfig(awsCfg), Topic: cfg.Notify.SNSTopicARN})
	}
	if cfg.Notify.EventBridgeBus != "" {
		targets = append(targets, notify.EventBridge{Client: eventbridge.NewFromConfig(awsCfg), Bus: cfg.Notify.EventBridgeBus})
	}
	if len(cfg.Notify.Command) > 0 {
		targets = append(targets, notify.Command{Argv: cfg.Notify.Command, Timeout: cfg.Notify.CommandTimeout})
	}
	o.initSeries(cfg, targets)
	if len(targets) > 0 {
		o.notify = notify.New(notify.Options{Targets: targets, Attempts: cfg.Notify.Attempts, Log: d.log,
			OnResult: func(target string, _ notify.Event, err error) {
				if err != nil {
					o.counters.Add(metrics.NotificationFailures, "target", target)
				} else {
					o.counters.Add(metrics.Notifications, "target", target)
				}
				o.kickTextfile()
			}})
		d.log.Info("notifications on", zap.String("targets", cfg.Notify.Targets()))
	}
	if cfg.Sources.Channel != "" && cfg.Fleet.Publish {
		layout, _, _, err := release.ParseChannelURL(cfg.Sources.Channel)
		if err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
		stsc := sts.NewFromConfig(awsCfg)
		s3c := awsconf.S3(awsCfg)
		p, err := fleet.NewPublisher(fleet.PublisherOptions{
			Layout: layout, Heartbeat: cfg.Fleet.Heartbeat, Log: d.log,
			Name: func(ctx context.Context) (string, error) {
				out, err := stsc.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
				if err != nil {
					return "", fmt.Errorf("sts:GetCallerIdentity: %w", err)
				}
				return fleet.Name(aws.ToString(out.UserId), d.identity().InstanceID), nil
			},
			S3:              func(context.Context) (fleet.WriterAPI, error) { return s3c, nil },
			Build:           d.hostDoc,
			BeforeHeartbeat: d.heartbeatHealth,
			OnPass: func(wrote bool, err error) {
				switch {
				case err != nil:
					o.counters.Add(metrics.HostDocumentWrites, "result", "failed")
					d.sourceError("fleet")(err)
				case wrote:
					o.counters.Add(metrics.HostDocumentWrites, "result", "written")
					d.clearSourceError("fleet")
				}
			},
		})
		if err != nil {
			return nil, err
		}
		o.fleet = p
	}
	return o, nil
}

// initSeries makes the series an alert would watch exist at zero from
// the start: an increase from nothing to one is not seen as one.
func (o *observers) initSeries(cfg *config.Config, targets []notify.Target) {
	c := o.counters
	for _, st := range []api.DeploymentStatus{api.StatusSucceeded, api.StatusFailed, api.StatusRolledBack, api.StatusNeedsOperator} {
		c.Init(metrics.Deployments, "kind", string(api.KindDeploy), "status", string(st))
	}
	for _, g := range cfg.Rollback.Ladder {
		for _, res := range []api.StepStatus{api.StepSucceeded, api.StepFailed} {
			c.Init(metrics.Rollbacks, "rung", string(g), "result", string(res))
		}
	}
	c.Init(metrics.CheckpointFailures, "reason", "deploy")
	for _, t := range targets {
		c.Init(metrics.Notifications, "target", t.Name())
		c.Init(metrics.NotificationFailures, "target", t.Name())
	}
	if cfg.Sources.Channel != "" && cfg.Fleet.Publish {
		c.Init(metrics.HostDocumentWrites, "result", "written")
		c.Init(metrics.HostDocumentWrites, "result", "failed")
	}
}

// run starts the observers that work in the background.
func (d *Daemon) runObservers(ctx context.Context, cfg *config.Config) error {
	o := d.svc.obs
	if o.notify != nil {
		d.svc.wg.Go(func() { o.notify.Run(ctx) })
	}
	if o.fleet != nil {
		d.svc.wg.Go(func() { o.fleet.Run(ctx) })
	}
	if cfg.Metrics.Listen != "" {
		l, err := metrics.Listen(cfg.Metrics.Listen, d.Metrics, d.log)
		if err != nil {
			return err
		}
		d.log.Info("metrics served over HTTP", zap.String("url", "http://"+l.Addr()+"/metrics"))
		d.svc.wg.Go(func() {
			if err := l.Serve(); err != nil {
				d.log.Error("metrics listener stopped", zap.Error(err))
			}
		})
		d.svc.wg.Go(func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = l.Close(sctx)
		})
	}
	if cfg.Metrics.Textfile != "" {
		d.svc.wg.Go(func() { d.textfileLoop(ctx, cfg.Metrics.Textfile, cfg.Metrics.TextfileInterval) })
	}
	return nil
}

// textfileLoop keeps the node_exporter textfile current: on every status
// change and notification, and every interval (the gauges move too).
func (d *Daemon) textfileLoop(ctx context.Context, path string, every time.Duration) {
	o := d.svc.obs
	tick := time.NewTicker(every)
	defer tick.Stop()
	failing := false
	for {
		err := metrics.WriteTextfile(path, metrics.Own(d.Metrics(ctx)))
		switch {
		case err != nil && !failing:
			d.log.Error("metrics textfile not written", zap.Error(err))
		case err == nil && failing:
			d.log.Info("metrics textfile written again", zap.String("path", path))
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-o.textfile:
		}
	}
}

func (o *observers) kickTextfile() {
	select {
	case o.textfile <- struct{}{}:
	default:
	}
}

// onTransition is the engine's OnTransition: every status change of a
// record, once journaled. It counts, notifies and republishes; none of
// it blocks the engine.
func (d *Daemon) onTransition(dep api.Deployment, from api.DeploymentStatus) {
	o := d.svc.obs
	if from != dep.Status && dep.Status.Terminal() {
		o.counters.Add(metrics.Deployments, "kind", string(dep.Kind), "status", string(dep.Status))
		if s := dep.FailedStep(); s != nil && s.Name == "Checkpoint" && dep.Status == api.StatusFailed {
			o.counters.Add(metrics.CheckpointFailures, "reason", checkpointReason(dep.Kind))
		}
		if dep.Status == api.StatusRolledBack || dep.Status == api.StatusNeedsOperator {
			for _, g := range dep.Rungs {
				o.counters.Add(metrics.Rollbacks, "rung", string(g.Name), "result", string(g.Status))
			}
		}
	}
	for _, ev := range notify.FromTransition(d.notifyHost(), dep, from, time.Now()) {
		o.notify.Publish(ev)
	}
	if o.fleet != nil {
		o.fleet.Kick()
	}
	o.kickTextfile()
}

// checkpointReason is the reason tag the engine gives a kind's checkpoint.
func checkpointReason(k api.DeploymentKind) string {
	switch k {
	case api.KindGuard:
		return "guard"
	case api.KindCodeDeploy:
		return "codedeploy"
	}
	return "deploy"
}

// checkpointFailed counts and tells a checkpoint that failed outside any
// operation (agentctl checkpoint create, the package-manager hooks).
func (d *Daemon) checkpointFailed(reason, label string, err error) {
	o := d.svc.obs
	o.counters.Add(metrics.CheckpointFailures, "reason", reason)
	o.notify.Publish(notify.CheckpointFailure(d.notifyHost(), reason, label, err, time.Now()))
	o.kickTextfile()
}

func (d *Daemon) notifyHost() notify.Host {
	cfg := d.cfg.Load()
	group := cfg.DeploymentGroup
	if group == "" {
		group = cfg.Application
	}
	return notify.Host{Application: cfg.Application, DeploymentGroup: group, AgentVersion: version.Get().Version, Identity: d.identity()}
}

// healthChanged follows the assessments for the host document: since
// when the host has been healthy (or not).
func (o *observers) healthChanged(sum api.HealthSummary) {
	o.mu.Lock()
	if o.healthy == nil || *o.healthy != sum.Healthy {
		h := sum.Healthy
		o.healthy, o.healthSince = &h, sum.AssessedAt
	}
	o.mu.Unlock()
	if o.fleet != nil {
		o.fleet.Kick()
	}
}

func (o *observers) since() time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.healthSince
}

// heartbeatHealth runs one round of the health checks at a heartbeat, when
// nothing else assesses the host (no operation, no watch window): the
// host document's health stays current between deployments. It only
// reports; it never rolls anything back.
func (d *Daemon) heartbeatHealth(ctx context.Context) {
	if !d.idle() {
		return
	}
	cs, _, err := d.checkers()
	if err != nil || len(cs) == 0 {
		return
	}
	results := health.RunAll(ctx, cs)
	if ctx.Err() == nil {
		d.onHealth(roundSummary(results, "at the heartbeat"))
	}
}

// idle reports whether nothing assesses the host now: no operation in
// flight, no watch window open.
func (d *Daemon) idle() bool {
	if d.svc == nil || d.svc.engine == nil || d.svc.engine.Active() != nil {
		return false
	}
	id, _ := d.svc.engine.Watching()
	return id == ""
}

// roundSummary is one round of checks as an assessment.
func roundSummary(results []api.CheckResult, when string) api.HealthSummary {
	sum := api.HealthSummary{Healthy: true, AssessedAt: time.Now().UTC(), Checks: results, Reason: "healthy: every check passed " + when}
	var failed []string
	for _, r := range results {
		if !r.Healthy {
			sum.Healthy = false
			failed = append(failed, fmt.Sprintf("%s: %s", r.Name, firstLine(r.Output)))
		}
	}
	if !sum.Healthy {
		sum.Reason = "unhealthy " + when + ": " + strings.Join(failed, "; ")
	}
	return sum
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
