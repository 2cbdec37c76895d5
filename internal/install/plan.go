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
	"golang.org/x/sys/unix"
)

// item is one path the new revision installs, with its final attributes
// (after permissions).
type item struct {
	Entry
	// disk is what preflight found at Path (nil: nothing), so that
	// cleanup and the copy do not lstat every path again.
	disk    *unix.Stat_t
	src     string // absolute path in the revision
	fromIdx int    // files[] entry it comes from
	// preexisting marks a directory that existed before and is not ours:
	// it is neither recorded nor touched by permissions.
	preexisting bool
	// replaceLink marks a directory of ours that a symlink replaced since
	// the previous install: the link is removed, the directory made.
	replaceLink bool
	// chmodMode is what chmod is given; Mode is the predicted result,
	// which differs when chownLast (the kernel's chown clears setuid).
	chmodMode fs.FileMode
	chownLast bool
	// permIdx is the permissions[] entry applied, -1 for none.
	permIdx int
	acls    []string
	context *appspec.Context
}

// plan is the ordered list of items and an index by destination.
type plan struct {
	items    []*item
	byDst    map[string]*item
	owners   *ownerCache
	warnings []string
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
// source (a directory's contents, recursively, or a single file). It
// returns warnings about what CodeDeploy's agent would install otherwise.
func buildPlan(spec *appspec.AppSpec, revDir string, digests map[string]bundle.Entry) (*plan, []string, error) {
	p := &plan{byDst: map[string]*item{}, owners: newOwnerCache()}
	for i, f := range spec.Files {
		dest := filepath.Clean(f.Destination)
		if err := p.addAncestors(dest, i); err != nil {
			return nil, nil, err
		}
		// The destination is always a directory (CodeDeploy semantics).
		if err := p.addDir(dest, i); err != nil {
			return nil, nil, err
		}
		src := filepath.Join(revDir, strings.TrimPrefix(f.Source, "/"))
		fi, err := os.Lstat(src)
		if err != nil {
			return nil, nil, fmt.Errorf("files[%d].source %q: %w", i, f.Source, err)
		}
		if fi.IsDir() {
			if err := p.addTree(src, dest, revDir, i, digests); err != nil {
				return nil, nil, err
			}
			continue
		}
		it, err := p.newItem(src, filepath.Join(dest, filepath.Base(src)), revDir, i, fi, digests)
		if err != nil {
			return nil, nil, err
		}
		if err := p.add(it); err != nil {
			return nil, nil, err
		}
	}
	return p, p.warnings, nil
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
	return p.add(&item{Entry: Entry{Path: path, Kind: KindDir, Mode: 0o755, UID: os.Geteuid(), GID: os.Getegid()}, chmodMode: 0o755, fromIdx: idx, permIdx: -1})
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
		it, err := p.newItem(path, dst, revDir, idx, fi, digests)
		if err != nil {
			return err
		}
		return p.add(it)
	})
}

// modeBits are the bits an install keeps: permissions plus setuid,
// setgid and sticky, as tar -p and CodeDeploy's copy do.
const modeBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// newItem describes one file or symlink to install. Its mode and owner
// are the archive's, as the unpack recorded them (the unpacked copy itself
// is the agent's, with normalised modes): a file keeps its archived owner,
// mapped by name as GNU tar does as root (CodeDeploy's tar -xp, then a copy
// that preserves it); a symlink is made by the agent, as FileUtils.symlink
// makes it there. Without a record (a directory deployed as it is) the
// file on disk says.
func (p *plan) newItem(src, dst, revDir string, idx int, fi fs.FileInfo, digests map[string]bundle.Entry) (*item, error) {
	it := &item{Entry: Entry{Path: dst, Mode: fi.Mode() & modeBits, MTime: fi.ModTime().UnixNano()}, src: src, fromIdx: idx, permIdx: -1}
	setOwner(&it.Entry, fi)
	rel, ok := strings.CutPrefix(src, revDir+"/")
	if !ok {
		rel, _ = filepath.Rel(revDir, src)
	}
	rec, recorded := digests[filepath.ToSlash(rel)]
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(src)
		if err != nil {
			return nil, fmt.Errorf("files[%d]: read link %s: %w", idx, src, err)
		}
		it.Kind, it.Target, it.Mode = KindSymlink, t, 0o777
		it.UID, it.GID = os.Geteuid(), os.Getegid()
		if target, err := os.Stat(src); err == nil && target.IsDir() {
			p.warnings = append(p.warnings, fmt.Sprintf("files[%d]: %s is a symlink to a directory (%s): it is installed as the link; CodeDeploy's agent copies the directory's contents instead (installer.rb follows it)", idx, dst, t))
		}
	case fi.Mode().IsRegular():
		it.Kind = KindFile
		if recorded && rec.Type == bundle.TypeFile {
			it.Mode, it.MTime = rec.Mode&modeBits, rec.ModTime.UnixNano()
			it.UID, it.GID = p.owners.resolve(rec.Owner)
		}
		if e := rec; recorded && e.SHA256 != "" && e.Size == fi.Size() {
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
	it.chmodMode = it.Mode
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
// A path matched by two permissions is refused, as CodeDeploy's agent
// refuses it ("Duplicate permission setting instructions"): which one
// wins would otherwise depend on their order.
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
		var dups []string
		for _, t := range targets {
			if t.permIdx >= 0 {
				dups = append(dups, t.Path)
				continue
			}
			t.permIdx = pi
			p.apply(t, perm, uid, gid)
		}
		if len(dups) > 0 {
			first := perms[p.byDst[dups[0]].permIdx]
			errs = append(errs, fmt.Errorf("permissions[%d] (line %d) and permissions[%d] (line %d) both apply to %s%s; CodeDeploy's agent refuses a path two permissions match (\"Duplicate permission setting instructions\"): narrow one with pattern, except or type",
				pi, perm.Line, p.byDst[dups[0]].permIdx, first.Line, dups[0], andMore(len(dups)-1)))
		}
	}
	return warnings, errors.Join(errs...)
}

