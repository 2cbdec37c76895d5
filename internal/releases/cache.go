package releases

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/rollback-agent/rollback-agent/internal/bundle"
	"github.com/rollback-agent/rollback-agent/internal/install"
)

// A rollback between two large revisions reads the digests of the target
// (files.json) and the manifest of what is installed, and writes a new
// manifest: tens of milliseconds of JSON each for 10 000 files, every
// time, for files the agent itself wrote a moment ago. The store keeps
// the last few it wrote or read in memory, each with the identity of its
// file (device, inode, size, mtime, ctime). A file whose lstat no longer
// matches is read again: any write, chmod or replacement changes ctime,
// which nobody can set back, so what is used is always what is on disk.

// cacheSlots bounds the cache: the digests and manifests of the installed
// release and of the one a rollback goes back to.
const cacheSlots = 4

type fileID struct {
	dev, ino    uint64
	size        int64
	mtime, ctim int64
}

func identify(path string) (fileID, bool) {
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		return fileID{}, false
	}
	return fileID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctim: st.Ctim.Nano()}, true
}

type cached struct {
	path string
	id   fileID
	val  any
}

// fileCache holds decoded files by path, newest last.
type fileCache struct {
	mu    sync.Mutex
	slots []cached
}

// get returns what was cached for path if the file is still the same.
func (c *fileCache) get(path string) (any, bool) {
	id, ok := identify(path)
	if !ok {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, s := range c.slots {
		if s.path == path {
			if s.id != id {
				c.slots = append(c.slots[:i], c.slots[i+1:]...)
				return nil, false
			}
			return s.val, true
		}
	}
	return nil, false
}

// drop forgets path.
func (c *fileCache) drop(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, s := range c.slots {
		if s.path == path {
			c.slots = append(c.slots[:i], c.slots[i+1:]...)
			return
		}
	}
}

// put caches val as the decoded content of path as it is now.
func (c *fileCache) put(path string, val any) {
	c.drop(path)
	id, ok := identify(path)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.slots) == cacheSlots {
		c.slots = c.slots[1:]
	}
	c.slots = append(c.slots, cached{path: path, id: id, val: val})
}

// ReadManifest reads an install manifest of the store (see
// install.ReadManifest). The result is shared: callers must not change it.
func (s *Store) ReadManifest(path string) (*install.Manifest, error) {
	if v, ok := s.cache.get(path); ok {
		return v.(*install.Manifest), nil
	}
	m, err := install.ReadManifest(path)
	if err != nil {
		return nil, err
	}
	if len(m.Entries) > 0 {
		s.cache.put(path, m)
	}
	return m, nil
}

// CommitManifest makes the partial manifest of a completed Install of
// release id its manifest; m is what that Install wrote.
func (s *Store) CommitManifest(id string, m *install.Manifest) error {
	partial, final := s.PartialManifestPath(id), s.ManifestPath(id)
	s.cache.drop(partial)
	if err := os.Rename(partial, final); err != nil {
		return fmt.Errorf("install: commit manifest of %s: %w", id, err)
	}
	if m != nil {
		s.cache.put(final, m)
	}
	return nil
}

// rememberEntries caches the digests Unpack just wrote to files.json.
func (s *Store) rememberEntries(id string, list []bundle.Entry) {
	m := make(map[string]bundle.Entry, len(list))
	for _, e := range list {
		m[e.Path] = e
	}
	s.cache.put(s.filesPath(id), m)
}

// entriesCached is Entries through the cache.
func (s *Store) entriesCached(id string, read func() (map[string]bundle.Entry, error)) (map[string]bundle.Entry, error) {
	path := s.filesPath(id)
	if v, ok := s.cache.get(path); ok {
		return v.(map[string]bundle.Entry), nil
	}
	m, err := read()
	if err != nil {
		return nil, err
	}
	s.cache.put(path, m)
	return m, nil
}
