package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// ErrCorrupt means the journal file is damaged: a page is not what bbolt
// expects, or a record does not decode. The agent then stops taking work
// and says so (docs/design.md, "When the journal cannot be written, or is damaged"); it never
// guesses what a damaged record said.
var ErrCorrupt = errors.New("the journal is damaged")

// view and update are bbolt's View and Update, with a panic inside bbolt
// (which is how it reports most damaged pages) turned into ErrCorrupt:
// a damaged file must not take the daemon down in a crash loop.
func (j *Journal) view(fn func(*bolt.Tx) error) error {
	return safely(j.path, func() error { return j.db.View(fn) })
}
func (j *Journal) update(fn func(*bolt.Tx) error) error {
	return safely(j.path, func() error { return j.db.Update(fn) })
}

func safely(path string, fn func() error) (err error) {
	// A damaged page id can point bbolt past the end of its mapping: a
	// memory fault, fatal unless this goroutine asks for it as a panic.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %s: %v", ErrCorrupt, path, p)
		}
	}()
	return fn()
}

// check walks every page of db (bbolt's consistency check): a file whose
// pages are damaged is found at open, not in the middle of a deployment.
func check(db *bolt.DB, path string) error {
	return safely(path, func() error {
		return db.View(func(tx *bolt.Tx) error {
			// Check walks in a goroutine of its own: the channel is drained
			// to its end, or the walk would go on reading pages after the
			// file is closed and unmapped (a fault no recover catches).
			var errs []error
			for err := range tx.Check() {
				if len(errs) < 5 {
					errs = append(errs, err)
				}
			}
			if len(errs) > 0 {
				return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, errors.Join(errs...))
			}
			return nil
		})
	})
}

// checkLength refuses a file cut shorter than its meta page says. bbolt
// maps the file and reads pages up to the high-water mark of its newest
// valid meta page; a page past the end of a file cut short (a file system
// repair, a copy that stopped) is a SIGBUS, which no recover() catches,
// and the agent would die at every start. A file whose meta pages are
// not valid is left to bbolt, which refuses it.
func checkLength(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // bbolt creates it, or says why not
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return nil
	}
	var best *metaPage
	pageSize := int64(os.Getpagesize())
	if m, ok := readMeta(f, 0); ok {
		best, pageSize = m, int64(m.pageSize)
	}
	if m, ok := readMeta(f, pageSize); ok && (best == nil || m.txid > best.txid) {
		best = m
	}
	if best == nil {
		// No valid meta page: bbolt refuses the file, unless it is short
		// enough that bbolt maps it and reads its second meta page past
		// the end (a text file of a few KiB).
		if fi.Size() < 2*int64(os.Getpagesize()) {
			return fmt.Errorf("%w: %s is %d bytes with no valid meta page: too short to be a journal", ErrCorrupt, path, fi.Size())
		}
		return nil
	}
	if need := int64(best.pgid) * int64(best.pageSize); need > fi.Size() {
		return fmt.Errorf("%w: %s is %d bytes, and its meta page (transaction %d) names %d pages of %d bytes (%d bytes): the file was cut short",
			ErrCorrupt, path, fi.Size(), best.txid, best.pgid, best.pageSize, need)
	}
	return nil
}

// metaPage is what checkLength reads of a bbolt meta page: after the
// 16-byte page header, magic, version, page size, flags, the root bucket
// (16 bytes), the freelist page, the high-water mark, the transaction id
// and an FNV-64a checksum of everything before it (bbolt's
// internal/common/meta.go), in the machine's byte order.
type metaPage struct {
	pageSize uint32
	pgid     uint64
	txid     uint64
}

const (
	boltMagic   = 0xED0CDAED
	boltVersion = 2
)

func readMeta(f *os.File, off int64) (*metaPage, bool) {
	var b [80]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		return nil, false
	}
	m := b[16:]
	ne := binary.NativeEndian
	h := fnv.New64a()
	h.Write(m[:56])
	if ne.Uint32(m[0:]) != boltMagic || ne.Uint32(m[4:]) != boltVersion || ne.Uint64(m[56:]) != h.Sum64() {
		return nil, false
	}
	mp := &metaPage{pageSize: ne.Uint32(m[8:]), pgid: ne.Uint64(m[40:]), txid: ne.Uint64(m[48:])}
	if mp.pageSize == 0 {
		return nil, false
	}
	return mp, true
}
