package revision_test

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/rollback-agent/rollback-agent/"

// testDeps lists what the tests of pkg link (go list -deps -test).
func testDeps(t *testing.T, pkg string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-test", pkg)
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list -deps -test %s: %v\n%s", pkg, err, stderr)
	}
	return strings.Fields(string(out))
}

// The bundle builder and the tests of the pure packages that use it
// (or could) link nothing of the test bed's simulator: no moto, no AWS
// proxy, no EC2 simulation. A test that only needs a bundle then builds
// and starts without it.
func TestPureTestsDoNotLinkTheSimulator(t *testing.T) {
	for _, pkg := range []string{"internal/testbed/revision", "internal/engine", "internal/install", "internal/bundle"} {
		for _, d := range testDeps(t, mod+pkg) {
			if d == mod+"internal/testbed" {
				t.Errorf("the tests of %s link %s (the simulator); build bundles with internal/testbed/revision", pkg, d)
			}
		}
	}
	for _, d := range testDeps(t, mod+"internal/testbed/revision") {
		if strings.HasPrefix(d, "github.com/aws/") {
			t.Errorf("the bundle builder links %s", d)
		}
	}
}
