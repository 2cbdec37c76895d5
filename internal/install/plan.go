package install

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/bundle"
)

// item is one path the new revision installs, with its final attributes
// (after permissions).
type item struct {
	Entry
	src     string // absolute path in the revision
	fromIdx int    // files[] entry it comes from
	// preexisting marks a directory that existed before and is not ours:
	// it is neither recorded nor touched by permissions.
	preexisting bool
	// disk is what preflight found at Path (nil: nothing), so that
	// cleanup does not lstat every path a second time.
	disk    fs.FileInfo
	acls    []string
	context *appspec.Context
}

// plan is the ordered list of items and an index by destination.
type plan struct {
	items []*item
	byDst map[string]*item
	// afterChange is Options.afterChange.
	afterChange func()
}

func (p *plan) add(it *item) error {
	if prev, ok := p.byDst[it.Path]; ok {
		if prev.Kind == KindDir && it.Kind == KindDir {
			return nil // two sources may share a destination directory
		}
		return fmt.Errorf("files[%d] and files[%d] both install %s", prev.fromIdx, it.fromIdx, it.Path)
	}
	p.byDst[it.Path] = it
	p.items = append(p.items, it)
	return nil
}

// buildPlan expands the `files` section against the revision on disk,
// in CodeDeploy's order: missing ancestors of each destination, then the
// source (a directory's contents, recursively, or a single file).
func buildPlan(spec *appspec.AppSpec, revDir string, digests map[string]bundle.Entry) (*plan, error) {
	p := &plan{byDst: map[string]*item{}}
	for i, f := range spec.Files {
		dest := filepath.Clean(f.Destination)
		if err := p.addAncestors(dest, i); err != nil {
			return nil, err
		}
		// The destination is always a directory (CodeDeploy semantics).
		if err := p.addDir(dest, i); err != nil {
			return nil, err
		}
		src := filepath.Join(revDir, strings.TrimPrefix(f.Source, "/"))
		fi, err := os.Lstat(src)
		if err != nil {
			return nil, fmt.Errorf("files[%d].source %q: %w", i, f.Source, err)
		}
		if fi.IsDir() {
			if err := p.addTree(src, dest, revDir, i, digests); err != nil {
				return nil, err
			}
			continue
		}
		it, err := newItem(src, filepath.Join(dest, filepath.Base(src)), revDir, i, fi, digests)
		if err != nil {
			return nil, err
		}
		if err := p.add(it); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *plan) addAncestors(dest string, idx int) error {
	var missing []string
	for d := filepath.Dir(dest); d != "/" && d != "."; d = filepath.Dir(d) {
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := p.addDir(missing[i], idx); err != nil {
			return err
		}
	}
	return nil
}

func (p *plan) addDir(path string, idx int) error {
	if _, ok := p.byDst[path]; ok {
		return nil
	}
	return p.add(&item{Entry: Entry{Path: path, Kind: KindDir, Mode: 0o755, UID: os.Geteuid(), GID: os.Getegid()}, fromIdx: idx})
}

func (p *plan) addTree(srcRoot, dest, revDir string, idx int, digests map[string]bundle.Entry) error {
	return walkTree(srcRoot, func(path string, fi fs.FileInfo) error {
		rel, _ := filepath.Rel(srcRoot, path)
		dst := filepath.Join(dest, rel)
		if fi.IsDir() {
			// CodeDeploy creates directories with mkdir (0755, the agent's
			// owner), not as copies of the revision's directories.
			return p.addDir(dst, idx)
		}
		it, err := newItem(path, dst, revDir, idx, fi, digests)
		if err != nil {
			return err
		}
		return p.add(it)
	})
}

// modeBits are the bits an install keeps: permissions plus setuid,
// setgid and sticky, as tar -p and CodeDeploy's copy do.
const modeBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

func newItem(src, dst, revDir string, idx int, fi fs.FileInfo, digests map[string]bundle.Entry) (*item, error) {
	it := &item{Entry: Entry{Path: dst, Mode: fi.Mode() & modeBits, MTime: fi.ModTime().UnixNano()}, src: src, fromIdx: idx}
	setOwner(&it.Entry, fi)
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(src)
		if err != nil {
			return nil, fmt.Errorf("files[%d]: read link %s: %w", idx, src, err)
		}
		it.Kind, it.Target, it.Mode = KindSymlink, t, 0o777
	case fi.Mode().IsRegular():
		it.Kind = KindFile
		rel, ok := strings.CutPrefix(src, revDir+"/")
		if !ok {
			rel, _ = filepath.Rel(revDir, src)
		}
		if e, ok := digests[filepath.ToSlash(rel)]; ok && e.SHA256 != "" && e.Size == fi.Size() {
			it.SHA256 = e.SHA256
		} else {
			sum, err := hashFile(src)
			if err != nil {
				return nil, fmt.Errorf("files[%d]: %w", idx, err)
			}
			it.SHA256 = sum
		}
	default:
		return nil, fmt.Errorf("files[%d]: %s is neither a file, a directory nor a symlink", idx, src)
	}
	return it, nil
}

