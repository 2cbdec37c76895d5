package e2e

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// The package-manager hook the packages ship, run against the real agent:
// off by default (the agent takes no checkpoint, the hook lets the
// transaction go on and prints nothing on stdout), and on with one line
// in agent.yaml (a checkpoint with reason package-manager and the hook's
// label appears in the catalogue, which comes from AWS).
func TestPackageHookAgainstTheRealAgent(t *testing.T) {
	h := newHost(t, "")
	h.start()
	root, err := testbed.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	hook := filepath.Join(root, "packaging", "hooks", "package-hook")
	run := func() string {
		t.Helper()
		cmd := exec.Command(hook, "apt")
		cmd.Env = append(slices.Clone(h.env), "ROLLBACK_AGENT_AGENTCTL="+h.bins.Agentctl, "ROLLBACK_AGENT_SOCKET="+h.socket)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("package-hook failed the transaction: %v\n%s", err, stderr.String())
		}
		if stdout.Len() != 0 {
			t.Errorf("package-hook wrote to stdout: %q", stdout.String())
		}
		return stderr.String()
	}
	fromHook := func() []api.Checkpoint {
		t.Helper()
		var l api.CheckpointList
		h.ctlJSON(&l, "checkpoint", "list")
		var out []api.Checkpoint
		for _, c := range l.Checkpoints {
			if c.Reason == "package-manager" {
				out = append(out, c)
			}
		}
		return out
	}

	if msg := run(); !strings.Contains(msg, "checkpoint.package_managers") {
		t.Errorf("with the feature off the hook should say how to turn it on: %q", msg)
	}
	if got := fromHook(); len(got) != 0 {
		t.Fatalf("a checkpoint was taken with the feature off: %+v", got)
	}

	h.agent.Stop()
	h.writeConfig("checkpoint: {package_managers: true}\n")
	h.start()
	if msg := run(); strings.Contains(msg, "going on without one") {
		t.Fatalf("with the feature on the hook got no checkpoint: %q", msg)
	}
	h.waitFor(30*time.Second, "a package-manager checkpoint labelled by the hook", func() error {
		if got := fromHook(); len(got) != 1 || !strings.HasPrefix(got[0].Label, "apt ") {
			return fmt.Errorf("package-manager checkpoints %+v", got)
		}
		return nil
	})
}
