package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/bundle"
	"github.com/rollback-agent/rollback-agent/internal/posixacl"
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
	p, warns, err := buildPlan(o.Spec, o.RevisionDir, o.Digests)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	p.afterChange = o.afterChange
	rep := &Report{Warnings: warns}
	pw, err := p.applyPermissions(o.Spec.Permissions)
	rep.Warnings = append(rep.Warnings, pw...)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	prev := mergeManifests(o.Previous)
	t := newTree(prev.dirs())
	defer t.close()
	behavior := o.Spec.FileExistsBehavior
	if behavior == "" {
		behavior = appspec.Disallow
	}
	skip, err := preflight(t, p, prev, behavior)
	if err != nil {
		return nil, err
	}
	w, err := newManifestWriter(o.ManifestPath)
	if err != nil {
		return nil, err
	}
	keep, err := cleanup(ctx, t, prev, p, rep)
	if err != nil {
		w.abort()
		return rep, err
	}
	if err := copyAll(ctx, t, p, prev, keep, skip, w, rep); err != nil {
		w.abort()
		return rep, err
	}
	if err := w.finish(); err != nil {
		return rep, err
	}
	rep.Manifest = &Manifest{Entries: w.all}
	return rep, nil
}

// changed tells the test hook a change reached the disk.
func (p *plan) changed() {
	if p.afterChange != nil {
		p.afterChange()
	}
}

// Check builds the plan of an Install without touching anything: what
// Validate runs, so that a revision whose files or permissions Install
// would refuse (two permissions on one path, an unknown owner) is refused
// before any hook runs. It returns the plan's warnings.
func Check(spec *appspec.AppSpec, revDir string, digests map[string]bundle.Entry) ([]string, error) {
	p, warns, err := buildPlan(spec, revDir, digests)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	pw, err := p.applyPermissions(spec.Permissions)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	return append(warns, pw...), nil
}

// Uninstall removes everything the manifests recorded, newest first,
// directories only when empty.
func Uninstall(ctx context.Context, previous []*Manifest) (*Report, error) {
	rep := &Report{}
	prev := mergeManifests(previous)
	t := newTree(prev.dirs())
	defer t.close()
	_, err := cleanup(ctx, t, prev, &plan{byDst: map[string]*item{}}, rep)
	return rep, err
}

// dirs are the directories the manifests say this agent made.
func (m *merged) dirs() map[string]bool {
	out := map[string]bool{}
	for _, e := range m.list {
		if e.Kind == KindDir {
			out[e.Path] = true
		}
	}
	return out
}

func copyAll(ctx context.Context, t *tree, p *plan, prev *merged, keep, skip map[string]bool, w *manifestWriter, rep *Report) error {
	// Directory ACLs come after every copy, as CodeDeploy's agent runs all
	// permission commands after its copies: a default ACL set first would
	// be inherited by the files copied into the directory.
	var withContext, dirACLs []*item
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
			err = installDir(t, it, w, rep)
		case KindFile, KindSymlink:
			err = installFile(t, p, it, prev, w, rep)
		}
		if err != nil {
			return err
		}
		p.changed()
		if it.SELinux {
			withContext = append(withContext, it)
		}
		if it.ACL && it.Kind == KindDir && !it.preexisting {
			dirACLs = append(dirACLs, it)
		}
	}
	for _, it := range dirACLs {
		if err := setDirACL(t, it); err != nil {
			return err
		}
	}
	for _, it := range withContext {
		if err := setContext(ctx, it); err != nil {
			return err
		}
	}
	return nil
}

func installDir(t *tree, it *item, w *manifestWriter, rep *Report) error {
	if it.preexisting {
		return nil
	}
	pfd, base, _, err := t.parent(it.Path)
	if err != nil {
		return fmt.Errorf("install: create directory %s: %w", it.Path, err)
	}
	if it.replaceLink {
		target, _ := readlinkat(pfd, base)
		if err := unix.Unlinkat(pfd, base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("install: remove the symlink at %s: %w", it.Path, err)
		}
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: the symlink to %s that replaced this directory after the previous install was replaced by a directory again (its target is left alone)", it.Path, target))
	}
	var st unix.Stat_t
	err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		if err := w.record(Entry{Path: it.Path, Kind: KindDir, Pending: true}); err != nil {
			return err
		}
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			return fmt.Errorf("install: create directory %s: %w", it.Path, err)
		}
		t.ours[it.Path] = true
		rep.DirsCreated++
	case err != nil:
		return fmt.Errorf("install: inspect %s: %w", it.Path, err)
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("install: %s is not a directory", it.Path)
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("install: open directory %s: %w", it.Path, err)
	}
	d := os.NewFile(uintptr(fd), it.Path)
	defer d.Close()
	// A directory of ours kept from the previous install starts without
	// ACLs, as the fresh mkdir CodeDeploy's agent would make: copies into
	// it must not inherit a default ACL the new revision may not set.
	for _, attr := range []string{posixacl.XattrAccess, posixacl.XattrDefault} {
		if err := posixacl.RemoveFd(fd, attr); err != nil {
			return fmt.Errorf("install: %s: %w", it.Path, err)
		}
	}
	if err := setOwnerMode(d, it); err != nil {
		return err
	}
	return w.record(it.Entry)
}

