package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// A running step has no end yet: its line says how long it has run, never
// the distance from the zero time (-2562047h47m16s).
func TestStepLineOfARunningStep(t *testing.T) {
	start := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	running := stepLineAt(&api.Step{Name: "ApplicationStart", Status: api.StepRunning, StartedAt: start}, start.Add(1500*time.Millisecond))
	if !strings.Contains(running, "1.5s") || strings.Contains(running, "-") || !strings.Contains(running, "... ") {
		t.Errorf("running step: %q", running)
	}
	// A clock behind the start (another host's record) shows zero.
	if l := stepLineAt(&api.Step{Name: "Install", Status: api.StepRunning, StartedAt: start}, start.Add(-time.Hour)); !strings.Contains(l, " 0s") {
		t.Errorf("step started in the future: %q", l)
	}
	done := stepLineAt(&api.Step{Name: "Install", Status: api.StepSucceeded, StartedAt: start, EndedAt: start.Add(2 * time.Second)}, start.Add(time.Hour))
	if !strings.Contains(done, "2s") || !strings.Contains(done, "ok") {
		t.Errorf("ended step: %q", done)
	}
}
