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

// enforcedPeers is a second bed, with IAM enforced (stack_test.go,
// doctor_test.go); it shares peers' binaries.
var enforcedPeers = testbed.Lazy{Options: testbed.Options{EnforceIAM: true}}

func TestMain(m *testing.M) {
	code := m.Run()
	peers.Close()
	enforcedPeers.Close()
	os.Exit(code)
}

// The helpers every test uses (host, agentctl, awscli, the waits) are
// in host_test.go.