// setDirACL sets a directory's ACLs once everything is copied.
func setDirACL(t *tree, it *item) error {
	tfd, _, err := t.openDir(it.Path)
	if err != nil {
		return fmt.Errorf("install: %s: %w", it.Path, err)
	}
	fd, err := unix.Dup(tfd)
	if err != nil {
		return fmt.Errorf("install: %s: %w", it.Path, err)
	}
	unix.CloseOnExec(fd)
	d := os.NewFile(uintptr(fd), it.Path)
	defer d.Close()
	return setACL(d, it)
}

func installFile(t *tree, p *plan, it *item, prev *merged, w *manifestWriter, rep *Report) error {
	_, owned := prev.get(it.Path)
	if it.disk != nil && !owned {
		rep.Overwritten++
	}
	if err := w.record(Entry{Path: it.Path, Kind: it.Kind, Pending: true}); err != nil {
		return err
	}
	pfd, base, _, err := t.parent(it.Path)
	if err != nil {
		return fmt.Errorf("install: %s: %w", it.Path, err)
	}
	tmp := base + tmpSuffix
	_ = unix.Unlinkat(pfd, tmp, 0)
	if it.Kind == KindSymlink {
		if err := unix.Symlinkat(it.Target, pfd, tmp); err != nil {
			return fmt.Errorf("install: create symlink %s: %w", it.Path, err)
		}
		if err := unix.Fchownat(pfd, tmp, it.UID, it.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("install: chown symlink %s: %w", it.Path, err)
		}
	} else {
		n, err := copyContent(it, pfd, tmp)
		if err != nil {
			_ = unix.Unlinkat(pfd, tmp, 0)
			return err
		}
		rep.Bytes += n
	}
	p.changed()
	if err := unix.Renameat(pfd, tmp, pfd, base); err != nil {
		_ = unix.Unlinkat(pfd, tmp, 0)
		return fmt.Errorf("install: move %s into place: %w", it.Path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("install: inspect %s: %w", it.Path, err)
	}
	e := it.Entry
	e.Stat = statKeyOf(&st)
	rep.Copied++
	return w.record(e)
}

// copyContent writes the file to tmp in the directory pfd with its final
// owner, mode, ACL and mtime.
func copyContent(it *item, pfd int, tmp string) (int64, error) {
	in, err := os.OpenFile(it.src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return 0, fmt.Errorf("install: open %s: %w", it.src, err)
	}
	defer in.Close()
	fd, err := unix.Openat(pfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("install: create %s: %w", it.Path, err)
	}
	out := os.NewFile(uintptr(fd), it.Path)
	n, err := io.Copy(out, in)
	if err != nil {
		out.Close()
		return n, fmt.Errorf("install: copy %s to %s: %w", it.src, it.Path, err)
	}
	if err := setOwnerMode(out, it); err != nil {
		out.Close()
		return n, err
	}
	if it.ACL {
		if err := setACL(out, it); err != nil {
			out.Close()
			return n, err
		}
	}
	if err := out.Close(); err != nil {
		return n, fmt.Errorf("install: write %s: %w", it.Path, err)
	}
	ts := []unix.Timespec{unix.NsecToTimespec(it.MTime), unix.NsecToTimespec(it.MTime)}
	if err := unix.UtimesNanoAt(pfd, tmp, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return n, fmt.Errorf("install: set mtime of %s: %w", it.Path, err)
	}
	return n, nil
}

// setOwnerMode applies owner and mode in CodeDeploy's order: a copy keeps
// the revision's owner and then its mode (chown, chmod: setuid survives),
// while a permission with owner or group runs chmod and then chown
// (install_instruction.rb), and the kernel's chown clears setuid, and
// setgid on a group-executable file, as it does there.
func setOwnerMode(f *os.File, it *item) error {
	chown := func() error {
		if err := f.Chown(it.UID, it.GID); err != nil {
			return fmt.Errorf("install: chown %s: %w", it.Path, err)
		}
		return nil
	}
	chmod := func() error {
		if err := f.Chmod(it.chmodMode); err != nil {
			return fmt.Errorf("install: chmod %s: %w", it.Path, err)
		}
		return nil
	}
	if it.chownLast {
		if err := chmod(); err != nil {
			return err
		}
		return chown()
	}
	if err := chown(); err != nil {
		return err
	}
	return chmod()
}
