package source

import (
	"os"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// peers is moto and the AWS proxy, started by the first test that needs
// them (the channel tests) and shared by the package's tests.
var peers testbed.Lazy

func TestMain(m *testing.M) {
	code := m.Run()
	peers.Close()
	os.Exit(code)
}
