package daemon

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
	"github.com/rollback-agent/rollback-agent/internal/version"
)

// Status implements server.Backend.
func (d *Daemon) Status(ctx context.Context) api.Status {
	cfg := d.cfg.Load()
	v := version.Get()
	d.mu.Lock()
	defer d.mu.Unlock()
	st := api.Status{
		SchemaVersion: api.SchemaVersion,
		Agent: api.Agent{
			Version: v.Version, Commit: v.Commit, GoVersion: v.GoVersion,
			PID: os.Getpid(), StartedAt: d.started.UTC(), BootID: d.bootID,
		},
		Application: cfg.Application,
		State:       d.state,
		Summary:     d.summaryLocked(),
		Identity:    d.ident,
		Config:      api.ConfigSummary{Path: d.cfgPath, LoadedAt: d.cfgLoadedAt.UTC(), ReloadError: d.reloadErr},
	}
	if st.Identity.Volumes == nil {
		st.Identity.Volumes = []api.Volume{}
	}
	d.deploymentStatus(&st)
	d.troubleStatus(&st)
	if d.svc != nil && d.svc.checkpoints != nil {
		st.Checkpoints = d.svc.checkpoints.Summary()
	}
	st.Health = d.lastHealth
	if d.svc != nil && d.svc.engine != nil {
		if id, until := d.svc.engine.Watching(); id != "" {
			st.Watch = &api.WatchWindow{DeploymentID: id, Until: until.UTC()}
		}
	}
	if len(d.sources) > 0 {
		st.Sources = make(map[string]api.SourceState, len(d.sources))
		for name, src := range d.sources {
			if e := d.sourceErrs[name]; e != "" && src.LastError == "" {
				src.LastError = e
			}
			st.Sources[name] = src
		}
	}
	for name, e := range d.sourceErrs {
		st.Warnings = append(st.Warnings, fmt.Sprintf("source %s: %s", name, e))
	}
	for _, vol := range d.ident.Volumes {
		if vol.LinuxDeviceError != "" {
			st.Warnings = append(st.Warnings, fmt.Sprintf("volume %s (%s): %s", vol.VolumeID, vol.DeviceName, vol.LinuxDeviceError))
		}
	}
	if d.reloadErr != "" {
		st.Warnings = append(st.Warnings, "config reload failed, previous config still in effect: "+d.reloadErr)
	}
	return st
}

func (d *Daemon) summary() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.summaryLocked()
}

// summaryLocked is the one-sentence status shared by sd_notify STATUS,
// `agentctl status` and the API.
func (d *Daemon) summaryLocked() string {
	app := d.cfg.Load().Application
	switch d.state {
	case api.StateStarting:
		return fmt.Sprintf("Starting: %s.", d.phase)
	case api.StateStopping:
		return "Stopping."
	}
	if d.journal != nil {
		if t := d.journal.Trouble(); t != nil {
			if t.Kind == journal.TroubleJournalDamaged {
				return fmt.Sprintf("NEEDS OPERATOR: %s; nothing is deployed until it is recovered with `agentctl recover journal` (see agentctl status).", t.What)
			}
			return fmt.Sprintf("NEEDS OPERATOR: %s; nothing is deployed until `agentctl acknowledge %s` (see agentctl status).", t.What, t.Kind)
		}
	}
	// The engine stopped (a write or a record of the journal failed):
	// systemctl status must not say idle.
	if fault := d.engineFault(); fault != nil {
		return fmt.Sprintf("NEEDS OPERATOR: the agent stopped taking work: %s; %s.", fault, engine.FaultHint(fault, d.cfg.Load().StateDir))
	}
	id := d.ident
	where := id.InstanceID
	if id.AvailabilityZone != "" {
		where += " (" + id.AvailabilityZone + ")"
	}
	cur, op, attention := d.deploymentFacts()
	var s string
	switch {
	case op != nil:
		verb := "Deploying"
		if op.Kind == api.KindRollback {
			verb = "Rolling back to"
		}
		if op.Status == api.StatusRollingBack {
			verb = "Rolling back from"
		}
		step := "starting"
		if n := len(op.Steps); n > 0 {
			step = op.Steps[n-1].Name
		}
		s = fmt.Sprintf("%s %s revision %s (%s) on %s: %s", verb, app, op.Revision, op.ID, where, step)
	case attention != nil:
		s = fmt.Sprintf("NEEDS OPERATOR: deployment %s of %s ended needs_operator on %s; see agentctl show %s", attention.ID, app, where, attention.ID)
	case cur != nil:
		s = fmt.Sprintf("Idle: %s revision %s (%s) is current on %s", app, cur.Revision, cur.ID, where)
		if d.svc != nil && d.svc.engine != nil {
			if id, until := d.svc.engine.Watching(); id != "" {
				s = fmt.Sprintf("Watching: %s revision %s (%s) on %s, health watch window open for %s more", app, cur.Revision, id, where, time.Until(until).Round(time.Second))
			}
		}
	default:
		s = fmt.Sprintf("Idle: %s on %s, no revision installed yet; %d volume(s) known", app, where, len(id.Volumes))
	}
	if h := d.lastHealth; h != nil && op == nil && attention == nil {
		if h.Healthy {
			s += "; healthy"
		} else {
			s += "; UNHEALTHY: " + h.Reason
		}
	}
	if d.reloadErr != "" {
		s += "; config reload failed, previous config in effect"
	}
	return s + "."
}

