// Package aside moves a damaged journal out of the agent's way. It is
// apart from package journal so that agentctl (`recover journal`) does
// not link bbolt (cmd/agentctl/deps_test.go).
package aside

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// FileName is the journal's name in the state dir.
const FileName = "journal.db"

// TroubleJournalLost is the trouble the agent reports when its journal
// is not the one its witness names (journal.TroubleJournalLost).
const TroubleJournalLost = "journal-lost"

// TroubleJournalDamaged is the trouble the agent reports when its
// journal cannot be read (journal.TroubleJournalDamaged).
const TroubleJournalDamaged = "journal-damaged"

// ErrHeld is a journal an agent still has open.
var ErrHeld = errors.New("the journal is in use by a running agent")

// MoveAside renames a damaged journal in stateDir to
// journal.db.damaged-<UTC time>, kept for inspection, and returns the new
// path. It refuses while an agent holds the file (bbolt's flock): the
// agent must be stopped first. The witness stays: the agent started next
// reports the journal lost (needs_operator until acknowledged) and keeps
// refusing older channel sequences.
func MoveAside(stateDir string, now time.Time) (string, error) {
	path := filepath.Join(stateDir, FileName)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("journal: open %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return "", fmt.Errorf("journal: %s: %w (stop it first: systemctl stop rollback-agent)", path, ErrHeld)
	}
	aside := fmt.Sprintf("%s.damaged-%s", path, now.UTC().Format("20060102T150405Z"))
	if err := unix.Renameat2(unix.AT_FDCWD, path, unix.AT_FDCWD, aside, unix.RENAME_NOREPLACE); err != nil {
		return "", fmt.Errorf("journal: move %s to %s: %w", path, aside, err)
	}
	if d, err := os.Open(stateDir); err == nil {
		d.Sync()
		d.Close()
	}
	return aside, nil
}
