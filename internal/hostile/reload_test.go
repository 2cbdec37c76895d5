package hostile

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// runReload is the running daemon's side of a config case: the file
// replaces agent.yaml and the agent gets SIGHUP (systemctl reload). It
// must keep running on its previous config and report why the reload
// failed, with the same positions --check-config prints. The suite runs
// these last, so a daemon they kill cannot fail unrelated cases.
func runReload(t *testing.T, h *host, c *hostileCase) result {
	r := result{name: c.name + " (SIGHUP)", expected: c.expected(), ok: true}
	good, err := os.ReadFile(h.config)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// Back to the good config, so the next case starts clean.
		_ = os.WriteFile(h.config, good, 0o644)
		if !h.agent.Exited() {
			_ = h.agent.Signal(syscall.SIGHUP)
			waitReload(h, func(st api.Status) bool { return st.Config.ReloadError == "" })
		}
	}()
	bad, err := os.ReadFile(c.inputPath(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.config, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.agent.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	st, err := waitReload(h, func(st api.Status) bool { return st.Config.ReloadError != "" })
	switch {
	case h.agent.Exited():
		r.ok, r.got = false, "DAEMON DOWN: "+panicLine(h.agent.Output())
		t.Errorf("%s: the agent died on reload:\n%s", c.name, tail(h.agent.Output(), 3000))
		return r
	case err != nil:
		r.ok, r.got = false, err.Error()
		t.Errorf("%s: %v", c.name, err)
		return r
	}
	r.got = "kept running; reload error: " + secondLine(st.Config.ReloadError)
	for _, m := range c.Expect.checkText(st.Config.ReloadError, h.config) {
		r.ok = false
		t.Errorf("%s: reload error %s:\n%s", c.name, m, st.Config.ReloadError)
	}
	if err := h.alive(); err != nil {
		r.ok = false
		t.Errorf("%s: %v", c.name, err)
	}
	return r
}

// waitReload polls agentctl status until ok, the agent exits, or 10s.
// An answer that does not decode ends the wait with its error.
func waitReload(h *host, ok func(api.Status) bool) (api.Status, error) {
	var st api.Status
	err := testutil.Poll(10*time.Second, func() error {
		if h.agent.Exited() {
			return testutil.Stop(errors.New("the agent exited"))
		}
		res := h.ctl("status", "-o", "json")
		if res.code != 0 {
			return fmt.Errorf("agentctl status: exit %d: %s", res.code, res.stderr)
		}
		var now api.Status
		if err := json.Unmarshal([]byte(res.stdout), &now); err != nil {
			return testutil.Stop(fmt.Errorf("agentctl status -o json: %w\n%s", err, res.stdout))
		}
		if st = now; !ok(st) {
			return fmt.Errorf("no reload outcome in agentctl status within 10s (config %+v)", st.Config)
		}
		return nil
	})
	return st, err
}

// panicLine is the "panic: ..." line of a crashed agent's output.
func panicLine(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "panic: ") {
			return line
		}
	}
	return "exited (no panic line)"
}
