package hostile

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// host is one agent "on" one test-bed instance, as in internal/e2e (test
// files cannot be imported, so the pattern is copied, trimmed).
type host struct {
	t        *testing.T
	bed      *testbed.Bed
	bins     testbed.Binaries
	dir      string
	stateDir string
	socket   string
	config   string
	// inbox is the folder the agent watches for bundles (sources.inbox).
	inbox string
	env   []string
	agent *testbed.Agent
}

// noRaceExitSleep drops the race runtime's one-second sleep at exit
// (keeping any other GORACE option): the suite runs agentctl twice per
// case, and under -race the binaries are built with -race too.
var noRaceExitSleep = "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")

// testGID is a numeric socket group that need not exist in /etc/group.
const testGID = 4242

// hostConfig keeps deployments small and fast: caps low enough for the
// bombs of the corpus to hit (limits.*), no EBS checkpoint (the corpus is
// about input, not rollback points), no health checks. The inbox is on
// for the inbox cases; signatures are not required, so a bundle renamed
// in without a manifest is taken (the inbox's own rule, not trust's).
const hostConfig = `application: demo
state_dir: %s
socket: %s
socket_group: "%d"
devices: {by_id_dir: %s}
log_level: debug
checkpoint: {before_deploy: [], required: false}
limits: {max_unpacked_bytes: 2MiB, max_files: 50, max_file_bytes: 1MiB}
boot: {assess: false}
sources: {inbox: %s}
trust: {require_signature: false}
`

func newHost(t *testing.T) *host {
	t.Helper()
	bed := peers.Get(t)
	bins := peers.Binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := bed.NewInstance(ctx, testbed.InstanceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inst.Close)
	dir := t.TempDir()
	h := &host{t: t, bed: bed, bins: bins, dir: dir, stateDir: filepath.Join(dir, "state"),
		socket: filepath.Join(dir, "run", "agent.sock"), config: filepath.Join(dir, "agent.yaml"),
		inbox: filepath.Join(dir, "state", "inbox"),
		env:   append(inst.Env(), noRaceExitSleep)}
	cfg := fmt.Sprintf(hostConfig, h.stateDir, h.socket, testGID, filepath.Join(dir, "by-id"), h.inbox)
	if err := os.WriteFile(h.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return h
}

// start runs the agent and waits until it answers.
func (h *host) start() {
	h.t.Helper()
	a, err := testbed.StartAgent(h.bins.Agent, h.config, h.socket, h.env)
	if err != nil {
		h.t.Fatal(err)
	}
	h.agent = a
	h.t.Cleanup(func() {
		a.Stop()
		if h.t.Failed() {
			h.t.Logf("agent output (tail):\n%s", tail(a.Output(), 4000))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.WaitReady(ctx); err != nil {
		h.t.Fatal(err)
	}
	// The inbox makes processing/ once it watches and has listed what
	// was there: from then on a file renamed in is seen arriving.
	testutil.WaitFor(h.t, 30*time.Second, "the inbox to be watched", func() error {
		_, err := os.Stat(filepath.Join(h.inbox, "processing"))
		return err
	})
}

type ctlResult struct {
	code           int
	stdout, stderr string
}

// ctl runs agentctl against this host's agent. It is called from the
// cases' subtests, so it reports a failure to run as exit -1 rather than
// through the host's own t.
func (h *host) ctl(args ...string) ctlResult {
	cmd := exec.Command(h.bins.Agentctl, append([]string{"--socket", h.socket}, args...)...)
	cmd.Env = h.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		return ctlResult{code: -1, stderr: fmt.Sprintf("run agentctl %v: %v", args, err)}
	}
	return ctlResult{code: code, stdout: out.String(), stderr: errb.String()}
}

// alive checks, after a case, that the daemon process still runs and
// answers agentctl status: no hostile input may take it down.
func (h *host) alive() error {
	if h.agent.Exited() {
		return fmt.Errorf("the agent exited:\n%s", tail(h.agent.Output(), 3000))
	}
	if r := h.ctl("status"); r.code != 0 {
		return fmt.Errorf("agentctl status: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	return nil
}

// peakRSS is the agent's VmHWM in bytes; resetPeak starts a new peak
// (writing 5 to clear_refs resets it), so a bomb is measured alone.
func (h *host) peakRSS() (int64, error) { return vmHWM(h.agent.PID()) }

// vmHWM reads a process's peak resident set size, in bytes.
func vmHWM(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

func (h *host) resetPeak() error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", h.agent.PID()), []byte("5"), 0)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
