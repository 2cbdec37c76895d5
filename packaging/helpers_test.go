// Package packaging_test checks what `make rpm deb` builds, the systemd
// unit, the user-data installer and the package-manager hooks, with the
// real tools: nfpm (pinned, in ./bin), rpm, dpkg-deb, systemd-analyze,
// systemd-sysusers, systemd-tmpfiles, apt-config and shellcheck
// (`make ostools` installs the missing ones). Only systemctl is a stub:
// systemd is not PID 1 here.
package packaging_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/docs"
)

// repoRoot is the checkout the tests build from.
func repoRoot(t *testing.T) string {
	t.Helper()
	r, err := docs.RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// need fails (never skips) when a tool the test drives is missing.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run `make ostools` (make test does)", tool)
		}
	}
}

// run runs a command and returns its stdout; it fails the test on error,
// showing stderr.
func run(t *testing.T, env []string, dir, name string, args ...string) string {
	t.Helper()
	out, errOut, err := runErr(env, dir, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// runErr runs a command with a bound, returning stdout, stderr and error.
func runErr(env []string, dir, name string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// buildBinary builds a command of the module the way the release build
// does (static, -trimpath), so it links from the compile `make test`'s vet
// left in the cache.
func buildBinary(t *testing.T, root, pkg, out string) {
	t.Helper()
	run(t, []string{"CGO_ENABLED=0"}, root, "go", "build", "-trimpath", "-o", out, pkg)
}

// writeFile writes a file, creating its directory.
func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// glob1 returns the one file matching pattern.
func glob1(t *testing.T, pattern string) string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil || len(m) != 1 {
		t.Fatalf("want one file matching %s, got %v (%v)", pattern, m, err)
	}
	return m[0]
}
