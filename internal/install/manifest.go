// Package install carries out the `files` and `permissions` sections of an
// appspec: it removes what the previous revision installed (from its
// install manifest), copies the new revision, applies permissions and
// honours file_exists_behavior, writing a manifest of everything it
// created. Files whose installed copy is still exactly what the manifest
// recorded, and whose new content is the same, are left in place, so a
// rollback between two revisions that share most files is fast; the
// result is exactly what a full reinstall gives.
package install

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Entry kinds.
const (
	KindFile    = "file"
	KindDir     = "dir"
	KindSymlink = "symlink"
)

// Entry is one path an Install created.
type Entry struct {
	Path   string `json:"path"`
	Kind   string `json:"kind"`
	SHA256 string `json:"sha256,omitempty"`
	// Mode holds the permission bits including setuid, setgid and sticky,
	// in os.FileMode form.
	Mode   fs.FileMode `json:"mode"`
	UID    int         `json:"uid"`
	GID    int         `json:"gid"`
	MTime  int64       `json:"mtime,omitempty"` // source mtime, ns
	Target string      `json:"target,omitempty"`
	// Stat is the installed file's identity right after it was written;
	// a file whose lstat still matches was not touched since.
	Stat *StatKey `json:"stat,omitempty"`
	// ACL and SELinux mark entries whose extra attributes were set (such
	// files are always rewritten, and contexts are removed on cleanup).
	ACL     bool `json:"acl,omitempty"`
	SELinux bool `json:"selinux,omitempty"`
	// Pending marks the write-ahead record made before the path is
	// created; a crash leaves it without the final record.
	Pending bool `json:"pending,omitempty"`
}

// StatKey identifies a file's state: any write, chmod or chown changes
// ctime, which nobody can set back.
type StatKey struct {
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
	Size  int64  `json:"size"`
	MTime int64  `json:"mtime"`
	CTime int64  `json:"ctime"`
}

// Manifest is what one Install put on disk, in creation order.
type Manifest struct {
	Entries []Entry
}

// ReadManifest reads a manifest. Several records of one path keep the
// last; a torn last line (crash mid-write) is dropped. A missing file is
// an empty manifest.
func ReadManifest(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Manifest{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("install: read manifest %s: %w", path, err)
	}
	m := &Manifest{}
	index := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var e Entry
		if err := json.Unmarshal(line, &e); err != nil {
			// Only the last line may be torn; anything else is corruption.
			if !sc.Scan() {
				break
			}
			return nil, fmt.Errorf("install: manifest %s: corrupt record: %w", path, err)
		}
		if i, ok := index[e.Path]; ok {
			m.Entries[i] = e
			continue
		}
		index[e.Path] = len(m.Entries)
		m.Entries = append(m.Entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("install: manifest %s: %w", path, err)
	}
	return m, nil
}

// manifestWriter keeps the manifest of an Install in progress. Its file
// is a write-ahead log: a path's pending record is written (page cache)
// before the path is created, so after a SIGKILL nothing on disk is
// unaccounted for. Final records ride along with the next pending one,
// and records of kept files are not logged at all: they are already in
// the previous manifest, which the install intent keeps until this one
// is complete. finish writes every record.
type manifestWriter struct {
	path string
	f    *os.File
	all  []Entry
	idx  map[string]int
	// buf holds the records not yet written to the log.
	buf []byte
}

func newManifestWriter(path string) (*manifestWriter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("install: create manifest %s: %w", path, err)
	}
	return &manifestWriter{path: path, f: f, idx: map[string]int{}}, nil
}

// record logs e; a pending record reaches the file before record returns.
func (w *manifestWriter) record(e Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	w.buf = append(append(w.buf, b...), '\n')
	w.remember(e)
	if e.Pending {
		return w.flush()
	}
	return nil
}

// kept remembers the record of a file left in place, for finish only.
func (w *manifestWriter) kept(e Entry) { w.remember(e) }

func (w *manifestWriter) remember(e Entry) {
	if i, ok := w.idx[e.Path]; ok {
		w.all[i] = e
	} else {
		w.idx[e.Path] = len(w.all)
		w.all = append(w.all, e)
	}
}

// flush writes the buffered records with one write.
func (w *manifestWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if _, err := w.f.Write(w.buf); err != nil {
		return fmt.Errorf("install: write manifest %s: %w", w.path, err)
	}
	w.buf = w.buf[:0]
	return nil
}

// finish rewrites the manifest compactly (one record per path) and
// durably, replacing the append log atomically.
func (w *manifestWriter) finish() error {
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("install: close manifest %s: %w", w.path, err)
	}
	tmp := w.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("install: write manifest %s: %w", tmp, err)
	}
	bw := bufio.NewWriterSize(f, 256<<10)
	enc := json.NewEncoder(bw)
	for _, e := range w.all {
		if err := enc.Encode(e); err != nil {
			f.Close()
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("install: write manifest %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("install: sync manifest %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, w.path); err != nil {
		return fmt.Errorf("install: replace manifest %s: %w", w.path, err)
	}
	return nil
}

// abort ends a failed Install: the log keeps every record made so far,
// for the next Install to clean up after.
func (w *manifestWriter) abort() {
	w.flush()
	w.f.Close()
}
