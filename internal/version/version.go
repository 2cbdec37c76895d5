// Package version carries the build's version, set by the Makefile through
// -ldflags -X, and formats it the same way for both binaries.
package version

import (
	"fmt"
	"runtime"
)

// Set at link time: -X github.com/rollback-agent/rollback-agent/internal/version.Version=...
var (
	Version = "dev"
	Commit  = "unknown"
)

// Info is the version triple printed by `--version` and `agentctl version`.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
}

// Get returns this binary's version.
func Get() Info {
	return Info{Version: Version, Commit: Commit, GoVersion: runtime.Version()}
}

func (i Info) String() string {
	return fmt.Sprintf("%s (commit %s, %s)", i.Version, i.Commit, i.GoVersion)
}
