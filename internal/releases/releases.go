// Package releases is the on-disk store of unpacked revisions:
// releases/<deployment-id>/ holds the revision (archive/), its parsed
// appspec and file digests (release.json, files.json) and the manifest of
// what its Install put on disk (install.manifest). A rollback reinstalls
// from here without downloading anything.
package releases

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/bundle"
	"github.com/rollback-agent/rollback-agent/internal/install"
)

// Release is one unpacked revision.
type Release struct {
	ID            string           `json:"id"`
	Revision      string           `json:"revision"`
	Digest        string           `json:"digest"`
	Format        string           `json:"format"`
	Size          int64            `json:"size"`
	UnpackedBytes int64            `json:"unpacked_bytes"`
	StrippedDir   string           `json:"stripped_dir,omitempty"`
	CreatedAt     time.Time        `json:"created_at"`
	AppSpec       *appspec.AppSpec `json:"appspec"`
	// Warnings are what Validate found beyond the appspec's own: what
	// Install will do differently from CodeDeploy's agent, and how the
	// revision was opened to its hooks' users.
	Warnings []string `json:"warnings,omitempty"`
	// RunAs are the users the revision root is opened to.
	RunAs []string `json:"runas,omitempty"`
}

// Store is the releases directory.
type Store struct {
	dir   string
	cache *fileCache
}

