// Package hostile is the hostile-input suite: a corpus of bundles,
// appspecs, configs, manifests and socket requests in testdata/hostile/,
// each with the error the product must answer, fed to the real binaries
// and parsers. It holds tests only.
package hostile

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
