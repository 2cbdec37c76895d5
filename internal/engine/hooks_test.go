package engine_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
)

// The traffic hooks run in CodeDeploy's order when a revision has them;
// the block-traffic ones, like ApplicationStop, come from the revision
// being replaced.
func TestTrafficHooksRunInOrder(t *testing.T) {
	a := newAgent(t, nil)
	events := []string{"BeforeBlockTraffic", "AfterBlockTraffic", "ApplicationStop", "BeforeInstall", "AfterInstall",
		"ApplicationStart", "ValidateService", "BeforeAllowTraffic", "AfterAllowTraffic"}
	hooks := map[string]string{}
	for _, ev := range events {
		hooks[ev] = `echo "$LIFECYCLE_EVENT $ROLLBACK_AGENT_REVISION" >> ` + filepath.Join(a.out, "order")
	}
	mustStatus(t, a.deploy(a.bundle("v1", revision.Revision{Files: map[string]revision.File{"v": {Content: "1"}}, Hooks: hooks})), api.StatusSucceeded)
	os.Remove(filepath.Join(a.out, "order"))
	mustStatus(t, a.deploy(a.bundle("v2", revision.Revision{Files: map[string]revision.File{"v": {Content: "2"}}, Hooks: hooks})), api.StatusSucceeded)
	got := strings.Split(strings.TrimSpace(a.read("order")), "\n")
	want := []string{"BeforeBlockTraffic v1", "AfterBlockTraffic v1", "ApplicationStop v1", "BeforeInstall v2", "AfterInstall v2",
		"ApplicationStart v2", "ValidateService v2", "BeforeAllowTraffic v2", "AfterAllowTraffic v2"}
	if !slices.Equal(got, want) {
		t.Errorf("order:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A failed revision whose ApplicationStop fails too is still rolled back:
// the rollback goes on past it (CodeDeploy's ignoreApplicationStopFailures
// for the revision being removed) and says so.
func TestFailingApplicationStopOfTheFailedRevisionDoesNotStopTheRollback(t *testing.T) {
	a := newAgent(t, nil)
	mustStatus(t, a.deploy(a.bundle("v1", revision.Revision{Files: map[string]revision.File{"v": {Content: "1"}}})), api.StatusSucceeded)
	d := a.deploy(a.bundle("v2", revision.Revision{Files: map[string]revision.File{"v": {Content: "2"}},
		Hooks: map[string]string{"ValidateService": "exit 1", "ApplicationStop": "echo stopping v2 fails; exit 3"}}))
	mustStatus(t, d, api.StatusRolledBack)
	if a.destFile("v") != "1" {
		t.Errorf("not back on v1: %q", a.destFile("v"))
	}
	var stop *api.Step
	for i := range d.Steps {
		if s := &d.Steps[i]; s.Name == "ApplicationStop" && s.Rung != "" {
			stop = s
		}
	}
	if stop == nil || stop.Revision != "v2" || !strings.Contains(stop.Error+stop.Detail, "exit code 3") {
		t.Errorf("the rung's ApplicationStop of v2 should show its failure: %+v", stop)
	}
}

// The scripts of one event share CodeDeploy's per-event budget at run
// time: a second script gets only what the first left.
func TestScriptsOfOneEventShareTheEventBudget(t *testing.T) {
	a := newAgent(t, nil)
	a.stop()
	a.maxEvent = 1500 * time.Millisecond
	a.start()
	spec := "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: " + a.dest + "\nhooks:\n  BeforeInstall:\n" +
		"    - location: scripts/one.sh\n    - location: scripts/two.sh\n"
	rev := revision.Revision{AppSpec: spec, Raw: map[string]revision.File{
		"app/v":          {Content: "1"},
		"scripts/one.sh": {Content: "#!/bin/sh\nsleep 1\n", Mode: 0o755},
		"scripts/two.sh": {Content: "#!/bin/sh\nsleep 5\necho finished > " + filepath.Join(a.out, "two") + "\n", Mode: 0o755},
	}}
	d := a.deploy(a.bundle("v1", rev))
	if d.Status == api.StatusSucceeded || !strings.Contains(d.Error, "ScriptTimedOut") {
		t.Fatalf("two scripts past the event budget: %s: %s", d.Status, d.Error)
	}
	if _, err := os.Stat(filepath.Join(a.out, "two")); err == nil {
		t.Errorf("the second script ran to its end past the event budget")
	}
}
