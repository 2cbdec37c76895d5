package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/bundle"
)

// tmpSuffix names the temporary file a path is written to before it is
// renamed into place; cleanup removes a leftover one too.
const tmpSuffix = ".rollback-agent-tmp"

// Options describe one Install.
type Options struct {
	Spec        *appspec.AppSpec
	RevisionDir string
	// Digests are the revision's file digests from unpacking (by path
	// relative to the revision root); files missing here are hashed.
	Digests map[string]bundle.Entry
	// Previous are the manifests of what may be on disk now: normally the
	// installed release's; after a crash mid-Install also the partial one.
	Previous []*Manifest
	// ManifestPath is where this Install's manifest is written.
	ManifestPath string

	// afterChange, for tests, runs after each change to the disk (a path
	// removed, created or replaced): the crash tests stop there.
	afterChange func()
}

// Report says what an Install did.
type Report struct {
	Copied      int      `json:"copied"`
	Kept        int      `json:"kept"`
	Removed     int      `json:"removed"`
	DirsCreated int      `json:"dirs_created"`
	Overwritten int      `json:"overwritten"`
	Retained    int      `json:"retained"`
	Bytes       int64    `json:"bytes"`
	Warnings    []string `json:"warnings,omitempty"`
	// Manifest is what Install wrote to Options.ManifestPath.
	Manifest *Manifest `json:"-"`
}

func (r *Report) String() string {
	return fmt.Sprintf("%d copied (%d bytes), %d unchanged kept, %d removed, %d directories created, %d overwritten, %d retained",
		r.Copied, r.Bytes, r.Kept, r.Removed, r.DirsCreated, r.Overwritten, r.Retained)
}

// merged is the union of previous manifests: last record per path wins,
// order of first appearance kept (creation order).
type merged struct {
	list []Entry
	idx  map[string]int
}

func mergeManifests(ms []*Manifest) *merged {
	m := &merged{idx: map[string]int{}}
	for _, man := range ms {
		if man == nil {
			continue
		}
		for _, e := range man.Entries {
			if i, ok := m.idx[e.Path]; ok {
				m.list[i] = e
				continue
			}
			m.idx[e.Path] = len(m.list)
			m.list = append(m.list, e)
		}
	}
	return m
}

func (m *merged) get(path string) (Entry, bool) {
	i, ok := m.idx[path]
	if !ok {
		return Entry{}, false
	}
	return m.list[i], true
}

// Install installs the revision. Problems found before anything changes
// (duplicate destinations, DISALLOWed existing files, unknown owners) are
// returned with nothing touched. A failure midway leaves the manifest
// describing everything created so far.
func Install(ctx context.Context, o Options) (*Report, error) {
	p, err := buildPlan(o.Spec, o.RevisionDir, o.Digests)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	p.afterChange = o.afterChange
	rep := &Report{}
	warns, err := p.applyPermissions(o.Spec.Permissions)
	rep.Warnings = warns
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	prev := mergeManifests(o.Previous)
	behavior := o.Spec.FileExistsBehavior
	if behavior == "" {
		behavior = appspec.Disallow
	}
	skip, err := preflight(p, prev, behavior)
	if err != nil {
		return nil, err
	}
	w, err := newManifestWriter(o.ManifestPath)
	if err != nil {
		return nil, err
	}
	keep, err := cleanup(ctx, prev, p, rep)
	if err != nil {
		w.abort()
		return rep, err
	}
	if err := copyAll(ctx, p, prev, keep, skip, w, rep); err != nil {
		w.abort()
		return rep, err
	}
	if err := w.finish(); err != nil {
		return rep, err
	}
	rep.Manifest = &Manifest{Entries: w.all}
	return rep, nil
}

// Uninstall removes everything the manifests recorded, newest first,
// directories only when empty.
func Uninstall(ctx context.Context, previous []*Manifest) (*Report, error) {
	rep := &Report{}
	_, err := cleanup(ctx, mergeManifests(previous), &plan{byDst: map[string]*item{}}, rep)
	return rep, err
}

