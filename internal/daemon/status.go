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
	id := d.ident
	where := id.InstanceID
	if id.AvailabilityZone != "" {
		where += " (" + id.AvailabilityZone + ")"
	}
	s := fmt.Sprintf("Idle: %s on %s, no revision installed yet; %d volume(s) known", app, where, len(id.Volumes))
	if d.reloadErr != "" {
		s += "; config reload failed, previous config in effect"
	}
	return s + "."
}

// reload re-reads the config on SIGHUP. A bad file changes nothing: the
// previous config stays in effect and the problems are logged and shown
// in status. Settings that only take effect at start are kept and flagged.
func (d *Daemon) reload() {
	d.notify.reloading("Reloading " + d.cfgPath + ".")
	old := d.cfg.Load()
	next, warnings, err := config.Load(d.cfgPath)
	for _, w := range warnings {
		d.log.Warn("config warning", zap.String("warning", w))
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
	if len(fixed) > 0 {
		d.log.Warn("these settings take effect only on restart (systemctl restart rollback-agent)",
			zap.String("settings", strings.Join(fixed, ", ")))
	}
	_ = d.level.UnmarshalText([]byte(next.LogLevel))
	d.cfg.Store(next)
	d.log.Info("config reloaded", zap.String("config", d.cfgPath))
	d.notify.ready(d.summary())
}
