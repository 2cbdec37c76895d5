package main

import (
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/deptest"
)

// agentctl starts on every `agentctl status`: it links the client and the
// workstation commands, never the daemon's machinery. (install is
// linked for its plan check: `agentctl lint` validates a revision the way
// a deployment does, without touching anything.)
func TestDeps(t *testing.T) {
	const p = "github.com/rollback-agent/rollback-agent/internal/"
	deptest.Forbid(t, ".", map[string]string{
		"go.etcd.io/bbolt/...": "the journal belongs to the daemon (restore-instance and status read nothing of it)",
		p + "journal":          "the journal belongs to the daemon",
		p + "daemon":           "the daemon's wiring",
		p + "engine":           "the deployment engine runs in the daemon",
		p + "hooks":            "hooks run in the daemon",
		p + "health":           "checks run in the daemon",
		p + "server":           "the socket API's server side",
		p + "testbed/...":      "test-only",
	})
}
