// Package e2e runs the real rollback-agent and agentctl binaries against
// the test bed (moto, ec2-metadata-mock, the AWS proxy) and checks what
// they leave behind with awscli.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

var peers testbed.Lazy

// enforcedPeers is a second bed, with IAM enforced (stack_test.go,
// doctor_test.go); it shares peers' binaries.
var enforcedPeers = testbed.Lazy{Options: testbed.Options{EnforceIAM: true}}

func TestMain(m *testing.M) {
	code := m.Run()
	peers.Close()
	enforcedPeers.Close()
	os.Exit(code)
}

// host is one agent "on" one instance: its files, config and process.
type host struct {
	t        *testing.T
	bed      *testbed.Bed
	inst     *testbed.Instance
	bins     testbed.Binaries
	dir      string
	stateDir string
	socket   string
	config   string
	env      []string
	byID     string
	agent    *testbed.Agent
}

// testGID is the socket group used by tests: a numeric gid that need not
// exist in /etc/group, so tests do not change the machine's users.
const testGID = 4242

// newHost creates an instance in moto and a config for an agent on it.
// extra is appended to the config (YAML at top level).
func newHost(t *testing.T, extra string) *host {
	t.Helper()
	return newHostWith(t, testbed.InstanceOptions{}, extra)
}

// newHostWith is newHost with instance options (the loop-device data plane).
func newHostWith(t *testing.T, opts testbed.InstanceOptions, extra string) *host {
	t.Helper()
	return newHostOn(t, peers.Get(t), opts, extra)
}

// newHostOn is newHostWith on a given bed.
func newHostOn(t *testing.T, bed *testbed.Bed, opts testbed.InstanceOptions, extra string) *host {
	t.Helper()
	bins := peers.Binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := bed.NewInstance(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inst.Close)
	dir := t.TempDir()
	// Other uids run agentctl in some tests: let them traverse to the socket.
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	h := &host{t: t, bed: bed, inst: inst, bins: bins, dir: dir,
		stateDir: filepath.Join(dir, "state"), socket: filepath.Join(dir, "run", "agent.sock"),
		config: filepath.Join(dir, "agent.yaml"), env: inst.Env(), byID: filepath.Join(dir, "by-id")}
	if inst.ByIDDir != "" {
		h.byID = inst.ByIDDir
	}
	h.writeConfig(extra)
	return h
}

func (h *host) writeConfig(extra string) {
	h.t.Helper()
	cfg := fmt.Sprintf(`application: demo
state_dir: %s
socket: %s
socket_group: "%d"
devices: {by_id_dir: %s}
log_level: debug
%s`, h.stateDir, h.socket, testGID, h.byID, extra)
	if err := os.WriteFile(h.config, []byte(cfg), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// start runs the agent and waits until it answers.
func (h *host) start(extraEnv ...string) {
	h.t.Helper()
	a, err := testbed.StartAgent(h.bins.Agent, h.config, h.socket, append(append([]string{}, h.env...), extraEnv...))
	if err != nil {
		h.t.Fatal(err)
	}
	h.agent = a
	h.t.Cleanup(func() {
		a.Stop()
		if h.t.Failed() {
			h.t.Logf("agent output:\n%s", a.Output())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.WaitReady(ctx); err != nil {
		h.t.Fatal(err)
	}
}

// runAgentToExit runs the agent expecting it to exit by itself.
func (h *host) runAgentToExit(env []string) (int, string) {
	h.t.Helper()
	a, err := testbed.StartAgent(h.bins.Agent, h.config, h.socket, env)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code, err := a.Wait(ctx)
	if err != nil {
		a.Kill()
		h.t.Fatalf("agent did not exit: %v\n%s", err, a.Output())
	}
	return code, a.Output()
}

type result struct {
	code           int
	stdout, stderr string
}

// ctl runs agentctl against this host's agent.
func (h *host) ctl(args ...string) result {
	h.t.Helper()
	return h.ctlAs(nil, args...)
}

// ctlAs runs agentctl with the given credentials (nil: as the test).
func (h *host) ctlAs(cred *syscall.Credential, args ...string) result {
	h.t.Helper()
	cmd := exec.Command(h.bins.Agentctl, append([]string{"--socket", h.socket}, args...)...)
	cmd.Env = h.env
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = "/"
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatalf("run agentctl %v: %v", args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// awscli runs the aws command against moto and decodes its JSON output.
func awscli(t *testing.T, bed *testbed.Bed, out any, args ...string) {
	t.Helper()
	cmd := exec.Command("aws", append(args, "--output", "json")...)
	cmd.Env = bed.CLIEnv()
	b, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("aws %s: decode: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
}
