package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
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
	interval := 200 * time.Millisecond
	w := &watchdog{interval: interval, probe: l.probe, notify: notifier{log: zap.NewNop()}, log: zap.NewNop()}
	go w.run(ctx)

	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if _, err := ns.WaitFor(wctx, "WATCHDOG=1"); err != nil {
		t.Fatal(err)
	}

	// Wedge the loop with a job that does not return.
	release := make(chan struct{})
	go l.Do(context.Background(), func() { <-release })
	time.Sleep(interval) // let an in-flight ping land
	before := countWatchdog(ns)
	time.Sleep(5 * interval)
	if after := countWatchdog(ns); after != before {
		t.Fatalf("watchdog pinged %d times while the loop was stuck", after-before)
	}

	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for countWatchdog(ns) == before {
		if time.Now().After(deadline) {
			t.Fatal("watchdog did not resume after the loop recovered")
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	deadline := time.Now().Add(5 * time.Second)
	for beat() != nil {
		if time.Now().After(deadline) {
			t.Fatal("heartbeat did not recover")
		}
	}
}
