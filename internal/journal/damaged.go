package journal

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// A journal that cannot be read (bbolt refuses it, or its pages fail the
// consistency check) cannot be mended by restarting, and a crash loop
// would leave the operator no way to ask the agent what is wrong. So the
// agent starts on a scratch journal: empty, in a private temporary
// directory (the unit's RuntimeDirectory), removed when the agent stops
// and replaced at its next start if it was killed. It reports TroubleJournalDamaged
// (needs_operator, with what to do), answers status and doctor, and
// takes no work: the daemon starts no engine and no source, and the
// scratch journal refuses to move the witness's channel floors or be
// acknowledged. The damaged file is held locked, never written, so that
// `agentctl recover journal` (package aside) waits for the agent to stop
// and one state dir still has one agent.

// ErrDamagedRecord refuses what only an operator's recovery may do.
var ErrDamagedRecord = errors.New("the journal is damaged")

// damagedFile is the damaged journal, held locked, and the scratch dir.
type damagedFile struct {
	fd      int
	scratch string
}

func (d *damagedFile) close() {
	unix.Close(d.fd)
	os.RemoveAll(d.scratch)
}

// OpenDamaged is the journal of an agent whose journal in stateDir is
// damaged (Open failed with ErrCorrupt, given as cause).
func OpenDamaged(stateDir string, cause error) (*Journal, error) {
	path := filepath.Join(stateDir, FileName)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("journal: open damaged %s: %w", path, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("journal: %s is held by another process; only one agent may use state dir %s: %w", path, stateDir, ErrLocked)
	}
	scratch, err := scratchDir(stateDir)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("journal: scratch journal for a damaged %s: %w", path, err)
	}
	df := &damagedFile{fd: fd, scratch: scratch}
	db, err := bolt.Open(filepath.Join(scratch, FileName), 0o600, &bolt.Options{Timeout: time.Second})
	if err == nil {
		if err = initBuckets(db); err != nil {
			db.Close()
		}
	}
	if err != nil {
		df.close()
		return nil, fmt.Errorf("journal: scratch journal in %s: %w", scratch, err)
	}
	pidPath := filepath.Join(stateDir, pidFile)
	if err := writePID(pidPath); err != nil {
		db.Close()
		df.close()
		return nil, fmt.Errorf("journal: write %s: %w", pidPath, err)
	}
	j := &Journal{db: db, path: path, pidPath: pidPath, damaged: df}
	j.trouble = &Trouble{Kind: TroubleJournalDamaged, Since: time.Now().UTC(),
		What: fmt.Sprintf("the journal %s cannot be read (%v); the agent does not know what it deployed, and takes no work", path, cause),
		Next: fmt.Sprintf("stop the agent (systemctl stop rollback-agent), run `agentctl recover journal --state-dir %s` "+
			"(moves the damaged file aside, kept for inspection), start the agent: it rebuilds what it can from releases/ and the "+
			"checkpoints' AWS tags, and reports %s until you check the host and run `agentctl acknowledge %s`",
			stateDir, TroubleJournalLost, TroubleJournalLost)}
	return j, nil
}

// scratchDir makes the scratch journal's directory: in the unit's
// RuntimeDirectory (a tmpfs systemd empties) when there is one, else in
// the temporary directory; named after the state dir, so that one left
// by an agent that was killed is replaced, not piled up (this agent
// holds the state dir's lock: no other uses it).
func scratchDir(stateDir string) (string, error) {
	base := os.TempDir()
	if rd, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); rd != "" {
		base = rd
	}
	sum := sha256.Sum256([]byte(filepath.Clean(stateDir)))
	dir := filepath.Join(base, "rollback-agent-scratch-journal-"+hex.EncodeToString(sum[:6]))
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	return dir, os.Mkdir(dir, 0o700)
}

// Damaged reports whether this is the scratch journal of an agent whose
// own journal is damaged.
func (j *Journal) Damaged() bool { return j.damaged != nil }

// metaRebuilt keeps what RebuildInstalled rebuilt, for the trouble's
// description after a restart before the acknowledgement.
const metaRebuilt = "rebuilt_from_releases"

// RebuildInstalled records on a new journal, one that replaced a lost
// one (TroubleJournalLost), the installed release the daemon found on
// disk and, when a later Install of another release did not complete,
// that Install's intent (so that the next Install knows both manifests'
// files, as after a crash), and adds note to the trouble's description.
// It does nothing when the journal already knows what is installed
// (but says again what it rebuilt before).
func (j *Journal) RebuildInstalled(id string, interrupted *InstallIntent, note string) (bool, error) {
	t := j.Trouble()
	if t == nil || t.Kind != TroubleJournalLost {
		return false, nil
	}
	cur, err := j.Pointer(PointerInstalled)
	if err != nil {
		return false, err
	}
	if cur != "" {
		if old, err := j.GetMeta(metaRebuilt); err == nil && old != "" {
			j.noteRebuilt(old)
		}
		return false, nil
	}
	err = j.Update(func(tx *Tx) error {
		if err := tx.SetPointer(PointerInstalled, id); err != nil {
			return err
		}
		if interrupted != nil {
			if err := tx.SetInstallIntent(interrupted); err != nil {
				return err
			}
		}
		return tx.tx.Bucket(bucketMeta).Put([]byte(metaRebuilt), []byte(note))
	})
	if err != nil {
		return false, err
	}
	j.noteRebuilt(note)
	return true, nil
}

func (j *Journal) noteRebuilt(note string) {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	if j.trouble != nil && !strings.Contains(j.trouble.What, note) {
		j.trouble.What += "; rebuilt from releases/: " + note
	}
}