// preflight checks the plan against the disk before anything changes. It
// returns the foreign files to leave alone (RETAIN) and marks directories
// that existed before and are not ours.
func preflight(p *plan, prev *merged, behavior string) (map[string]bool, error) {
	skip := map[string]bool{}
	var conflicts []string
	ds := newDirStatter()
	defer ds.close()
	for _, it := range p.items {
		fi, err := ds.lstat(it.Path)
		if err != nil {
			return nil, err
		}
		if fi == nil {
			continue
		}
		it.disk = fi
		pe, owned := prev.get(it.Path)
		onDisk := kindOf(fi)
		if owned && pe.Kind == onDisk {
			continue // ours: cleanup removes or keeps it
		}
		if it.Kind == KindDir {
			if onDisk == KindDir {
				it.preexisting = true
				continue
			}
			conflicts = append(conflicts, fmt.Sprintf("%s: a %s is where files[%d] needs a directory", it.Path, onDisk, it.fromIdx))
			continue
		}
		if onDisk == KindDir {
			conflicts = append(conflicts, fmt.Sprintf("%s: a directory is where files[%d] installs a %s", it.Path, it.fromIdx, it.Kind))
			continue
		}
		switch behavior {
		case appspec.Overwrite:
			// Replaced and recorded, so the next deployment removes it.
		case appspec.Retain:
			skip[it.Path] = true
		default:
			conflicts = append(conflicts, fmt.Sprintf("%s: a file already exists at this location (file_exists_behavior is DISALLOW; use OVERWRITE or RETAIN, or remove it)", it.Path))
		}
	}
	if len(conflicts) > 0 {
		more := ""
		if len(conflicts) > 20 {
			more = fmt.Sprintf("\n  ... and %d more", len(conflicts)-20)
			conflicts = conflicts[:20]
		}
		return nil, fmt.Errorf("install: nothing was changed, %d path(s) in the way:\n  %s%s", len(conflicts), strings.Join(conflicts, "\n  "), more)
	}
	return skip, nil
}

func kindOf(fi fs.FileInfo) string {
	switch {
	case fi.IsDir():
		return KindDir
	case fi.Mode()&fs.ModeSymlink != 0:
		return KindSymlink
	case fi.Mode().IsRegular():
		return KindFile
	}
	return "special file"
}

// unchanged reports whether the installed copy of pe is still exactly
// what was recorded and the new item would write the same thing.
func unchanged(pe Entry, it *item, fi fs.FileInfo) bool {
	if pe.Pending || pe.Kind != it.Kind || pe.UID != it.UID || pe.GID != it.GID || it.ACL || it.SELinux || pe.ACL || pe.SELinux {
		return false
	}
	switch it.Kind {
	case KindFile:
		if pe.SHA256 != it.SHA256 || pe.Mode != it.Mode || pe.MTime != it.MTime || pe.Stat == nil {
			return false
		}
		return *pe.Stat == *statKey(fi)
	case KindSymlink:
		t, err := os.Readlink(it.Path)
		return err == nil && t == it.Target && pe.Target == it.Target && fi.Mode()&fs.ModeSymlink != 0
	}
	return false
}

// cleanup removes the previous install's paths, newest first, except
// those kept unchanged and those a new file of the same kind replaces by
// rename (so the app never sees them missing). It returns the kept set.
func cleanup(ctx context.Context, prev *merged, p *plan, rep *Report) (map[string]bool, error) {
	keep := map[string]bool{}
	for i := len(prev.list) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return keep, fmt.Errorf("install: cleanup interrupted: %w", err)
		}
		pe := prev.list[i]
		if pe.Pending {
			// Only a path whose last record is the write-ahead one can
			// have a temporary file left by a crash.
			os.Remove(pe.Path + tmpSuffix)
		}
		it := p.byDst[pe.Path]
		fi, err := p.lstat(it, pe.Path)
		if err != nil {
			return keep, err
		}
		if fi == nil {
			continue
		}
		onDisk := kindOf(fi)
		if pe.Kind != onDisk {
			continue // no longer what we installed: not ours to remove
		}
		if it != nil && it.Kind != KindDir && unchanged(pe, it, fi) {
			keep[pe.Path] = true
			continue
		}
		if onDisk == KindDir {
			if it != nil && it.Kind == KindDir {
				continue
			}
			if err := syscall.Rmdir(pe.Path); err == nil {
				rep.Removed++
			} else if !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.EEXIST) {
				return keep, fmt.Errorf("install: remove directory %s: %w", pe.Path, err)
			}
			continue
		}
		if pe.SELinux {
			removeContext(ctx, pe.Path)
		}
		if it != nil && it.Kind != KindDir {
			continue // replaced by rename below
		}
		if err := os.Remove(pe.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return keep, fmt.Errorf("install: remove %s: %w", pe.Path, err)
		}
		rep.Removed++
		p.changed()
	}
	return keep, nil
}

// lstat is what is at path now: preflight's answer for a path of the
// plan (nothing has touched it since), else a fresh lstat; nil when
// nothing is there.
func (p *plan) lstat(it *item, path string) (fs.FileInfo, error) {
	if it != nil {
		return it.disk, nil
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("install: inspect %s: %w", path, err)
	}
	return fi, nil
}

