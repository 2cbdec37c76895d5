package journal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// filled is a journal with some records, closed, and its path.
func filled(t *testing.T) (dir, path string) {
	t.Helper()
	dir = t.TempDir()
	j, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		d := &api.Deployment{ID: fmt.Sprintf("d-%09d", i), Kind: api.KindDeploy, Status: api.StatusSucceeded, Revision: strings.Repeat("r", 200)}
		if err := j.PutDeployment(d); err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	return dir, filepath.Join(dir, FileName)
}

// Data pages overwritten (power loss, a bad disk): bbolt would panic on
// the first read of them ("page expected to be..."). Open's check finds
// it and says the journal is damaged; nothing panics.
func TestDamagedPagesAreFoundAtOpen(t *testing.T) {
	for _, page := range []int64{2, 3, 4, 5} {
		t.Run(fmt.Sprint("page ", page), func(t *testing.T) {
			dir, path := filled(t)
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			junk := []byte(strings.Repeat("\xa5", 4096))
			if _, err := f.WriteAt(junk, page*int64(os.Getpagesize())); err != nil {
				t.Fatal(err)
			}
			f.Close()
			_, err = Open(dir, 0)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Fatalf("open of a damaged journal: %v", err)
			}
		})
	}
}

// The meta pages gone (the file cut short, zeroed): a clear error.
func TestZeroedJournalIsCorrupt(t *testing.T) {
	dir, path := filled(t)
	if err := os.WriteFile(path, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open of a zeroed journal: %v", err)
	}
}

// One record that does not decode: the list comes back without it, with
// a DamagedError naming it; reading it alone is ErrCorrupt.
func TestDamagedRecordIsNamed(t *testing.T) {
	dir, path := filled(t)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDeployments).Put([]byte("d-000000007"), []byte(`{"id":`))
	})
	db.Close()
	j, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	list, err := j.Deployments(0)
	var de *DamagedError
	if !errors.As(err, &de) || !errors.Is(err, ErrCorrupt) || len(de.IDs) != 1 || de.IDs[0] != "d-000000007" || len(list) != 49 {
		t.Fatalf("list: %d records, err %v", len(list), err)
	}
	if _, err := j.Deployment("d-000000007"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read of the damaged record: %v", err)
	}
}

// A file cut short of the pages its meta page names: bbolt would map it
// and fault (SIGBUS, which no recover catches) on the first page past
// the end, at every start. Open refuses it first. (bbolt grows the file
// ahead of its high-water mark: a cut that only loses pages past the
// mark loses nothing and opens.)
func TestCutShortJournalIsCorrupt(t *testing.T) {
	page := int64(os.Getpagesize())
	for _, size := range []int64{2 * page, 3 * page} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			dir, path := filled(t)
			fi, _ := os.Stat(path)
			if err := os.Truncate(path, size); err != nil {
				t.Fatal(err)
			}
			_, err := Open(dir, 0)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "cut short") {
				t.Fatalf("open of a journal cut to %d of %d bytes: %v", size, fi.Size(), err)
			}
		})
	}
}

// A file of a few KiB with no valid meta page (a text file put in its
// place): bbolt would map it and read its second meta page past the end.
func TestShortFileWithoutMetaIsCorrupt(t *testing.T) {
	dir, path := filled(t)
	if err := os.WriteFile(path, []byte(strings.Repeat("deployments: none\n", 170)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, 0); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "too short to be a journal") {
		t.Fatalf("open of a 3 KiB text file: %v", err)
	}
}