// reload re-reads the config on SIGHUP. A bad file changes nothing: the
// previous config stays in effect and the problems are logged and shown
// in status. A trusted key that cannot be read is such a problem: trust
// is never half applied. Otherwise every setting applies at once: trust
// (the shared Keyring is replaced, so a removed key is refused by the
// next verification anywhere, queued deployments included), the sources
// (restarted when their settings changed), and everything read from the
// config at each use. Settings that only take effect at start are kept
// and flagged.
func (d *Daemon) reload() {
	d.notify.reloading("Reloading " + d.cfgPath + ".")
	old := d.cfg.Load()
	next, warnings, err := config.Load(d.cfgPath)
	for _, w := range warnings {
		d.log.Warn("config warning", zap.String("warning", w))
	}
	var keys *release.Keyring
	if err == nil {
		if keys, err = release.NewKeyring(next.Trust.PublicKeys, next.Trust.RequireSignature); err != nil {
			err = fmt.Errorf("%s: %w (the previous trust stays in effect)", d.cfgPath, err)
		}
	}
	d.mu.Lock()
	if err != nil {
		d.reloadErr = err.Error()
		d.mu.Unlock()
		d.log.Error("config reload failed; keeping the previous config", zap.Error(err))
		d.notify.ready(d.summary())
		return
	}
	d.reloadErr = ""
	d.cfgLoadedAt = time.Now()
	d.mu.Unlock()
	var fixed []string
	keep := func(name string, oldV, newV *string) {
		if *oldV != *newV {
			fixed = append(fixed, name)
			*newV = *oldV
		}
	}
	keep("state_dir", &old.StateDir, &next.StateDir)
	keep("socket", &old.Socket, &next.Socket)
	keep("socket_group", &old.SocketGroup, &next.SocketGroup)
	keep("instance_id", &old.InstanceID, &next.InstanceID)
	keep("region", &old.Region, &next.Region)
	keep("limits.hook_cgroup", &old.Limits.HookCgroup, &next.Limits.HookCgroup)
	if len(fixed) > 0 {
		d.log.Warn("these settings take effect only on restart (systemctl restart rollback-agent)",
			zap.String("settings", strings.Join(fixed, ", ")))
	}
	_ = d.level.UnmarshalText([]byte(next.LogLevel))
	d.keys.Replace(keys)
	d.cfg.Store(next)
	if d.svc != nil && d.svc.engine != nil {
		d.restartSources(old, next)
	}
	d.log.Info("config reloaded", zap.String("config", d.cfgPath),
		zap.Int("trusted_keys", keys.Len()), zap.Bool("require_signature", keys.Required()))
	d.notify.ready(d.summary())
}

// deploymentFacts reads, without d.mu, the current deployment, the
// operation in flight and a deployment that needs an operator.
func (d *Daemon) deploymentFacts() (cur, op, attention *api.Deployment) {
	if d.svc == nil || d.svc.engine == nil {
		return nil, nil, nil
	}
	op = d.svc.engine.Active()
	if id, _ := d.journal.Pointer(journal.PointerCurrent); id != "" {
		cur, _ = d.journal.Deployment(id)
	}
	// The newest finished deployment says whether someone must act.
	// (Damaged records stop the engine, whose fault status shows.)
	if recent, _ := d.journal.Deployments(10); recent != nil {
		for i := range recent {
			if !recent[i].Status.Terminal() {
				continue
			}
			if recent[i].Status == api.StatusNeedsOperator {
				attention = &recent[i]
			}
			break
		}
	}
	return cur, op, attention
}

// engineFault is why the engine stopped taking work (nil: it works, or
// it is not started yet).
func (d *Daemon) engineFault() error {
	if d.svc == nil || d.svc.engine == nil {
		return nil
	}
	return d.svc.engine.Fault()
}

func ref(dep *api.Deployment) *api.RevisionRef {
	if dep == nil {
		return nil
	}
	return &api.RevisionRef{DeploymentID: dep.ID, Revision: dep.Revision, Digest: dep.Digest, InstalledAt: dep.EndedAt}
}

// deploymentStatus fills the deployment part of the status.
func (d *Daemon) deploymentStatus(st *api.Status) {
	cur, op, attention := d.deploymentFacts()
	st.Current = ref(cur)
	if id, _ := d.journal.Pointer(journal.PointerLastGood); id != "" {
		if lg, err := d.journal.Deployment(id); err == nil {
			st.LastGood = ref(lg)
		}
	}
	if op != nil {
		step := ""
		if n := len(op.Steps); n > 0 {
			step = op.Steps[n-1].Name
		}
		st.Operation = &api.Operation{Kind: op.Kind, DeploymentID: op.ID, Status: op.Status, Step: step, StartedAt: op.StartedAt}
		if st.State == api.StateIdle {
			st.State = api.StateBusy
		}
	}
	if fault := d.engineFault(); fault != nil {
		st.State = api.StateNeedsOperator
		st.Operator = &api.OperatorAttention{What: "the agent stopped taking work: " + fault.Error(),
			Next: engine.FaultHint(fault, d.cfg.Load().StateDir), Since: d.started.UTC()}
		if op != nil {
			st.Operator.DeploymentID = op.ID
		}
		return
	}
	if attention != nil && op == nil {
		st.State = api.StateNeedsOperator
		st.Operator = &api.OperatorAttention{
			DeploymentID: attention.ID, What: attention.Error, Since: attention.EndedAt,
			Next: fmt.Sprintf("inspect with `agentctl show %s` and `agentctl logs %s`, fix the cause, then `agentctl rollback --to <revision>` or deploy a fixed revision", attention.ID, attention.ID),
		}
	}
}