func setOwner(e *Entry, fi fs.FileInfo) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.UID, e.GID = int(st.Uid), int(st.Gid)
	}
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// applyPermissions folds the `permissions` section into the plan's final
// attributes, with CodeDeploy's rules: only paths this deployment installs
// (copied files, directories it creates) are touched; an object that is a
// copied file takes the permission itself (pattern must be "**" and except
// empty); otherwise the object's installed descendants match by pattern.
func (p *plan) applyPermissions(perms []appspec.Permission) (warnings []string, err error) {
	var errs []error
	for pi, perm := range perms {
		obj := filepath.Clean(perm.Object)
		var targets []*item
		if it, ok := p.byDst[obj]; ok && it.Kind != KindDir {
			if !perm.HasType("file") {
				continue
			}
			if perm.Pattern != "**" || len(perm.Except) > 0 {
				errs = append(errs, fmt.Errorf("permissions[%d] (line %d): object %s is a file, so pattern must be \"**\" and except empty", pi, perm.Line, obj))
				continue
			}
			targets = []*item{it}
		} else if it, isDir := p.byDst[obj]; (isDir && it.Kind == KindDir) || isExistingDir(obj) {
			for _, c := range p.items {
				if !strings.HasPrefix(c.Path, obj+"/") || c.preexisting {
					continue
				}
				kind := "file"
				if c.Kind == KindDir {
					kind = "directory"
				}
				if !perm.HasType(kind) || !matches(perm, strings.TrimPrefix(c.Path, obj+"/")) {
					continue
				}
				targets = append(targets, c)
			}
		} else {
			warnings = append(warnings, fmt.Sprintf("permissions[%d] (line %d): %s is neither an installed file nor a directory; ignored (as CodeDeploy does)", pi, perm.Line, obj))
			continue
		}
		uid, gid, err := lookupOwner(perm)
		if err != nil {
			errs = append(errs, fmt.Errorf("permissions[%d] (line %d): %w", pi, perm.Line, err))
			continue
		}
		for _, t := range targets {
			if perm.HasMode && t.Kind != KindSymlink {
				t.Mode = fs.FileMode(perm.Mode&0o777) | octalSpecial(perm.Mode)
			}
			if uid >= 0 {
				t.UID = uid
			}
			if gid >= 0 {
				t.GID = gid
			}
			if len(perm.ACLs) > 0 && t.Kind != KindSymlink {
				t.acls, t.ACL = perm.ACLs, true
			}
			if perm.Context != nil && t.Kind != KindSymlink {
				t.context, t.SELinux = perm.Context, true
			}
		}
	}
	return warnings, errors.Join(errs...)
}

// octalSpecial maps the 4th octal digit (4755) to fs.FileMode bits.
func octalSpecial(m uint32) fs.FileMode {
	var out fs.FileMode
	if m&0o4000 != 0 {
		out |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}

// matches applies pattern and except to a path relative to the object.
// "**" matches at any depth; any other pattern is a glob in which only
// "*" is special, matched against direct children only.
func matches(perm appspec.Permission, rel string) bool {
	if perm.Pattern != "**" && perm.Pattern != "" {
		if strings.Contains(rel, "/") || !simpleGlob(perm.Pattern, rel) {
			return false
		}
	}
	for _, ex := range perm.Except {
		if simpleGlob(ex, rel) {
			return false
		}
	}
	return true
}

func simpleGlob(pattern, name string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == name
	}
	if !strings.HasPrefix(name, parts[0]) {
		return false
	}
	name = name[len(parts[0]):]
	for i, part := range parts[1:] {
		if i == len(parts)-2 {
			return strings.HasSuffix(name, part)
		}
		j := strings.Index(name, part)
		if j < 0 {
			return false
		}
		name = name[j+len(part):]
	}
	return true
}

func isExistingDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

func lookupOwner(perm appspec.Permission) (int, int, error) {
	uid, gid := -1, -1
	if perm.Owner != "" {
		u, err := user.Lookup(perm.Owner)
		if err != nil {
			return 0, 0, fmt.Errorf("owner %q: %w", perm.Owner, err)
		}
		uid, _ = strconv.Atoi(u.Uid)
	}
	if perm.Group != "" {
		g, err := user.LookupGroup(perm.Group)
		if err != nil {
			return 0, 0, fmt.Errorf("group %q: %w", perm.Group, err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	return uid, gid, nil
}
