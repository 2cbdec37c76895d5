package daemon

import (
	"context"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/source"
)

// startChannel starts the S3 release channel watcher when
// sources.channel is set. It polls in its own goroutine and only queues
// deployments, so it never holds the engine's slot. Its refusals and S3
// outages show in status as the warning "source channel: ...", cleared
// when the channel is healthy again.
func (d *Daemon) startChannel(ctx context.Context, cfg *config.Config, eng *engine.Engine, s3c func(context.Context) (*s3.Client, error)) error {
	if cfg.Sources.Channel == "" {
		return nil
	}
	ch, err := source.NewChannel(source.ChannelOptions{
		URL: cfg.Sources.Channel, App: cfg.Application, Interval: cfg.Sources.PollInterval, Keys: d.keys,
		S3: s3c, Engine: eng, Journal: d.journal, Dir: filepath.Join(cfg.StateDir, "channel"), Log: d.log,
		OnState: d.channelState,
	})
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.sources["channel"] = api.SourceState{Enabled: true, Detail: cfg.Sources.Channel + ": first poll pending"}
	d.mu.Unlock()
	d.svc.wg.Add(1)
	go func() {
		defer d.svc.wg.Done()
		if err := ch.Run(ctx); err != nil {
			d.sourceError("channel")(err)
		}
	}()
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
