package engine

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/journal"
)

// The lifecycle, spelled out once more by hand: a change to the table in
// status.go must be a change to this list too.
func TestTransitionTable(t *testing.T) {
	want := map[string]bool{
		"→queued": true, "→running": true,
		"queued→running":              true,
		"running→succeeded":           true,
		"running→failed":              true,
		"running→rolling_back":        true,
		"running→needs_operator":      true,
		"running→queued":              true,
		"rolling_back→rolled_back":    true,
		"rolling_back→failed":         true,
		"rolling_back→needs_operator": true,
		"succeeded→rolling_back":      true,
		"succeeded→needs_operator":    true,
	}
	all := []api.DeploymentStatus{"", api.StatusQueued, api.StatusRunning, api.StatusSucceeded, api.StatusFailed,
		api.StatusRollingBack, api.StatusRolledBack, api.StatusNeedsOperator}
	for _, from := range all {
		for _, to := range all {
			key := string(from) + "→" + string(to)
			expect := want[key] || (from == to && from != "")
			if got := Allowed(from, to); got != expect {
				t.Errorf("Allowed(%s) = %v, want %v", key, got, expect)
			}
		}
	}
	// Every status the table names is a known one, and the final ones
	// lead nowhere.
	for from, tos := range transitions() {
		if from != "" && !contains(all, from) {
			t.Errorf("table names unknown status %q", from)
		}
		if from.Terminal() && from != api.StatusSucceeded && len(tos) != 0 {
			t.Errorf("final status %s has transitions %v", from, tos)
		}
	}
}

func contains(list []api.DeploymentStatus, s api.DeploymentStatus) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// A change the table does not allow is refused: the record ends
// needs_operator saying so, and the pointers it asked for are not moved.
func TestTransitionRefused(t *testing.T) {
	dir := t.TempDir()
	j, err := journal.Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	var seen []string
	e := &Engine{o: Options{Journal: j, OnTransition: func(d api.Deployment, from api.DeploymentStatus) {
		seen = append(seen, string(from)+"→"+string(d.Status))
	}}, bus: newBus()}
	d := &api.Deployment{ID: "d-REFUSED01", Kind: api.KindDeploy, Status: api.StatusFailed, Steps: []api.Step{}}
	r := &run{e: e, d: d, cfg: &config.Config{}, log: zaptest.NewLogger(t)}
	r.finish(api.StatusSucceeded, map[string]string{journal.PointerCurrent: d.ID})
	got, err := j.Deployment(d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != api.StatusNeedsOperator || !strings.Contains(got.Error, `may not go from "failed" to "succeeded"`) {
		t.Errorf("status %s, error %q", got.Status, got.Error)
	}
	if cur, _ := j.Pointer(journal.PointerCurrent); cur != "" {
		t.Errorf("a refused transition moved the current pointer to %s", cur)
	}
	if strings.Join(seen, ",") != "failed→needs_operator" {
		t.Errorf("transitions told: %v", seen)
	}
}
