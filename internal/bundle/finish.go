package bundle

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// appspecName is CodeDeploy's own test (/appspec/i in command_executor.rb
// unpack_bundle) for "this wrapping directory is the real revision root".
var appspecName = regexp.MustCompile(`(?i)appspec`)

// finish completes an unpack whose entries are all on disk: it picks the
// revision root (stripping a wrapping directory like CodeDeploy), checks
// every symlink against that root, applies directory modes and times, and
// renames the root to dest. If anything fails after the rename, dest is
// removed again so that an error always means "no dest".
func (u *unpacker) finish(dest string) (*Result, error) {
	rootNode, strip := u.revisionRoot()
	if err := checkLinks(u.tree, rootNode); err != nil {
		return nil, err
	}
	if err := u.applyDirMeta(u.tree, "", rootNode); err != nil {
		return nil, err
	}
	src := u.root
	if strip != "" {
		src = u.abs(strip)
	}
	if err := renameNoReplace(src, dest); err != nil {
		return nil, fmt.Errorf("move into place: %w", err)
	}
	if err := u.settleRoot(dest, strip, rootNode); err != nil {
		return nil, errors.Join(err, removeTree(dest))
	}
	return u.result(rootNode, strip), nil
}

// revisionRoot applies CodeDeploy's strip rule: if the root holds exactly
// one entry, it is a directory (a real one: a symlink is not followed), and
// one of that directory's own entries has a name matching /appspec/i, that
// directory becomes the revision root.
func (u *unpacker) revisionRoot() (*node, string) {
	if len(u.tree.children) != 1 {
		return u.tree, ""
	}
	for name, top := range u.tree.children {
		if top.kind != kindDir {
			break
		}
		for child := range top.children {
			if appspecName.MatchString(child) {
				return top, name
			}
		}
	}
	return u.tree, ""
}

// checkLinks resolves every symlink under n against the final revision
// root. Done once the tree is complete, because a link unpacked later can
// change where an earlier one leads. Children are visited in name order so
// the error names the same link every time.
func checkLinks(n, root *node) error {
	for _, name := range sortedNames(n) {
		c := n.children[name]
		switch c.kind {
		case kindSymlink:
			if err := resolveLink(c, root); err != nil {
				return entryError(c.name, err)
			}
		case kindDir:
			if err := checkLinks(c, root); err != nil {
				return err
			}
		}
	}
	return nil
}

func sortedNames(n *node) []string {
	return slices.Sorted(maps.Keys(n.children))
}

// applyDirMeta gives every directory under n (rel is n's path) its final
// mode and time, children before parents: a parent made read-only first
// would block its children, and touching a child would bump the parent's
// mtime. The revision root itself is settled after the rename.
func (u *unpacker) applyDirMeta(n *node, rel string, root *node) error {
	for name, c := range n.children {
		if c.kind != kindDir {
			continue
		}
		crel := path.Join(rel, name)
		if err := u.applyDirMeta(c, crel, root); err != nil {
			return err
		}
		if c == root {
			continue
		}
		if err := setDirMeta(u.abs(crel), c); err != nil {
			return entryError(dirName(c, crel), err)
		}
	}
	return nil
}

func dirName(n *node, rel string) string {
	if n.name != "" {
		return n.name
	}
	return rel + "/"
}

func setDirMeta(p string, n *node) error {
	if err := os.Chmod(p, releaseDirMode); err != nil {
		return err
	}
	return setMtime(p, n.mtime)
}

// settleRoot runs after the rename: the now-empty temporary directory goes
// away when a wrapping directory was lifted out of it, and the root gets
// the wrapping directory's (or the "./" entry's) time, but never its mode:
// it stays private (releaseRootMode) until the store opens it to whom it
// chooses.
func (u *unpacker) settleRoot(dest, strip string, root *node) error {
	if strip != "" {
		if err := os.Remove(u.root); err != nil {
			return err
		}
	}
	if err := os.Chmod(dest, releaseRootMode); err != nil {
		return err
	}
	return setMtime(dest, root.mtime)
}

// renameNoReplace moves src to dest, failing if dest appeared in the
// meantime: a plain rename would silently replace an empty directory.
func renameNoReplace(src, dest string) error {
	err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dest, unix.RENAME_NOREPLACE)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) {
		return &os.LinkError{Op: "rename", Old: src, New: dest, Err: err}
	}
	// The file system cannot do RENAME_NOREPLACE: check, then rename.
	if _, err := os.Lstat(dest); err == nil {
		return fmt.Errorf("destination %s already exists", dest)
	}
	return os.Rename(src, dest)
}

// result lists the tree below root as Entries, paths relative to root.
func (u *unpacker) result(root *node, strip string) *Result {
	res := &Result{StrippedDir: strip, UnpackedBytes: u.written, Entries: []Entry{}}
	var walk func(n *node, rel string)
	walk = func(n *node, rel string) {
		for name, c := range n.children {
			crel := path.Join(rel, name)
			e := Entry{Path: crel, Type: c.kind.String(), Mode: c.mode, Size: c.size, ModTime: c.mtime, Owner: c.own}
			switch c.kind {
			case kindDir:
				res.Dirs++
				walk(c, crel)
			case kindFile:
				res.Files++
				e.SHA256 = c.sum
			case kindSymlink:
				res.Symlinks++
				e.LinkTarget = c.target
			}
			res.Entries = append(res.Entries, e)
		}
	}
	walk(root, "")
	slices.SortFunc(res.Entries, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) })
	return res
}

// removeTree removes a tree that may hold directories we made read-only
// (or unsearchable) for a non-root user, by restoring u+rwx on the way down.
func removeTree(root string) error {
	err := os.RemoveAll(root)
	if err == nil {
		return nil
	}
	// WalkDir calls fn for a directory before reading it, so fixing its
	// mode there lets the walk descend.
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(root)
}
