package engine_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/engine/rung"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// watchedAgent is an agent whose one health check passes while the file
// "ok" exists in its temp dir, with a watch window of window.
func watchedAgent(t *testing.T, window time.Duration, mutate func(*config.Config)) (*agent, string) {
	t.Helper()
	a := newAgentYAML(t, func(dir string) string {
		return fmt.Sprintf(`health:
  checks:
    - {name: app, command: {argv: [test, -f, %s], timeout: 2s}}
  interval: 100ms
  grace: 0s
  successes_needed: 1
  failures_allowed: 1
  assess_timeout: 10s
  watch_window: %s
`, filepath.Join(dir, "ok"), window)
	}, mutate)
	ok := filepath.Join(a.dir, "ok")
	if err := os.WriteFile(ok, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return a, ok
}

func rev(v string) revision.Revision {
	return revision.Revision{Files: map[string]revision.File{"v": {Content: v}}}
}

// waitFor waits until deployment id's status is want, or fails.
func (a *agent) waitFor(id string, want api.DeploymentStatus) *api.Deployment {
	a.t.Helper()
	var d *api.Deployment
	testutil.WaitFor(a.t, 30*time.Second, fmt.Sprintf("deployment %s to be %s", id, want), func() error {
		var err error
		if d, err = a.j.Deployment(id); err != nil {
			return testutil.Stop(err)
		}
		if d.Status != want {
			return fmt.Errorf("it is %s: %s", d.Status, d.Error)
		}
		return nil
	})
	return d
}

// waitWatching waits until the open watch window is id's: the window
// opens just after the record says succeeded.
func (a *agent) waitWatching(id string) {
	a.t.Helper()
	testutil.WaitFor(a.t, 10*time.Second, "the watch window of "+id, func() error {
		if got, _ := a.e.Watching(); got != id {
			return fmt.Errorf("watching %q", got)
		}
		return nil
	})
}

// A new deployment ends the previous one's watch window: only the newest
// is watched, and it is the one rolled back.
func TestNewDeploymentEndsThePreviousWatchWindow(t *testing.T) {
	a, ok := watchedAgent(t, time.Minute, nil)
	d1 := mustStatus(t, a.deploy(a.bundle("v1", rev("1"))), api.StatusSucceeded)
	a.waitWatching(d1.ID)
	d2 := mustStatus(t, a.deploy(a.bundle("v2", rev("2"))), api.StatusSucceeded)
	a.waitWatching(d2.ID) // v1's window ended
	os.Remove(ok)
	d2 = a.waitFor(d2.ID, api.StatusNeedsOperator)
	// The revision rung put v1 back, but v1 is unhealthy too (the check
	// does not depend on the revision), so the ladder ends at an operator.
	if d, _ := a.j.Deployment(d1.ID); d.Status != api.StatusSucceeded {
		t.Errorf("v1's record changed to %s: its window was still acting", d.Status)
	}
	if !strings.Contains(d2.Error, "unhealthy in the watch window") || len(d2.Rungs) == 0 || d2.Rungs[0].Name != rung.Revision {
		t.Errorf("v2: rungs %+v, error %q", d2.Rungs, d2.Error)
	}
	if id, _ := a.e.Watching(); id != "" {
		t.Errorf("still watching %q after the window acted", id)
	}
}

// With rollback.automatic off, an unhealthy watch window changes nothing
// on the host: the revision stays and the agent asks for an operator.
func TestWatchWindowWithAutomaticRollbackOff(t *testing.T) {
	a, ok := watchedAgent(t, time.Minute, func(c *config.Config) { c.Rollback.Automatic = false })
	mustStatus(t, a.deploy(a.bundle("v1", rev("1"))), api.StatusSucceeded)
	d2 := mustStatus(t, a.deploy(a.bundle("v2", rev("2"))), api.StatusSucceeded)
	os.Remove(ok)
	d2 = a.waitFor(d2.ID, api.StatusNeedsOperator)
	if len(d2.Rungs) != 0 || a.destFile("v") != "2" || !strings.Contains(d2.Error, "automatic rollback is off") {
		t.Errorf("automatic off: rungs %+v, v=%q, error %q", d2.Rungs, a.destFile("v"), d2.Error)
	}
}

// A rollback that is unhealthy in its own watch window is not rolled
// back in turn (that would go back toward the revision it replaced).
func TestRollbackIsNotRolledBackByItsWatchWindow(t *testing.T) {
	a, ok := watchedAgent(t, time.Minute, nil)
	mustStatus(t, a.deploy(a.bundle("v1", rev("1"))), api.StatusSucceeded)
	mustStatus(t, a.deploy(a.bundle("v2", rev("2"))), api.StatusSucceeded)
	r, err := a.e.Rollback("")
	if err != nil {
		t.Fatal(err)
	}
	r = mustStatus(t, a.wait(r.ID), api.StatusSucceeded)
	os.Remove(ok)
	r = a.waitFor(r.ID, api.StatusNeedsOperator)
	if len(r.Rungs) != 0 || a.destFile("v") != "1" || !strings.Contains(r.Error, "a rollback never triggers another one") {
		t.Errorf("rollback: rungs %+v, v=%q, error %q", r.Rungs, a.destFile("v"), r.Error)
	}
}

// The per-boot limit stops the second climb of one boot, even when the
// per-day limit would allow it.
func TestClimbsPerBootLimit(t *testing.T) {
	a, ok := watchedAgent(t, time.Minute, func(c *config.Config) {
		c.Rollback.MaxClimbsPerBoot, c.Rollback.MaxClimbsPerDay = 1, 10
	})
	mustStatus(t, a.deploy(a.bundle("v1", rev("1"))), api.StatusSucceeded)
	d2 := mustStatus(t, a.deploy(a.bundle("v2", rev("2"))), api.StatusSucceeded)
	os.Remove(ok)
	d2 = a.waitFor(d2.ID, api.StatusNeedsOperator)
	if strings.Contains(d2.Error, "automatic rollbacks already") || len(d2.Rungs) == 0 {
		t.Fatalf("the first climb was refused: %+v %q", d2.Rungs, d2.Error)
	}
	os.WriteFile(ok, nil, 0o644)
	d3 := mustStatus(t, a.deploy(a.bundle("v3", rev("3"))), api.StatusSucceeded)
	os.Remove(ok)
	d3 = a.waitFor(d3.ID, api.StatusNeedsOperator)
	if len(d3.Rungs) != 0 || !strings.Contains(d3.Error, "1 automatic rollbacks already since this boot") || a.destFile("v") != "3" {
		t.Errorf("second climb of the boot: rungs %+v, v=%q, error %q", d3.Rungs, a.destFile("v"), d3.Error)
	}
}

// A damaged record of past climbs fails closed: the limits it holds are
// not reset to zero, so no automatic climb happens, and the operator is
// told why and what to do.
func TestDamagedClimbRecordFailsClosed(t *testing.T) {
	a := newAgent(t, nil)
	mustStatus(t, a.deploy(a.bundle("v1", rev("1"))), api.StatusSucceeded)
	if err := a.j.SetMeta("climbs", `[{"at":"2026-12-05T10:00:00Z","boot":`); err != nil {
		t.Fatal(err)
	}
	bad := rev("2")
	bad.Hooks = map[string]string{"ValidateService": "exit 1"}
	d := mustStatus(t, a.deploy(a.bundle("v2", bad)), api.StatusNeedsOperator)
	if len(d.Rungs) != 0 || !strings.Contains(d.Error, "record of past rollbacks in the journal is damaged") {
		t.Errorf("rungs %+v, error %q", d.Rungs, d.Error)
	}
	if v, _ := a.j.GetMeta("climbs"); v != `[{"at":"2026-12-05T10:00:00Z","boot":` {
		t.Errorf("the damaged record was overwritten: %q", v)
	}
}
