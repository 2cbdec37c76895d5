// Package deptest checks what a binary links, from `go list -deps`, so
// that a package reaching a binary that should not carry it (bbolt in
// agentctl, the workstation commands in the daemon) is a test failure
// rather than a surprise in start-up time or attack surface. Modelled on
// tailscale's tstest/deptest.
package deptest

import (
	"os/exec"
	"strings"
	"testing"
)

// Deps lists the import paths pkg links, standard library included.
func Deps(t *testing.T, pkg string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", pkg)
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
	}
	return strings.Fields(string(out))
}

// Forbid fails t for each dependency of pkg that the forbidden map
// names, saying why it is forbidden. A key is an import path, or a path
// ending in "/..." for the package and everything under it.
func Forbid(t *testing.T, pkg string, forbidden map[string]string) {
	t.Helper()
	for _, d := range Deps(t, pkg) {
		for pattern, why := range forbidden {
			tree, isTree := strings.CutSuffix(pattern, "/...")
			if d == pattern || (isTree && (d == tree || strings.HasPrefix(d, tree+"/"))) {
				t.Errorf("%s links %s: %s", pkg, d, why)
			}
		}
	}
}
