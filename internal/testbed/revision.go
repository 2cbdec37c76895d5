package testbed

// Imported under another name: this package's tests have a func revision.
import bundlerev "github.com/rollback-agent/rollback-agent/internal/testbed/revision"

// Transitional aliases: the bundle builder moved to package
// internal/testbed/revision, which does not link the simulator. They
// keep code written against testbed.Revision compiling (branches in
// flight); new code imports revision, and these go once nothing uses
// them.
type (
	// Revision is revision.Revision.
	Revision = bundlerev.Revision
	// File is revision.File.
	File = bundlerev.File
)

// WriteZip is revision.WriteZip.
func WriteZip(path string, entries map[string]string) error {
	return bundlerev.WriteZip(path, entries)
}