func (p *plan) changed() {
	if p.afterChange != nil {
		p.afterChange()
	}
}

func copyAll(ctx context.Context, p *plan, prev *merged, keep, skip map[string]bool, w *manifestWriter, rep *Report) error {
	var withExtras []*item
	for _, it := range p.items {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("install: interrupted: %w", err)
		}
		switch {
		case skip[it.Path]:
			rep.Retained++
			continue
		case keep[it.Path]:
			pe, _ := prev.get(it.Path)
			w.kept(pe)
			rep.Kept++
			continue
		}
		var err error
		switch it.Kind {
		case KindDir:
			err = installDir(it, prev, w, rep)
		case KindFile, KindSymlink:
			err = installFile(p, it, prev, w, rep)
		}
		if err != nil {
			return err
		}
		p.changed()
		if it.ACL || it.SELinux {
			withExtras = append(withExtras, it)
		}
	}
	for _, it := range withExtras {
		if err := applyExtras(ctx, it); err != nil {
			return err
		}
	}
	return nil
}

func installDir(it *item, prev *merged, w *manifestWriter, rep *Report) error {
	if it.preexisting {
		return nil
	}
	fi, err := os.Lstat(it.Path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := w.record(Entry{Path: it.Path, Kind: KindDir, Pending: true}); err != nil {
			return err
		}
		if err := os.Mkdir(it.Path, 0o700); err != nil {
			return fmt.Errorf("install: create directory %s: %w", it.Path, err)
		}
		rep.DirsCreated++
	} else if err != nil {
		return fmt.Errorf("install: inspect %s: %w", it.Path, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("install: %s is not a directory", it.Path)
	}
	if err := os.Lchown(it.Path, it.UID, it.GID); err != nil {
		return fmt.Errorf("install: chown %s: %w", it.Path, err)
	}
	if err := os.Chmod(it.Path, it.Mode); err != nil {
		return fmt.Errorf("install: chmod %s: %w", it.Path, err)
	}
	e := it.Entry
	return w.record(e)
}

func installFile(p *plan, it *item, prev *merged, w *manifestWriter, rep *Report) error {
	_, owned := prev.get(it.Path)
	if _, err := os.Lstat(it.Path); err == nil && !owned {
		rep.Overwritten++
	}
	if err := w.record(Entry{Path: it.Path, Kind: it.Kind, Pending: true}); err != nil {
		return err
	}
	tmp := it.Path + tmpSuffix
	os.Remove(tmp)
	if it.Kind == KindSymlink {
		if err := os.Symlink(it.Target, tmp); err != nil {
			return fmt.Errorf("install: create symlink %s: %w", it.Path, err)
		}
		if err := os.Lchown(tmp, it.UID, it.GID); err != nil {
			return fmt.Errorf("install: chown symlink %s: %w", it.Path, err)
		}
	} else {
		n, err := copyContent(it, tmp)
		if err != nil {
			os.Remove(tmp)
			return err
		}
		rep.Bytes += n
	}
	p.changed()
	if err := os.Rename(tmp, it.Path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("install: move %s into place: %w", it.Path, err)
	}
	fi, err := os.Lstat(it.Path)
	if err != nil {
		return fmt.Errorf("install: inspect %s: %w", it.Path, err)
	}
	e := it.Entry
	e.Stat = statKey(fi)
	rep.Copied++
	return w.record(e)
}

// copyContent writes the file to tmp with its final owner, mode and
// mtime (chown before chmod: chown clears setuid bits).
func copyContent(it *item, tmp string) (int64, error) {
	in, err := os.Open(it.src)
	if err != nil {
		return 0, fmt.Errorf("install: open %s: %w", it.src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("install: create %s: %w", it.Path, err)
	}
	n, err := io.Copy(out, in)
	if err != nil {
		out.Close()
		return n, fmt.Errorf("install: copy %s to %s: %w", it.src, it.Path, err)
	}
	if err := out.Chown(it.UID, it.GID); err != nil {
		out.Close()
		return n, fmt.Errorf("install: chown %s: %w", it.Path, err)
	}
	if err := out.Chmod(it.Mode); err != nil {
		out.Close()
		return n, fmt.Errorf("install: chmod %s: %w", it.Path, err)
	}
	if err := out.Close(); err != nil {
		return n, fmt.Errorf("install: write %s: %w", it.Path, err)
	}
	mt := time.Unix(0, it.MTime)
	if err := os.Chtimes(tmp, mt, mt); err != nil {
		return n, fmt.Errorf("install: set mtime of %s: %w", it.Path, err)
	}
	return n, nil
}
