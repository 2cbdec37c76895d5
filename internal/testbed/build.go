package testbed

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Binaries are freshly built product binaries.
type Binaries struct {
	Dir      string
	Agent    string // rollback-agent
	Agentctl string
	// AgentctlAWS is beside Agentctl, which runs it for the workstation
	// commands.
	AgentctlAWS string
}

// Build compiles cmd/agent, cmd/agentctl and cmd/agentctl-aws into a new world-readable
// directory (tests run them as other users too). When the test binary is
// built with -race, so are they, so end-to-end tests also look for races
// in the daemon.
func Build(ctx context.Context) (Binaries, error) {
	root, err := RepoRoot()
	if err != nil {
		return Binaries{}, err
	}
	dir, err := os.MkdirTemp("", "rollback-agent-bin-")
	if err != nil {
		return Binaries{}, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return Binaries{}, err
	}
	b := Binaries{Dir: dir, Agent: filepath.Join(dir, "rollback-agent"), Agentctl: filepath.Join(dir, "agentctl"), AgentctlAWS: filepath.Join(dir, "agentctl-aws")}
	for out, pkg := range map[string]string{b.Agent: "./cmd/agent", b.Agentctl: "./cmd/agentctl", b.AgentctlAWS: "./cmd/agentctl-aws"} {
		args := []string{"build", "-trimpath"}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "-o", out, pkg)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		if outp, err := cmd.CombinedOutput(); err != nil {
			return Binaries{}, fmt.Errorf("testbed: go build %s: %w\n%s", pkg, err, outp)
		}
	}
	return b, nil
}
