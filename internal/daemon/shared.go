package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/server"
)

// shared makes a costly read one run for every asker: a health round runs
// every check (commands as root), a checkpoint catalogue costs EC2 calls,
// a doctor report dozens more, and any member of the socket group may ask
// for them as often and as many times at once as it likes. Askers that
// come while a run is in flight wait for it; an answer younger than fresh
// is given again without a run. A run has its own deadline (bound), not
// an asker's: the first asker going away must not fail the others.
// Root is not who this defends against and asks to see what is true now
// (`agentctl health` after fixing the app, `doctor` after fixing IAM):
// root's asks always run, and their answer serves the others.
type shared[T any] struct {
	fresh, bound time.Duration

	mu     sync.Mutex
	flight *flight[T]
	val    T
	at     time.Time
	// gen counts invalidations: a run that began before one is neither
	// joined nor kept as fresh.
	gen uint64
}

type flight[T any] struct {
	gen  uint64
	done chan struct{}
	val  T
	err  error
}

// get returns a fresh answer, the answer of the run in flight, or the
// answer of a new run.
func (s *shared[T]) get(ctx context.Context, run func(context.Context) (T, error)) (T, error) {
	if p, ok := server.PeerFrom(ctx); ok && p.UID == 0 {
		s.mu.Lock()
		gen := s.gen
		s.mu.Unlock()
		v, err := run(ctx)
		s.mu.Lock()
		s.keep(gen, v, err)
		s.mu.Unlock()
		return v, err
	}
	s.mu.Lock()
	if !s.at.IsZero() && time.Since(s.at) < s.fresh {
		v := s.val
		s.mu.Unlock()
		return v, nil
	}
	f := s.flight
	if f == nil || f.gen != s.gen {
		f = &flight[T]{gen: s.gen, done: make(chan struct{})}
		s.flight = f
		go s.do(f, run)
	}
	s.mu.Unlock()
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

func (s *shared[T]) do(f *flight[T], run func(context.Context) (T, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), s.bound)
	defer cancel()
	v, err := run(ctx)
	s.mu.Lock()
	f.val, f.err = v, err
	if s.flight == f {
		s.flight = nil
	}
	s.keep(f.gen, v, err)
	s.mu.Unlock()
	close(f.done)
}

// keep makes a run's answer the fresh one, unless it failed or began
// before an invalidation. s.mu is held.
func (s *shared[T]) keep(gen uint64, v T, err error) {
	if err == nil && gen == s.gen {
		s.val, s.at = v, time.Now()
	}
}

// invalidate forgets the answer: the next asker gets a new run.
func (s *shared[T]) invalidate() {
	s.mu.Lock()
	s.gen++
	s.at = time.Time{}
	s.mu.Unlock()
}
