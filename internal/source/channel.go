package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// ChannelEngine is the engine's side the channel needs: it only queues.
// The watcher never holds the deployment slot: polling, verifying and
// downloading happen before Submit, in the watcher's own goroutine.
type ChannelEngine interface {
	Submit(engine.Request) (*api.Deployment, error)
}

// ChannelJournal is where the watcher remembers the last sequence it
// applied, and reads which verified bundles deployments still need.
type ChannelJournal interface {
	GetMeta(key string) (string, error)
	SetMeta(key, value string) error
	Deployments(limit int) ([]api.Deployment, error)
}

// ChannelFloors keep the highest sequence applied per channel where the
// journal's loss cannot take it (the journal's witness): an agent whose
// journal vanished still refuses a replayed older channel.
type ChannelFloors interface {
	ChannelFloor(url string) (journal.ChannelFloor, error)
	RaiseChannelFloor(url string, f journal.ChannelFloor) error
}

// ChannelOptions wire a Channel.
type ChannelOptions struct {
	// URL is sources.channel: s3://BUCKET/[PREFIX/]APP/channels/NAME.json.
	URL string
	// App is the agent's application: channels and manifests of another
	// app are refused.
	App string
	// Interval is sources.poll_interval; each wait is jittered by ±20%
	// so a fleet does not poll in step.
	Interval time.Duration
	// Keys are trust.public_keys and trust.require_signature.
	Keys *release.Keyring
	// S3 returns the client (the daemon's lazily made one).
	S3      func(context.Context) (*s3.Client, error)
	Engine  ChannelEngine
	Journal ChannelJournal
	// Dir keeps verified bundles until their deployment ends
	// (STATE_DIR/channel).
	Dir string
	Log *zap.Logger
	// OnState receives the watcher's state after every poll (for status).
	OnState func(api.SourceState)
	// Floors, when set, hold the applied sequence apart from the journal.
	Floors ChannelFloors
}

// Channel watches an S3 release channel and deploys what it points at,
// once verified.
type Channel struct {
	o       ChannelOptions
	layout  release.Layout
	name    string
	metaKey string

	mu    sync.Mutex
	state channelState
}

// channelState is what the watcher knows between polls.
type channelState struct {
	// etag is the ETag of the last channel document handled (applied or
	// refused): the next poll asks If-None-Match it.
	etag    string
	applied appliedRecord
	// refused is why the current channel document was refused ("" if not).
	refused string
	// failures counts consecutive polls that could not reach S3.
	failures    int
	outageSince time.Time
	outageErr   string
	lastSeen    time.Time
	next        time.Duration
	unsigned    bool
}

// appliedRecord is kept in the journal's meta under "channel <URL>", so
// a restarted agent neither redeploys nor accepts an older sequence.
type appliedRecord struct {
	Sequence       int64  `json:"sequence"`
	Version        string `json:"version"`
	ManifestSHA256 string `json:"manifest_sha256"`
	ETag           string `json:"etag"`
	Deployment     string `json:"deployment"`
}

// NewChannel checks the options and returns a watcher; Run starts it.
func NewChannel(o ChannelOptions) (*Channel, error) {
	layout, app, name, err := release.ParseChannelURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("sources.channel: %w", err)
	}
	switch {
	case app != o.App:
		return nil, fmt.Errorf("sources.channel %s: the channel is of app %q, this agent deploys %q", o.URL, app, o.App)
	case o.Interval <= 0:
		return nil, fmt.Errorf("sources.channel %s: poll interval %s must be positive", o.URL, o.Interval)
	case o.Keys == nil || o.S3 == nil || o.Engine == nil || o.Journal == nil || o.Dir == "":
		return nil, fmt.Errorf("sources.channel %s: keys, S3, engine, journal and dir are all needed", o.URL)
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	return &Channel{o: o, layout: layout, name: name, metaKey: "channel " + o.URL}, nil
}

