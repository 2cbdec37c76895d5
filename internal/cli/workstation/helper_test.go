package workstation_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/cli"
	"github.com/rollback-agent/rollback-agent/internal/cli/workstation"
)

// agentctl must start without the AWS SDK (nor the agent's own packages
// that use it): that is what makes `agentctl status` start fast (B5).
func TestAgentctlLinksNoAWSSDK(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/rollback-agent/rollback-agent/cmd/agentctl").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/aws/") || strings.HasSuffix(dep, "/internal/cli/workstation") ||
			strings.HasSuffix(dep, "/internal/push") || strings.HasSuffix(dep, "/internal/awsconf") {
			t.Errorf("agentctl links %s: commands that need it belong in internal/cli/workstation (agentctl-aws)", dep)
		}
	}
}

// agentctl lists the workstation commands exactly as agentctl-aws, which
// runs them, does.
func TestAgentctlListsTheWorkstationCommands(t *testing.T) {
	var small, full bytes.Buffer
	if err := cli.Run(context.Background(), []string{"--help"}, &small, &small); err != nil {
		t.Fatal(err)
	}
	if err := cli.RunWith(context.Background(), []string{"--help"}, &full, &full, workstation.Commands); err != nil {
		t.Fatal(err)
	}
	if small.String() != full.String() {
		t.Errorf("agentctl --help and agentctl-aws --help differ:\n%s\n---\n%s", small.String(), full.String())
	}
	for _, c := range workstation.Commands(&cli.Globals{}) {
		if !strings.Contains(small.String(), "\n  "+c.Name()+" ") {
			t.Errorf("agentctl --help does not list %s", c.Name())
		}
	}
}

// build compiles the two executables into dir.
func build(t *testing.T, dir string, pkgs ...string) {
	t.Helper()
	for _, p := range pkgs {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, filepath.Base(p)), "github.com/rollback-agent/rollback-agent/cmd/"+p)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", p, err, out)
		}
	}
}

// run runs bin with args and returns its output and exit status.
func run(t *testing.T, dir, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(dir, bin), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "ROLLBACK_AGENT_SOCKET="+filepath.Join(dir, "no-agent.sock"))
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// Users type agentctl for every command: the workstation ones run in
// agentctl-aws beside it, with their own flags, help, output and exit
// status; without agentctl-aws they fail saying what is missing.
func TestWorkstationCommandsRunThroughTheHelper(t *testing.T) {
	dir := t.TempDir()
	build(t, dir, "agentctl", "agentctl-aws")
	out, code := run(t, dir, "agentctl", "-o", "json", "keygen", "--secret-key", "k.key", "--public-key", "k.pub")
	if code != 0 || !strings.Contains(out, `"key_id"`) {
		t.Fatalf("agentctl -o json keygen: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "k.pub")); err != nil {
		t.Errorf("keygen wrote no public key: %v", err)
	}
	for _, args := range [][]string{{"push", "--help"}, {"help", "push"}} {
		out, code = run(t, dir, "agentctl", args...)
		if code != 0 || !strings.Contains(out, "--bucket") || !strings.Contains(out, "agentctl push DIR") {
			t.Errorf("agentctl %s: exit %d, not push's own help:\n%s", strings.Join(args, " "), code, out)
		}
	}
	out, code = run(t, dir, "agentctl", "push")
	if code != cli.ExitUsage || !strings.Contains(out, "agentctl: ") {
		t.Errorf("agentctl push without its arguments: exit %d, want %d (usage):\n%s", code, cli.ExitUsage, out)
	}
	out, code = run(t, dir, "agentctl", "__complete", "push", "--buc")
	if !strings.Contains(out, "--bucket") {
		t.Errorf("completion of push's flags: exit %d\n%s", code, out)
	}
	// The daemon's commands never need the helper.
	os.Remove(filepath.Join(dir, "agentctl-aws"))
	if out, code = run(t, dir, "agentctl", "status"); code != cli.ExitUnreachable {
		t.Errorf("agentctl status with no agent: exit %d, want %d\n%s", code, cli.ExitUnreachable, out)
	}
	out, code = run(t, dir, "agentctl", "keygen", "--force")
	if _, err := os.Stat(filepath.Join(cli.HelperDir, cli.HelperName)); err == nil {
		// This machine has the package's: that is the one agentctl runs.
		if code != 0 {
			t.Errorf("agentctl keygen with %s installed: exit %d\n%s", cli.HelperDir, code, out)
		}
	} else if code != cli.ExitFailed || !strings.Contains(out, "agentctl-aws, which is not installed") {
		t.Errorf("agentctl keygen without agentctl-aws: exit %d\n%s", code, out)
	}
}
