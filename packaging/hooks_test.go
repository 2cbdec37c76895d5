package packaging_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

const hookPath = "packaging/hooks/package-hook"

// TestPackageHookArguments: the hook asks for exactly the checkpoint the
// issue names, keeps stdout clean (dnf5 parses it), and never fails.
func TestPackageHookArguments(t *testing.T) {
	root := repoRoot(t)
	dir := t.TempDir()
	argsFile := filepath.Join(dir, "args")
	fake := filepath.Join(dir, "agentctl")
	hook := filepath.Join(root, hookPath)

	for _, exit := range []int{0, 3} {
		writeFile(t, fake, "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >"+argsFile+"\nexit "+string(rune('0'+exit))+"\n", 0o755)
		stdout, stderr, err := runErr([]string{"ROLLBACK_AGENT_AGENTCTL=" + fake}, "", hook, "apt")
		if err != nil {
			t.Errorf("agentctl exit %d: the hook failed: %v\n%s", exit, err, stderr)
		}
		if stdout != "" {
			t.Errorf("the hook wrote to stdout: %q", stdout)
		}
		args := strings.Split(strings.TrimSpace(readFile(t, argsFile)), "\n")
		want := regexp.MustCompile(`^checkpoint create --reason package-manager --label apt \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ --wait=false --timeout \d+s$`)
		if !want.MatchString(strings.Join(args, " ")) || len(args) != 9 {
			t.Errorf("agentctl called with %q", args)
		}
		if exit != 0 && !strings.Contains(stderr, "going on without one") {
			t.Errorf("agentctl exit %d: the hook did not say so: %q", exit, stderr)
		}
	}

	// Inside a deployment's hook: no second checkpoint, no call at all.
	if err := os.Remove(argsFile); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := runErr([]string{"ROLLBACK_AGENT_AGENTCTL=" + fake, "ROLLBACK_AGENT_DEPLOYMENT_REVISION=v2"}, "", hook, "dnf"); err != nil {
		t.Errorf("the hook failed inside a deployment: %v %s", err, stderr)
	}
	if _, err := os.Stat(argsFile); !os.IsNotExist(err) {
		t.Error("the hook asked for a checkpoint inside a deployment's lifecycle hook")
	}
	// agentctl not installed: nothing to do, still exit 0.
	if _, _, err := runErr([]string{"ROLLBACK_AGENT_AGENTCTL=" + filepath.Join(dir, "missing")}, "", hook, "apt"); err != nil {
		t.Errorf("the hook failed without agentctl: %v", err)
	}
}

// TestPackageHookWithRealAgentctl runs the hook with the real agentctl:
// against a socket with no agent (exit 0, "going on"), and against an agent
// that says the feature is off (agentctl's no-op: exit 0, "no checkpoint").
// Both show the flags the hook passes are ones agentctl accepts.
func TestPackageHookWithRealAgentctl(t *testing.T) {
	need(t, "go")
	root := repoRoot(t)
	agentctl := filepath.Join(t.TempDir(), "agentctl")
	buildBinary(t, root, "./cmd/agentctl", agentctl)
	hook := filepath.Join(root, hookPath)

	stdout, stderr, err := runErr([]string{"ROLLBACK_AGENT_AGENTCTL=" + agentctl, "ROLLBACK_AGENT_SOCKET=" + filepath.Join(t.TempDir(), "none.sock")}, "", hook, "apt")
	if err != nil || stdout != "" || !strings.Contains(stderr, "going on without one") || strings.Contains(stderr, "usage") {
		t.Errorf("no agent: err %v, stdout %q, stderr %q", err, stdout, stderr)
	}

	sock, got := startDisabledAgent(t)
	stdout, stderr, err = runErr([]string{"ROLLBACK_AGENT_AGENTCTL=" + agentctl, "ROLLBACK_AGENT_SOCKET=" + sock}, "", hook, "dnf")
	if err != nil || stdout != "" || !strings.Contains(stderr, "no checkpoint:") || strings.Contains(stderr, "going on") {
		t.Errorf("feature off: err %v, stdout %q, stderr %q", err, stdout, stderr)
	}
	select {
	case req := <-got:
		if req.Reason != "package-manager" || !strings.HasPrefix(req.Label, "dnf ") {
			t.Errorf("the agent was asked %+v", req)
		}
	default:
		t.Error("the agent was not asked for a checkpoint")
	}
}