// Run polls until ctx ends. It returns an error only when it cannot start
// (its directory or journal record is unusable); S3 trouble is retried
// with backoff for as long as it lasts, and shown in the state.
func (c *Channel) Run(ctx context.Context) error {
	if err := os.MkdirAll(c.o.Dir, 0o750); err != nil {
		return fmt.Errorf("channel: create %s: %w", c.o.Dir, err)
	}
	raw, err := c.o.Journal.GetMeta(c.metaKey)
	if err != nil {
		return fmt.Errorf("channel %s: read the last applied sequence from the journal: %w", c.o.URL, err)
	}
	if raw != "" {
		var rec appliedRecord
		if err := json.Unmarshal([]byte(raw), &rec); err != nil {
			return fmt.Errorf("channel %s: journal record %q is damaged: %w", c.o.URL, raw, err)
		}
		c.mu.Lock()
		c.state.applied, c.state.etag = rec, rec.ETag
		c.mu.Unlock()
	}
	if err := c.applyFloor(); err != nil {
		return err
	}
	c.prune()
	for {
		err := c.poll(ctx)
		if ctx.Err() != nil {
			return nil
		}
		delay := c.afterPoll(err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// applyFloor takes the witness's floor when it is above the journal's
// record (the journal was lost), and raises it when below (a witness
// that has not seen this channel yet). A floor that cannot be read stops
// the watcher: a safety record fails closed.
func (c *Channel) applyFloor() error {
	if c.o.Floors == nil {
		return nil
	}
	f, err := c.o.Floors.ChannelFloor(c.o.URL)
	if err != nil {
		return fmt.Errorf("channel %s: read the applied sequence kept apart from the journal: %w", c.o.URL, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rec := c.state.applied
	switch {
	case f.Sequence > rec.Sequence:
		c.o.Log.Warn("channel: the journal does not know the last applied sequence; the witness does",
			zap.String("channel", c.o.URL), zap.Int64("journal", rec.Sequence), zap.Int64("witness", f.Sequence))
		c.state.applied = appliedRecord{Sequence: f.Sequence, Version: f.Version, ManifestSHA256: f.ManifestSHA256}
		c.state.etag = ""
	case f.Sequence < rec.Sequence:
		return c.o.Floors.RaiseChannelFloor(c.o.URL, journal.ChannelFloor{Sequence: rec.Sequence, Version: rec.Version, ManifestSHA256: rec.ManifestSHA256})
	}
	return nil
}

// maxBackoffFactor caps the wait after repeated failures at that many
// poll intervals.
const maxBackoffFactor = 8

// afterPoll records the outcome of a poll, reports the state and returns
// how long to wait: the interval, or a growing backoff while S3 fails.
func (c *Channel) afterPoll(err error) time.Duration {
	c.mu.Lock()
	st := &c.state
	base := c.o.Interval
	if err != nil {
		if st.failures == 0 {
			st.outageSince = time.Now()
		}
		st.failures++
		st.outageErr = err.Error()
		base = c.o.Interval << min(st.failures-1, 3)
		base = min(base, maxBackoffFactor*c.o.Interval)
	} else {
		st.failures, st.outageErr = 0, ""
		st.lastSeen = time.Now()
	}
	st.next = jitter(base)
	state := c.stateLocked()
	next := st.next
	c.mu.Unlock()
	if err != nil {
		c.o.Log.Warn("channel: poll failed; the current revision stays", zap.String("channel", c.o.URL), zap.Error(err), zap.Duration("retry_in", next))
	}
	if c.o.OnState != nil {
		c.o.OnState(state)
	}
	return next
}

// jitter spreads d over ±20%.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// State returns the watcher's state as status shows it.
func (c *Channel) State() api.SourceState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stateLocked()
}

func (c *Channel) stateLocked() api.SourceState {
	st := c.state
	s := api.SourceState{Enabled: true, LastSeen: st.lastSeen}
	if st.applied.Sequence > 0 {
		s.Detail = fmt.Sprintf("%s: sequence %d (version %s) applied", c.o.URL, st.applied.Sequence, st.applied.Version)
		if st.applied.Deployment != "" {
			s.Detail += " as deployment " + st.applied.Deployment
		}
		if st.unsigned {
			s.Detail += "; unsigned (trust.require_signature is false)"
		}
	} else {
		s.Detail = c.o.URL + ": nothing applied yet"
	}
	switch {
	case st.failures > 0:
		s.Detail += fmt.Sprintf("; S3 unreachable since %s (%d failed polls), retrying in %s; the current revision stays",
			st.outageSince.UTC().Format(time.RFC3339), st.failures, st.next.Round(time.Second))
		s.LastError = st.outageErr
	case st.refused != "":
		s.LastError = st.refused
	}
	return s
}

// refusal is a channel document that must not be deployed: it is
// remembered by ETag and not looked at again until the channel changes.
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

func refuse(format string, args ...any) error { return &refusal{fmt.Errorf(format, args...)} }

// isRefusal reports whether err is a refusal rather than trouble reaching S3.
func isRefusal(err error) bool {
	var r *refusal
	return errors.As(err, &r)
}
