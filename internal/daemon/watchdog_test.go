package daemon

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

func countWatchdog(ns *testbed.NotifySocket) int {
	n := 0
	for _, m := range ns.Messages() {
		if strings.Contains(m, "WATCHDOG=1") {
			n++
		}
	}
	return n
}

// The watchdog pings a real NOTIFY_SOCKET while the loop answers, stops
// while the loop is stuck, and resumes when it recovers.
func TestWatchdogPingsOnlyWhileLoopResponds(t *testing.T) {
	ns, err := testbed.ListenNotify(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	t.Setenv("NOTIFY_SOCKET", ns.Path)

	l := newLoop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.run(ctx)
	// The probes' outcomes, as the watchdog saw them.
	var mu sync.Mutex
	answered, failed := 0, 0
	probes := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return answered, failed
	}
	probe := func(ctx context.Context) error {
		err := l.probe(ctx)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed++
		} else {
			answered++
		}
		return err
	}
	interval := 200 * time.Millisecond
	w := &watchdog{interval: interval, probe: probe, notify: notifier{log: zap.NewNop()}, log: zap.NewNop()}
	go w.run(ctx)

	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if _, err := ns.WaitFor(wctx, "WATCHDOG=1"); err != nil {
		t.Fatal(err)
	}

	// Wedge the loop with a job that does not return, and let three
	// probes fail.
	release := make(chan struct{})
	go l.Do(context.Background(), func() { <-release })
	testutil.WaitFor(t, 10*time.Second, "three probes of the stuck loop to fail", func() error {
		if _, f := probes(); f < 3 {
			return fmt.Errorf("%d failed", f)
		}
		return nil
	})
	// A ping follows a probe that answered, in the watchdog's own
	// goroutine: every ping sent so far is in the socket before a marker
	// sent now. Up to the marker, the pings must be exactly the answered
	// probes: none for the failed ones.
	ok, _ := probes()
	mark, err := net.Dial("unixgram", ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mark.Write([]byte("TEST_MARKER=1")); err != nil {
		t.Fatal(err)
	}
	mark.Close()
	if _, err := ns.WaitFor(wctx, "TEST_MARKER=1"); err != nil {
		t.Fatal(err)
	}
	before := countWatchdog(ns)
	if before != ok {
		t.Fatalf("%d pings for %d answered probes: the watchdog pinged while the loop was stuck", before, ok)
	}

	close(release)
	testutil.WaitFor(t, 5*time.Second, "the watchdog to resume after the loop recovered", func() error {
		if n := countWatchdog(ns); n == before {
			return fmt.Errorf("still %d pings", n)
		}
		return nil
	})
}

func TestLoopDoAfterStop(t *testing.T) {
	l := newLoop()
	ctx, cancel := context.WithCancel(context.Background())
	go l.run(ctx)
	ran := false
	if err := l.Do(context.Background(), func() { ran = true }); err != nil || !ran {
		t.Fatalf("Do: %v ran=%v", err, ran)
	}
	cancel()
	<-l.done
	if err := l.Do(context.Background(), func() {}); err == nil {
		t.Error("Do on a stopped loop succeeded")
	}
}

// The daemon's heartbeat is not an empty job: it builds the status, so
// an agent wedged on its own lock fails it (and the pings stop).
func TestHeartbeatFailsWhileTheDaemonIsWedged(t *testing.T) {
	dir := t.TempDir()
	cfg, _, err := config.Parse("test.yaml", []byte("application: shop\nstate_dir: "+dir+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	j, err := journal.Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	d := &Daemon{log: zap.NewNop(), loop: newLoop(), journal: j, sources: map[string]api.SourceState{}, sourceErrs: map[string]string{}}
	d.cfg.Store(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.loop.run(ctx)

	beat := func() error {
		c, stop := context.WithTimeout(ctx, 300*time.Millisecond)
		defer stop()
		return d.heartbeat(c)
	}
	if err := beat(); err != nil {
		t.Fatalf("healthy agent: %v", err)
	}
	d.mu.Lock()
	err = beat()
	if err == nil {
		d.mu.Unlock()
		t.Fatal("heartbeat answered while the daemon's lock was held")
	}
	d.mu.Unlock()
	// The stuck job finishes once the lock is free; then it beats again.
	testutil.WaitFor(t, 5*time.Second, "the heartbeat to recover", beat)
}
