package daemon

import (
	"context"
	"fmt"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/source"
)

// The inbox and the channel run in goroutines of their own, each under a
// context of its own, so that a reload can stop one and start it again
// with its new settings (a new channel URL or poll interval, an inbox
// turned on or moved, another application). Trust needs no restart: the
// sources share the daemon's one Keyring, which the reload replaces.

// runningSource is one started source: how to stop it and know it
// stopped.
type runningSource struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *runningSource) stop() {
	if r == nil {
		return
	}
	r.cancel()
	<-r.done
}

// inboxSettings and channelSettings are what a source is started with:
// when they differ after a reload, it is started again.
func inboxSettings(c *config.Config) string {
	if c.Sources.Inbox == "" {
		return ""
	}
	return c.Sources.Inbox + "\x00" + c.Application
}

func channelSettings(c *config.Config) string {
	if c.Sources.Channel == "" {
		return ""
	}
	return fmt.Sprint(c.Sources.Channel, "\x00", c.Sources.PollInterval, "\x00", c.Application, "\x00", c.StateDir)
}

// startSources starts the inbox and the channel that cfg turns on.
func (d *Daemon) startSources(cfg *config.Config) error {
	if err := d.startInbox(cfg); err != nil {
		return err
	}
	return d.startChannel(cfg)
}

// restartSources applies a reload to the sources: each whose settings
// changed is stopped and started again (or only stopped, when it was
// turned off). It runs on the agent's loop, between two requests of
// nothing else, so sources never start twice.
// A source that cannot start shows in status as its warning.
func (d *Daemon) restartSources(old, next *config.Config) {
	if inboxSettings(old) != inboxSettings(next) {
		d.svc.inbox.stop()
		d.svc.inbox = nil
		d.forgetSource("inbox")
		if err := d.startInbox(next); err != nil {
			d.sourceError("inbox")(err)
		}
		d.log.Info("inbox restarted with the new settings", zap.String("inbox", next.Sources.Inbox))
	}
	if channelSettings(old) != channelSettings(next) {
		d.svc.channel.stop()
		d.svc.channel = nil
		d.forgetSource("channel")
		if err := d.startChannel(next); err != nil {
			d.sourceError("channel")(err)
		}
		d.log.Info("channel watcher restarted with the new settings", zap.String("channel", next.Sources.Channel))
	}
}

func (d *Daemon) forgetSource(name string) {
	d.mu.Lock()
	delete(d.sources, name)
	delete(d.sourceErrs, name)
	d.mu.Unlock()
}

// runSource starts fn under a context of its own, tracked by the
// services' wait group.
func (d *Daemon) runSource(name string, fn func(context.Context) error) *runningSource {
	ctx, cancel := context.WithCancel(d.svc.ctx)
	r := &runningSource{cancel: cancel, done: make(chan struct{})}
	d.svc.wg.Add(1)
	go func() {
		defer d.svc.wg.Done()
		defer close(r.done)
		if err := fn(ctx); err != nil {
			d.sourceError(name)(err)
		}
	}()
	return r
}

// startInbox starts the inbox when sources.inbox is set.
func (d *Daemon) startInbox(cfg *config.Config) error {
	if cfg.Sources.Inbox == "" {
		return nil
	}
	in := &source.Inbox{Dir: cfg.Sources.Inbox, Engine: d.svc.engine, Journal: d.journal, Log: d.log, OnError: d.sourceError("inbox"),
		Keys: d.keys, App: cfg.Application}
	d.mu.Lock()
	d.sources["inbox"] = api.SourceState{Enabled: true, Detail: cfg.Sources.Inbox}
	d.mu.Unlock()
	d.svc.inbox = d.runSource("inbox", in.Run)
	return nil
}

// startChannel starts the S3 release channel watcher when
// sources.channel is set. It polls in its own goroutine and only queues
// deployments, so it never holds the engine's slot. Its refusals and S3
// outages show in status as the warning "source channel: ...", cleared
// when the channel is healthy again.
func (d *Daemon) startChannel(cfg *config.Config) error {
	if cfg.Sources.Channel == "" {
		return nil
	}
	ch, err := source.NewChannel(source.ChannelOptions{
		URL: cfg.Sources.Channel, App: cfg.Application, Interval: cfg.Sources.PollInterval, Keys: d.keys,
		S3: d.svc.s3, Engine: d.svc.engine, Journal: d.journal, Dir: filepath.Join(cfg.StateDir, "channel"), Log: d.log,
		OnState: d.channelState, Floors: d.journal,
	})
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.sources["channel"] = api.SourceState{Enabled: true, Detail: cfg.Sources.Channel + ": first poll pending"}
	d.mu.Unlock()
	d.svc.channel = d.runSource("channel", ch.Run)
	return nil
}

// channelState mirrors the watcher's state into the status warnings.
func (d *Daemon) channelState(st api.SourceState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sources["channel"] = st
	if st.LastError != "" {
		d.sourceErrs["channel"] = st.LastError
	} else {
		delete(d.sourceErrs, "channel")
	}
}
