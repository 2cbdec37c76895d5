package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Target is one place events go.
type Target interface {
	// Name says which target, for logs and metrics: sns, eventbridge,
	// command.
	Name() string
	// Send delivers one event once.
	Send(ctx context.Context, e Event, body []byte) error
}

// Options wire a Dispatcher.
type Options struct {
	Targets []Target
	// Attempts per event and target (notify.attempts).
	Attempts int
	// Backoff is the wait after the first failed attempt; it doubles.
	Backoff time.Duration
	// Timeout bounds one attempt (a command has its own, shorter one).
	Timeout time.Duration
	// Queue is how many events may wait; more are dropped and counted.
	Queue int
	Log   *zap.Logger
	// OnResult is told each event's outcome per target: ok, or failed
	// after every attempt (or dropped from a full queue).
	OnResult func(target string, e Event, err error)
}

// Dispatcher delivers events in the background, in order.
type Dispatcher struct {
	o     Options
	queue chan Event
}

// New returns a dispatcher; Run delivers.
func New(o Options) *Dispatcher {
	if o.Attempts < 1 {
		o.Attempts = 1
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Queue <= 0 {
		o.Queue = 64
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	return &Dispatcher{o: o, queue: make(chan Event, o.Queue)}
}

// Publish queues an event and returns at once: it never blocks the
// engine. A full queue drops the event (logged and counted per target).
func (d *Dispatcher) Publish(e Event) {
	if d == nil || len(d.o.Targets) == 0 {
		return
	}
	select {
	case d.queue <- e:
	default:
		err := fmt.Errorf("notification queue full (%d waiting): event dropped", d.o.Queue)
		d.o.Log.Error("notify: event dropped", zap.String("event", string(e.Event)), zap.String("deployment", e.DeploymentID), zap.Error(err))
		for _, t := range d.o.Targets {
			d.result(t.Name(), e, err)
		}
	}
}

// Run delivers queued events until ctx ends; what is still queued then is
// not delivered (the agent is stopping).
func (d *Dispatcher) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-d.queue:
			d.deliver(ctx, e)
		}
	}
}

func (d *Dispatcher) deliver(ctx context.Context, e Event) {
	body, err := json.Marshal(e)
	if err != nil {
		// Strings and a time only: it cannot fail.
		panic(fmt.Sprintf("notify: encode event: %v", err))
	}
	for _, t := range d.o.Targets {
		err := d.try(ctx, t, e, body)
		if ctx.Err() != nil {
			return
		}
		d.result(t.Name(), e, err)
		if err != nil {
			d.o.Log.Error("notify: delivery failed; the deployment is not affected", zap.String("target", t.Name()),
				zap.String("event", string(e.Event)), zap.String("deployment", e.DeploymentID), zap.Int("attempts", d.o.Attempts), zap.Error(err))
		} else {
			d.o.Log.Info("notify: delivered", zap.String("target", t.Name()), zap.String("event", string(e.Event)), zap.String("deployment", e.DeploymentID))
		}
	}
}

// try sends with bounded attempts and a doubling backoff.
func (d *Dispatcher) try(ctx context.Context, t Target, e Event, body []byte) error {
	wait := d.o.Backoff
	var err error
	for attempt := 1; attempt <= d.o.Attempts; attempt++ {
		actx, cancel := context.WithTimeout(ctx, d.o.Timeout)
		err = t.Send(actx, e, body)
		cancel()
		if err == nil || attempt == d.o.Attempts {
			break
		}
		d.o.Log.Warn("notify: attempt failed; trying again", zap.String("target", t.Name()), zap.Int("attempt", attempt), zap.Duration("in", wait), zap.Error(err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait *= 2
	}
	return err
}

func (d *Dispatcher) result(target string, e Event, err error) {
	if d.o.OnResult != nil {
		d.o.OnResult(target, e, err)
	}
}
