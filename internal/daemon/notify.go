package daemon

import (
	"context"
	"time"

	sdd "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
)

// notifier sends sd_notify messages. Without NOTIFY_SOCKET (not under
// systemd) every call is a no-op.
type notifier struct {
	log *zap.Logger
}

func (n notifier) send(state string) {
	// unsetEnvironment=false: we notify many times over the daemon's life.
	// Hook processes get NOTIFY_SOCKET stripped from their environment.
	if _, err := sdd.SdNotify(false, state); err != nil {
		n.log.Warn("sd_notify failed", zap.String("state", state), zap.Error(err))
	}
}

func (n notifier) ready(status string)  { n.send(sdd.SdNotifyReady + "\nSTATUS=" + status) }
func (n notifier) status(status string) { n.send("STATUS=" + status) }
func (n notifier) stopping(status string) {
	n.send(sdd.SdNotifyStopping + "\nSTATUS=" + status)
}
func (n notifier) reloading(status string) {
	n.send(sdd.SdNotifyReloading + "\nSTATUS=" + status)
}

// watchdog pings systemd's watchdog only while the agent's loop answers a
// probe in time, so a wedged agent is restarted instead of pinging forever
// from an independent goroutine.
type watchdog struct {
	interval time.Duration // WATCHDOG_USEC
	probe    func(ctx context.Context) error
	notify   notifier
	log      *zap.Logger
}

func (w *watchdog) run(ctx context.Context) {
	// Ping at half the interval, and give the loop a quarter to answer, so
	// one slow probe does not by itself miss the deadline.
	tick := time.NewTicker(w.interval / 2)
	defer tick.Stop()
	stuckSince := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, w.interval/4)
		err := w.probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if stuckSince.IsZero() {
				stuckSince = time.Now()
			}
			w.log.Error("agent loop is not responding; withholding the watchdog ping so systemd restarts the agent",
				zap.Duration("stuck_for", time.Since(stuckSince)), zap.Error(err))
			continue
		}
		stuckSince = time.Time{}
		w.notify.send(sdd.SdNotifyWatchdog)
	}
}
