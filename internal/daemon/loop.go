package daemon

import (
	"context"
	"fmt"
)

// loop is the agent's single serial executor: state changes happen on it,
// one at a time. Long work (hooks, AWS waits) runs elsewhere and reports
// back through Do, so the loop stays responsive and the watchdog can use
// it as the agent's heartbeat.
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

// probe is the watchdog's heartbeat: an empty job.
func (l *loop) probe(ctx context.Context) error { return l.Do(ctx, func() {}) }
