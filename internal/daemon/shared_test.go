package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/server"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// Many askers at once, one of whom gives up: one run answers them all,
// and its answer is given again while fresh. An invalidation while a run
// is in flight starts a new run for later askers, and the old run's
// answer is not kept.
func TestSharedRunsOnceForEveryAsker(t *testing.T) {
	s := &shared[int]{fresh: time.Hour, bound: time.Minute}
	var runs atomic.Int32
	gate := make(chan struct{})
	run := func(ctx context.Context) (int, error) {
		n := runs.Add(1)
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		return int(n) * 10, nil
	}
	quitter, quit := context.WithCancel(context.Background())
	quitErr := make(chan error, 1)
	go func() {
		_, err := s.get(quitter, run)
		quitErr <- err
	}()
	testutil.WaitFor(t, 10*time.Second, "the first run", func() error {
		if runs.Load() != 1 {
			return errors.New("not started")
		}
		return nil
	})
	quit()
	if err := <-quitErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("the asker who gave up: %v", err)
	}
	var wg sync.WaitGroup
	got := make([]int, 50)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := s.get(context.Background(), run)
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		}()
	}
	close(gate)
	wg.Wait()
	for i, v := range got {
		if v != 10 {
			t.Fatalf("asker %d got %d, want the first run's 10", i, v)
		}
	}
	if v, _ := s.get(context.Background(), run); v != 10 || runs.Load() != 1 {
		t.Fatalf("a fresh answer: %d after %d runs", v, runs.Load())
	}

	// Invalidated while a run is in flight.
	s.invalidate()
	slow := make(chan struct{})
	old := make(chan int, 1)
	go func() {
		v, _ := s.get(context.Background(), func(context.Context) (int, error) {
			runs.Add(1)
			<-slow
			return -1, nil
		})
		old <- v
	}()
	testutil.WaitFor(t, 10*time.Second, "the slow run", func() error {
		if runs.Load() != 2 {
			return fmt.Errorf("%d runs", runs.Load())
		}
		return nil
	})
	s.invalidate()
	if v, _ := s.get(context.Background(), func(context.Context) (int, error) { return 30, nil }); v != 30 {
		t.Fatalf("after an invalidation during a run: %d, want a new run's 30", v)
	}
	close(slow)
	if v := <-old; v != -1 {
		t.Fatalf("the slow run's asker got %d", v)
	}
	if v, _ := s.get(context.Background(), run); v != 30 {
		t.Fatalf("the stale run's answer was kept: %d", v)
	}
}

// Root always gets a run of its own (what is true now); its answer then
// serves the others while fresh.
func TestSharedRootAlwaysRuns(t *testing.T) {
	s := &shared[int]{fresh: time.Hour, bound: time.Minute}
	var runs atomic.Int32
	run := func(context.Context) (int, error) { return int(runs.Add(1)), nil }
	root := server.WithPeer(context.Background(), &server.Peer{UID: 0})
	member := server.WithPeer(context.Background(), &server.Peer{UID: 1000})
	if v, _ := s.get(member, run); v != 1 {
		t.Fatalf("first member ask: %d", v)
	}
	if v, _ := s.get(member, run); v != 1 {
		t.Fatalf("a member inside fresh got a new run: %d", v)
	}
	for want := 2; want <= 3; want++ {
		if v, _ := s.get(root, run); v != want {
			t.Fatalf("root ask: %d, want a new run %d", v, want)
		}
	}
	if v, _ := s.get(member, run); v != 3 {
		t.Fatalf("a member after root: %d, want root's answer 3", v)
	}
}
