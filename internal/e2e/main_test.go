// Package e2e runs the real rollback-agent and agentctl binaries against
// the test bed (moto, ec2-metadata-mock, the AWS proxy) and checks what
// they leave behind with awscli.
package e2e

import (
	"os"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

var peers testbed.Lazy

func TestMain(m *testing.M) {
	code := m.Run()
	peers.Close()
	os.Exit(code)
}

// The helpers every test uses (host, agentctl, awscli, the waits) are
// in host_test.go.