// Open returns the store under stateDir, creating it. It is searchable but
// not readable by others (0711): hooks that run as other users reach the
// revisions opened to them (see access.go) without seeing the others.
func Open(stateDir string) (*Store, error) {
	dir := filepath.Join(stateDir, "releases")
	if err := os.MkdirAll(dir, storeDirMode); err != nil {
		return nil, fmt.Errorf("releases: create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, storeDirMode); err != nil {
		return nil, fmt.Errorf("releases: chmod %s: %w", dir, err)
	}
	return &Store{dir: dir, cache: &fileCache{}}, nil
}

// Dir is the directory of a release.
func (s *Store) Dir(id string) string { return filepath.Join(s.dir, id) }

// ArchiveDir is the unpacked revision root of a release.
func (s *Store) ArchiveDir(id string) string { return filepath.Join(s.dir, id, "archive") }

// ManifestPath is where the manifest of the release's last completed
// Install lives.
func (s *Store) ManifestPath(id string) string { return filepath.Join(s.dir, id, "install.manifest") }

// PartialManifestPath is where an Install in progress writes; it becomes
// ManifestPath when the Install completes. Until then the previous
// manifest stays intact, so a crash loses no record of what is on disk.
func (s *Store) PartialManifestPath(id string) string {
	return filepath.Join(s.dir, id, "install.manifest.partial")
}

func (s *Store) metaPath(id string) string   { return filepath.Join(s.dir, id, "release.json") }
func (s *Store) filesPath(id string) string  { return filepath.Join(s.dir, id, "files.json") }
func (s *Store) unpackPath(id string) string { return filepath.Join(s.dir, id, "unpack.json") }

// Exists reports whether the release's revision is on disk and complete.
func (s *Store) Exists(id string) bool {
	_, err := os.Stat(s.metaPath(id))
	return err == nil
}

// Unpack unpacks the bundle into release id (replacing a leftover of a
// crash) and records the file digests. On error nothing of the release
// stays on disk.
func (s *Store) Unpack(ctx context.Context, id, bundlePath string, lim bundle.Limits) (*bundle.Result, error) {
	dir := s.Dir(id)
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("releases: clear %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, releaseDirMode); err != nil {
		return nil, fmt.Errorf("releases: create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, releaseDirMode); err != nil {
		return nil, fmt.Errorf("releases: chmod %s: %w", dir, err)
	}
	res, err := bundle.UnpackFile(ctx, bundlePath, s.ArchiveDir(id), lim)
	if err == nil {
		err = writeJSON(s.filesPath(id), res.Entries)
	}
	if err == nil {
		sum := *res
		sum.Entries = nil
		err = writeJSON(s.unpackPath(id), &sum)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.rememberEntries(id, res.Entries)
	return res, nil
}

// Validate parses and validates the unpacked revision's appspec once,
// checks that Install would accept its files and permissions, opens the
// revision to its hooks' runas users, and completes the release record.
// On error the release is removed: a revision that does not validate is
// never installed, and nothing has run.
func (s *Store) Validate(id, revision string, opts appspec.Options) (*Release, error) {
	var res bundle.Result
	if err := readJSON(s.unpackPath(id), &res); err != nil {
		return nil, fmt.Errorf("releases: release %s was not unpacked: %w", id, err)
	}
	spec, err := appspec.Load(s.ArchiveDir(id), opts)
	if err != nil {
		os.RemoveAll(s.Dir(id))
		return nil, err
	}
	digests, err := s.Entries(id)
	if err != nil {
		os.RemoveAll(s.Dir(id))
		return nil, err
	}
	warnings, err := install.Check(spec, s.ArchiveDir(id), digests)
	if err != nil {
		os.RemoveAll(s.Dir(id))
		return nil, err
	}
	users := runAsUsers(spec)
	w, err := s.openTo(id, users)
	if err != nil {
		os.RemoveAll(s.Dir(id))
		return nil, err
	}
	if w != "" {
		warnings = append(warnings, w)
	}
	rel := &Release{
		ID: id, Revision: revision, Digest: res.SHA256, Format: string(res.Format), Size: res.Size,
		UnpackedBytes: res.UnpackedBytes, StrippedDir: res.StrippedDir, CreatedAt: time.Now().UTC(), AppSpec: spec,
		Warnings: warnings, RunAs: users,
	}
	// release.json last: its presence marks a complete release.
	if err := writeJSON(s.metaPath(id), rel); err != nil {
		return nil, err
	}
	return rel, nil
}

// Load reads a release's record.
func (s *Store) Load(id string) (*Release, error) {
	var r Release
	if err := readJSON(s.metaPath(id), &r); err != nil {
		return nil, fmt.Errorf("releases: release %s: %w", id, err)
	}
	return &r, nil
}

// Entries returns the digests of the release's files by relative path.
// The map is shared: callers must not change it.
func (s *Store) Entries(id string) (map[string]bundle.Entry, error) {
	return s.entriesCached(id, func() (map[string]bundle.Entry, error) { return s.readEntries(id) })
}

func (s *Store) readEntries(id string) (map[string]bundle.Entry, error) {
	var list []bundle.Entry
	if err := readJSON(s.filesPath(id), &list); err != nil {
		return nil, fmt.Errorf("releases: files of %s: %w", id, err)
	}
	out := make(map[string]bundle.Entry, len(list))
	for _, e := range list {
		out[e.Path] = e
	}
	return out, nil
}

// List returns the ids of complete releases, oldest first.
func (s *Store) List() ([]*Release, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("releases: list %s: %w", s.dir, err)
	}
	var out []*Release
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		r, err := s.Load(e.Name())
		if err != nil {
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// Prune removes the oldest releases beyond keep, never those in protect,
// and directories that never became complete releases (except protected
// ones, such as a release being unpacked right now).
func (s *Store) Prune(keep int, protect map[string]bool) ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("releases: list %s: %w", s.dir, err)
	}
	var removed []string
	var errs []error
	complete, err := s.List()
	if err != nil {
		return nil, err
	}
	isComplete := map[string]bool{}
	for _, r := range complete {
		isComplete[r.ID] = true
	}
	for _, e := range ents {
		if e.IsDir() && !isComplete[e.Name()] && !protect[e.Name()] {
			if err := os.RemoveAll(s.Dir(e.Name())); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, e.Name())
		}
	}
	excess := len(complete) - keep
	for _, r := range complete {
		if excess <= 0 {
			break
		}
		if protect[r.ID] {
			continue
		}
		if err := os.RemoveAll(s.Dir(r.ID)); err != nil {
			errs = append(errs, fmt.Errorf("remove release %s: %w", r.ID, err))
			continue
		}
		removed = append(removed, r.ID)
		excess--
	}
	if len(errs) > 0 {
		return removed, fmt.Errorf("releases: prune: %w", errors.Join(errs...))
	}
	return removed, nil
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("releases: encode %s: %w", path, err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, recordMode)
	if err != nil {
		return fmt.Errorf("releases: write %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("releases: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("releases: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("releases: close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("releases: rename %s: %w", path, err)
	}
	return nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// OnDisk is what releases/ says is installed, for a new journal that
// replaced a lost one: the complete release whose install manifest was
// committed last (what the last completed Install put on disk, and the
// manifest saying which files are its) and when that Install ended; and
// a release whose Install began after it and did not complete (its
// partial manifest is newer), whose files may be on disk too.
type OnDisk struct {
	Installed   *Release
	At          time.Time
	Interrupted *Release
}

// FindOnDisk reads OnDisk from the releases' manifests.
func (s *Store) FindOnDisk() (OnDisk, error) {
	all, err := s.List()
	if err != nil {
		return OnDisk{}, err
	}
	var od OnDisk
	var partialAt time.Time
	for _, r := range all {
		if fi, err := os.Lstat(s.ManifestPath(r.ID)); err == nil && fi.Mode().IsRegular() && (od.Installed == nil || fi.ModTime().After(od.At)) {
			od.Installed, od.At = r, fi.ModTime()
		}
		if fi, err := os.Lstat(s.PartialManifestPath(r.ID)); err == nil && fi.Mode().IsRegular() && fi.ModTime().After(partialAt) {
			od.Interrupted, partialAt = r, fi.ModTime()
		}
	}
	if od.Interrupted != nil && od.Installed != nil && !partialAt.After(od.At) {
		od.Interrupted = nil // a stale partial, older than the last completed Install
	}
	return od, nil
}