func andMore(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (and %d more)", n)
}

// apply sets one permission's attributes on t, predicting what CodeDeploy's
// order (chmod, setfacl, semanage, chown) leaves: the kernel's chown clears
// setuid, and setgid on a group-executable file, but not on directories.
func (p *plan) apply(t *item, perm appspec.Permission, uid, gid int) {
	if t.Kind == KindSymlink {
		// chmod and setfacl follow links; CodeDeploy's agent targets the
		// link's own path, which only chown (lchown) can change here.
		if uid >= 0 {
			t.UID = uid
		}
		if gid >= 0 {
			t.GID = gid
		}
		return
	}
	if perm.HasMode {
		t.Mode = fs.FileMode(perm.Mode&0o777) | octalSpecial(perm.Mode)
	}
	if uid >= 0 {
		t.UID = uid
	}
	if gid >= 0 {
		t.GID = gid
	}
	t.chmodMode = t.Mode
	if uid >= 0 || gid >= 0 {
		t.chownLast = true
		if t.Kind != KindDir {
			t.Mode &^= fs.ModeSetuid
			if t.Mode&0o010 != 0 {
				t.Mode &^= fs.ModeSetgid
			}
		}
	}
	if len(perm.ACLs) > 0 {
		t.acls, t.ACL = perm.ACLs, true
	}
	if perm.Context != nil {
		t.context, t.SELinux = perm.Context, true
	}
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
// "*" is special, matched against direct children only. except globs, as
// in CodeDeploy's agent (linux_permission_info.rb matches_simple_glob),
// never match a relative path with a "/": they name direct children.
func matches(perm appspec.Permission, rel string) bool {
	if perm.Pattern != "**" && perm.Pattern != "" {
		if strings.Contains(rel, "/") || !simpleGlob(perm.Pattern, rel) {
			return false
		}
	}
	if strings.Contains(rel, "/") {
		return true
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

// ownerCache maps an archive's owners to this host's ids once per name.
type ownerCache struct {
	users, groups map[string]int
}

func newOwnerCache() *ownerCache {
	return &ownerCache{users: map[string]int{}, groups: map[string]int{}}
}

// resolve maps an archived owner as GNU tar does as root: the name when it
// exists on this host, the number otherwise. No owner (a zip) is root, who
// unpacks and copies.
func (c *ownerCache) resolve(o *bundle.Owner) (uid, gid int) {
	if o == nil {
		return os.Geteuid(), os.Getegid()
	}
	return c.id(c.users, o.User, o.UID, func(n string) (string, error) {
			u, err := user.Lookup(n)
			if err != nil {
				return "", err
			}
			return u.Uid, nil
		}), c.id(c.groups, o.Group, o.GID, func(n string) (string, error) {
			g, err := user.LookupGroup(n)
			if err != nil {
				return "", err
			}
			return g.Gid, nil
		})
}

func (c *ownerCache) id(cache map[string]int, name string, num int, lookup func(string) (string, error)) int {
	if name == "" {
		return num
	}
	if id, ok := cache[name]; ok {
		return id
	}
	id := num
	if s, err := lookup(name); err == nil {
		if n, err := strconv.Atoi(s); err == nil {
			id = n
		}
	}
	cache[name] = id
	return id
}