// startDisabledAgent answers POST /v1/checkpoints as an agent with
// checkpoint.package_managers off does, passing on what it was asked.
func startDisabledAgent(t *testing.T) (string, <-chan api.CheckpointRequest) {
	t.Helper()
	got := make(chan api.CheckpointRequest, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.PathCheckpoints, func(w http.ResponseWriter, r *http.Request) {
		var req api.CheckpointRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		select {
		case got <- req:
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: "checkpoints before package transactions are off (checkpoint.package_managers in agent.yaml)", Code: api.CodeDisabled})
	})
	return serveUnix(t, mux), got
}

// TestAptSnippetParses: apt itself reads the snippet and sees the hook.
func TestAptSnippetParses(t *testing.T) {
	need(t, "apt-config")
	root := repoRoot(t)
	out := run(t, nil, "", "apt-config", "-c", filepath.Join(root, "packaging/hooks/80rollback-agent"), "dump")
	if !strings.Contains(out, `DPkg::Pre-Invoke:: "/usr/lib/rollback-agent/package-hook apt || true";`) {
		t.Errorf("apt-config does not see the Pre-Invoke hook:\n%s", out)
	}
}

// TestDnfActionFiles checks the two dnf formats field by field.
func TestDnfActionFiles(t *testing.T) {
	root := repoRoot(t)
	lines := func(path string) []string {
		var out []string
		for _, l := range strings.Split(readFile(t, filepath.Join(root, path)), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				out = append(out, l)
			}
		}
		return out
	}
	// dnf5: callback_name:package_filter:direction:options:command
	d5 := lines("packaging/hooks/rollback-agent.actions")
	if len(d5) != 1 {
		t.Fatalf("dnf5 actions: %q", d5)
	}
	f := strings.SplitN(d5[0], ":", 5)
	if len(f) != 5 || f[0] != "pre_transaction" || f[1] != "" || f[2] != "" || f[3] != "enabled=host-only" || f[4] != "/usr/lib/rollback-agent/package-hook dnf" {
		t.Errorf("dnf5 action fields: %q", f)
	}
	// dnf4: package_filter:transaction_state:command (a shell command)
	d4 := lines("packaging/hooks/rollback-agent.action")
	if len(d4) != 1 {
		t.Fatalf("dnf4 action: %q", d4)
	}
	f = strings.SplitN(d4[0], ":", 3)
	if len(f) != 3 || f[0] != "*" || f[1] != "any" || f[2] != "/usr/lib/rollback-agent/package-hook dnf || true" {
		t.Errorf("dnf4 action fields: %q", f)
	}
}

// TestShellScripts runs shellcheck on every shell script shipped or run.
func TestShellScripts(t *testing.T) {
	need(t, "shellcheck")
	root := repoRoot(t)
	for _, s := range []string{"scripts/install.sh", "packaging/hooks/package-hook", "packaging/deb/postinst", "packaging/deb/prerm",
		"packaging/deb/postrm", "packaging/version.sh", ".ci/run"} {
		if out, errOut, err := runErr(nil, root, "shellcheck", s); err != nil {
			t.Errorf("shellcheck %s: %v\n%s%s", s, err, out, errOut)
		}
	}
	// RPM scriptlets have no shebang: rpm runs them with /bin/sh.
	for _, s := range []string{"postinstall.sh", "preremove.sh", "postremove.sh"} {
		if out, errOut, err := runErr(nil, root, "shellcheck", "--shell=sh", filepath.Join("packaging/rpm/scripts", s)); err != nil {
			t.Errorf("shellcheck %s: %v\n%s%s", s, err, out, errOut)
		}
	}
}
