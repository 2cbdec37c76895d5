package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
)

// A hook that kills the agent (`kill -9 $PPID` in ApplicationStop) would
// put it in a crash loop: the failed revision's ApplicationStop runs on
// the revision rung, the agent dies, recovery climbs the rung again and
// runs it again. The real daemon is started again after each death (as
// systemd would); after three deaths in that step the agent fails it
// instead of running it, the rung goes on (a failing ApplicationStop of
// the failed revision is tolerated there) and v1 comes back.
func TestHookThatKillsTheAgentDoesNotLoop(t *testing.T) {
	h := newHost(t, "")
	h.start()
	dest := filepath.Join(h.dir, "srv", "app")
	deaths := filepath.Join(h.dir, "deaths")
	v1 := h.bundle("v1", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "1"}}})
	v2 := h.bundle("v2", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "2"}}, Hooks: map[string]string{
		"ApplicationStop": fmt.Sprintf("echo x >> %s; kill -9 $PPID", deaths),
		"ValidateService": "echo v2 is broken >&2; exit 1",
	}})
	if r := h.ctl("deploy", v1, "--wait"); r.code != 0 {
		t.Fatalf("deploy v1: %s%s", r.stdout, r.stderr)
	}
	r := h.ctl("deploy", v2)
	if r.code != 0 {
		t.Fatalf("deploy v2: %s", r.stderr)
	}
	id := strings.Fields(r.stdout)[1]
	for death := 1; death <= 3; death++ {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		code, err := h.agent.Wait(ctx)
		cancel()
		if err != nil {
			h.agent.Kill()
			t.Fatalf("death %d: the agent did not die in v2's ApplicationStop: %v\n%s", death, err, h.agent.Output())
		}
		if b, _ := os.ReadFile(deaths); strings.Count(string(b), "x") != death {
			t.Fatalf("death %d (exit %d) but the hook ran %d times", death, code, strings.Count(string(b), "x"))
		}
		if death < 3 {
			// It dies again in the same step, maybe before a readiness
			// check could see it up.
			h.launch()
			continue
		}
		h.start()
	}
	d := h.waitEnd(id)
	if d.Status != api.StatusRolledBack {
		t.Fatalf("ended %s: %s", d.Status, d.Error)
	}
	if b, _ := os.ReadFile(deaths); strings.Count(string(b), "x") != 3 {
		t.Errorf("the killing hook ran %d times, want 3", strings.Count(string(b), "x"))
	}
	last := api.Step{}
	for _, s := range d.Steps {
		if s.Name == "ApplicationStop" && s.Revision == "v2" {
			last = s
		}
	}
	if last.Interrupted || !strings.Contains(last.Error, "the agent died 3 times while this step ran") {
		t.Errorf("v2's last ApplicationStop: %+v", last)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "v")); string(b) != "1" {
		t.Errorf("v=%q after the rollback", b)
	}
}
