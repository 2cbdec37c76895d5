// Package journal is the agent's bbolt store: deployments and their steps,
// the checkpoint cache and the pointers (current, last good). The database
// file is locked exclusively, so one state directory has one daemon.
// docs/design.md says how the engine writes it (intent before side
// effects, result after).
package journal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/journal/aside"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the journal's name inside the state directory.
const FileName = aside.FileName

const pidFile = "agent.pid"

var bucketMeta = []byte("meta")

// ErrLocked means another process holds the journal.
var ErrLocked = errors.New("journal is locked by another rollback-agent")

// Journal is an open, exclusively locked journal.
type Journal struct {
	db      *bolt.DB
	path    string
	pidPath string

	// wmu serialises the witness's rewrites; trouble is what Open found.
	wmu     sync.Mutex
	trouble *Trouble
	// damaged is set on the scratch journal of an agent whose own is
	// damaged (OpenDamaged).
	damaged *damagedFile
}

// Open opens (creating if needed) the journal in stateDir and takes its
// lock. lockWait bounds how long to wait for another holder to go away.
func Open(stateDir string, lockWait time.Duration) (*Journal, error) {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("journal: create state dir %s: %w", stateDir, err)
	}
	path := filepath.Join(stateDir, FileName)
	pidPath := filepath.Join(stateDir, pidFile)
	if lockWait <= 0 {
		lockWait = 50 * time.Millisecond
	}
	fresh := isFresh(path)
	if err := checkLength(path); err != nil {
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	var db *bolt.DB
	// bbolt reports most damaged pages by panicking inside Open, after it
	// took its flock on the file it opened and mapped it: the lock is
	// released here, or it would outlive the failed Open (the mapping
	// keeps the open file alive whatever happens to the descriptor) and
	// keep OpenDamaged out for the life of the process. The mapping
	// itself stays until the process ends: address space only.
	var opened *os.File
	openFile := func(name string, flag int, mode os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, mode)
		opened = f
		return f, err
	}
	err := safely(path, func() (err error) {
		db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: lockWait, OpenFile: openFile})
		return err
	})
	if err != nil && opened != nil && !errors.Is(err, berrors.ErrTimeout) {
		// Harmless when bbolt closed it already (it did unless it panicked).
		if raw, rerr := opened.SyscallConn(); rerr == nil {
			_ = raw.Control(func(fd uintptr) { _ = syscall.Flock(int(fd), syscall.LOCK_UN) })
		}
		opened.Close()
	}
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			holder := "another process"
			if b, rerr := readSmall(pidPath, 64); rerr == nil {
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
					holder = fmt.Sprintf("rollback-agent pid %d", pid)
				}
			}
			return nil, fmt.Errorf("journal: %s is held by %s; only one agent may use state dir %s: %w", path, holder, stateDir, ErrLocked)
		}
		if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrVersionMismatch) || errors.Is(err, berrors.ErrChecksum) {
			err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	if err := check(db, path); err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: %w", err)
	}
	err = safely(path, func() error { return initBuckets(db) })
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: init buckets in %s: %w", path, err)
	}
	// The pid file only improves the "held by" message; the lock is the flock.
	if err := writePID(pidPath); err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: write %s: %w", pidPath, err)
	}
	j := &Journal{db: db, path: path, pidPath: pidPath}
	if err := j.checkWitness(fresh); err != nil {
		db.Close()
		return nil, err
	}
	return j, nil
}

// writePID writes the pid file, never through a link someone left there.
func writePID(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readSmall reads at most limit bytes of a file the agent wrote, without
// following a link: a file that grew beyond that is not the agent's.
func readSmall(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// Path is the journal file.
func (j *Journal) Path() string { return j.path }

// Close releases the lock.
func (j *Journal) Close() error {
	os.Remove(j.pidPath)
	if j.damaged != nil {
		defer j.damaged.close()
	}
	if err := j.db.Close(); err != nil {
		return fmt.Errorf("journal: close %s: %w", j.path, err)
	}
	return nil
}

// GetMeta returns a value of the meta bucket ("" when absent).
func (j *Journal) GetMeta(key string) (string, error) {
	var out string
	err := j.view(func(tx *bolt.Tx) error {
		out = string(tx.Bucket(bucketMeta).Get([]byte(key)))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("journal: read meta %s: %w", key, err)
	}
	return out, nil
}

// SetMeta stores a value in the meta bucket.
func (j *Journal) SetMeta(key, value string) error {
	err := j.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put([]byte(key), []byte(value))
	})
	if err != nil {
		return fmt.Errorf("journal: write meta %s: %w", key, err)
	}
	return nil
}

// initBuckets makes the buckets a new journal lacks.
func initBuckets(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets() {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
}

func allBuckets() [][]byte {
	return [][]byte{bucketMeta, bucketDeployments, bucketOrder, bucketPointers, bucketCheckpoints}
}
