package daemon

import (
	"context"
	"fmt"
)

// loop is the agent's serial executor for its own bookkeeping: config
// reloads and the watchdog's heartbeat run on it, one at a time. Long work
// (deployments, hooks, AWS waits) runs on the engine's worker, so the loop
// stays responsive and its answer means the agent is.
type loop struct {
	jobs chan func()
	done chan struct{}
}

func newLoop() *loop {
	return &loop{jobs: make(chan func()), done: make(chan struct{})}
}

func (l *loop) run(ctx context.Context) {
	defer close(l.done)
	for {
		select {
		case <-ctx.Done():
			return
		case fn := <-l.jobs:
			fn()
		}
	}
}

// Do runs fn on the loop and waits for it, or returns when ctx ends.
func (l *loop) Do(ctx context.Context, fn func()) error {
	finished := make(chan struct{})
	job := func() {
		defer close(finished)
		fn()
	}
	select {
	case l.jobs <- job:
	case <-l.done:
		return fmt.Errorf("agent loop has stopped")
	case <-ctx.Done():
		return fmt.Errorf("agent loop did not take the job: %w", ctx.Err())
	}
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("agent loop did not finish the job: %w", ctx.Err())
	}
}

// probe is the smallest heartbeat: an empty job.
func (l *loop) probe(ctx context.Context) error { return l.Do(ctx, func() {}) }

// heartbeat is the watchdog's probe: on the loop, build the status, which
// takes the daemon's, the engine's and the sources' locks and reads the
// journal. An agent wedged on any of them, or a loop stuck in a reload,
// stops the pings, and systemd restarts it.
func (d *Daemon) heartbeat(ctx context.Context) error {
	return d.loop.Do(ctx, func() { d.Status(ctx) })
}
