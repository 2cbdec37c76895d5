package bundle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// copyBufSize is the one buffer every copy goes through, so memory use does
// not depend on how big the bundle or its files are.
const copyBufSize = 64 << 10

// permBits are the mode bits kept from an archive: the permissions plus
// setuid, setgid and sticky, as tar -p keeps them. They are recorded in
// the Result for Install; the copy on disk gets releaseMode.
const permBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// Modes of the unpacked copy. The agent runs hook scripts from it as root,
// so nothing in it may be writable by anyone else, whatever the archive's
// headers say (a tar made by uid 4711 would otherwise leave its scripts
// writable by the local user 4711, and a "./" entry of mode 777 the whole
// revision): every object is root's, directories are 0755, files 0755 or
// 0644 (executable when any x bit was set), and no setuid, setgid or sticky
// bit survives (a setuid file owned by root would be a setuid-root program
// for whoever reaches it). Access from outside is decided once, at the
// revision root (see releases). The archive's own modes and owners stay in
// the Result, and Install applies them at the destination.
const (
	releaseDirMode  fs.FileMode = 0o755
	releaseExecMode fs.FileMode = 0o755
	releaseFileMode fs.FileMode = 0o644
	// releaseRootMode keeps the revision private until its store decides
	// who may traverse it.
	releaseRootMode fs.FileMode = 0o700
)

// releaseMode is the mode an object of kind k, archived with mode m, gets
// in the unpacked copy.
func releaseMode(k kind, m fs.FileMode) fs.FileMode {
	switch {
	case k == kindDir:
		return releaseDirMode
	case m&0o111 != 0:
		return releaseExecMode
	}
	return releaseFileMode
}

// impliedDirMode is given to parent directories no entry describes, as
// tar and unzip do under the usual umask 022.
const impliedDirMode fs.FileMode = 0o755

type kind uint8

const (
	kindDir kind = iota + 1
	kindFile
	kindSymlink
)

func (k kind) String() string {
	switch k {
	case kindDir:
		return TypeDir
	case kindFile:
		return TypeFile
	case kindSymlink:
		return TypeSymlink
	}
	return "unknown"
}

// node is one object of the tree being unpacked. The tree, not the file
// system, is the authority on what exists: the temporary directory is ours
// alone, so every check (type changes, writing through links, where links
// lead) is answered here without ever following anything on disk.
type node struct {
	kind     kind
	name     string // the member name as the archive spelled it ("" if implied)
	parent   *node
	children map[string]*node // directories only
	mode     fs.FileMode      // permBits only
	mtime    time.Time
	size     int64
	sum      string // files: hex sha256 of the content
	target   string // symlinks
	own      *Owner // tar entries
}

// Owner is a tar entry's owner as its header gives it: numeric ids and,
// when the header has them, names. Install maps it like GNU tar run as
// root (CodeDeploy's tar -xp): by name when the name exists on the host,
// by number otherwise. It is never applied to the unpacked copy.
type Owner struct {
	UID   int    `json:"uid"`
	GID   int    `json:"gid"`
	User  string `json:"user,omitempty"`
	Group string `json:"group,omitempty"`
}

// member is an archive entry, already vetted, on its way to the tree.
type member struct {
	name  string // as in the archive, for error messages
	rel   string // cleaned, relative, "." for the root
	mode  fs.FileMode
	mtime time.Time
	own   *Owner
}

// unpacker builds one revision tree inside root.
type unpacker struct {
	ctx     context.Context
	root    string // the temporary directory
	lim     Limits
	format  Format
	tree    *node
	count   int   // objects created, checked against MaxFiles
	written int64 // regular-file bytes written, checked against MaxTotalBytes
	buf     []byte
	started time.Time // mtime of implied directories
}

func newUnpacker(ctx context.Context, root string, lim Limits, format Format) *unpacker {
	return &unpacker{
		ctx:     ctx,
		root:    root,
		lim:     lim,
		format:  format,
		tree:    &node{kind: kindDir, mode: impliedDirMode},
		buf:     make([]byte, copyBufSize),
		started: time.Now(),
	}
}

// entryError names the member an error is about; every refusal goes
// through it so the message always says which entry was at fault.
func entryError(name string, err error) error {
	return fmt.Errorf("entry %q: %w", name, err)
}

// abs is rel's location on disk.
func (u *unpacker) abs(rel string) string {
	return filepath.Join(u.root, filepath.FromSlash(rel))
}

// begin vets one member's name, counts it against MaxFiles and checks for
// cancellation, which is how cancellation is seen between entries.
func (u *unpacker) begin(name string) (string, error) {
	if err := u.ctx.Err(); err != nil {
		return "", err
	}
	if err := u.claim(); err != nil {
		return "", err
	}
	return cleanName(name)
}

func (u *unpacker) claim() error {
	if u.count >= u.lim.MaxFiles {
		return fmt.Errorf("more than MaxFiles (%d) entries, implied directories included", u.lim.MaxFiles)
	}
	u.count++
	return nil
}

// checkTime refuses timestamps that cannot be stored or reported: a tar
// header can encode any int64 of seconds, and time.Time stops marshalling to
// JSON outside years 0-9999.
func checkTime(t time.Time) error {
	if y := t.Year(); y < 1 || y > 9999 {
		return fmt.Errorf("modification time %d is out of range", t.Unix())
	}
	return nil
}

// parentOf walks m's parent path from the root, creating implied
// directories, and refuses when a component is a symlink (nothing is ever
// written through a link) or a regular file.
func (u *unpacker) parentOf(m member) (*node, string, error) {
	dir, base := path.Split(m.rel)
	cur := u.tree
	// Walk by index into the cleaned name: no component is empty, and
	// slicing keeps the walk linear even for names thousands of levels deep.
	for i := 0; i < len(dir); {
		j := i + strings.IndexByte(dir[i:], '/')
		c, walked := dir[i:j], dir[:j]
		i = j + 1
		next := cur.children[c]
		if next == nil {
			if err := u.claim(); err != nil {
				return nil, "", err
			}
			if err := os.Mkdir(u.abs(walked), 0o700); err != nil {
				return nil, "", err
			}
			next = cur.add(c, &node{kind: kindDir, mode: impliedDirMode, mtime: u.started})
		}
		switch next.kind {
		case kindSymlink:
			return nil, "", errEscape("parent %q is a symlink unpacked earlier; nothing may be written through a link", walked)
		case kindFile:
			return nil, "", fmt.Errorf("parent %q is a regular file, not a directory", walked)
		}
		cur = next
	}
	return cur, base, nil
}

func (n *node) add(name string, child *node) *node {
	if n.children == nil {
		n.children = make(map[string]*node)
	}
	child.parent = n
	n.children[name] = child
	return child
}

// replace makes room for a new object of kind k at m.rel. A file or
// symlink may replace one of the same kind (as tar does when a name repeats);
// any change of type is refused, so a directory can never become a link.
func (u *unpacker) replace(parent *node, base string, m member, k kind) error {
	old := parent.children[base]
	if old == nil {
		return nil
	}
	if old.kind != k || k == kindDir {
		return fmt.Errorf("type change: %q was unpacked as a %s and may not become a %s", m.rel, old.kind, k)
	}
	delete(parent.children, base)
	return os.Remove(u.abs(m.rel))
}

func rootTypeChange(k kind) error {
	return fmt.Errorf("type change: the revision root is a directory and may not become a %s", k)
}

// mkdir creates (or updates the metadata of) a directory. It is left
// u+rwx for now so children can be written; finish applies the real mode.
func (u *unpacker) mkdir(m member) error {
	n := u.tree
	if m.rel != "." {
		parent, base, err := u.parentOf(m)
		if err != nil {
			return err
		}
		p := u.abs(m.rel)
		n = parent.children[base]
		if n != nil && n.kind != kindDir {
			return fmt.Errorf("type change: %q was unpacked as a %s and may not become a directory", m.rel, n.kind)
		}
		if n == nil {
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
			n = parent.add(base, &node{kind: kindDir})
		}
	}
	n.name, n.mode, n.mtime, n.own = m.name, m.mode, m.mtime, m.own
	return nil
}

// file writes a regular file from r. claimed is the size the header
// announces (-1 if unknown): it allows refusing early, but only the bytes
// really written are trusted.
func (u *unpacker) file(m member, claimed int64, r io.Reader) error {
	if m.rel == "." {
		return rootTypeChange(kindFile)
	}
	if claimed > u.lim.MaxFileBytes {
		return fmt.Errorf("file of %d bytes exceeds MaxFileBytes (%d bytes)", claimed, u.lim.MaxFileBytes)
	}
	if claimed > 0 && u.written+claimed > u.lim.MaxTotalBytes {
		return fmt.Errorf("file of %d bytes would take the bundle past MaxTotalBytes (%d bytes)", claimed, u.lim.MaxTotalBytes)
	}
	parent, base, err := u.parentOf(m)
	if err != nil {
		return err
	}
	if err := u.replace(parent, base, m, kindFile); err != nil {
		return err
	}
	p := u.abs(m.rel)
	// O_EXCL|O_NOFOLLOW: the name was just made free, so anything found
	// there now was not put there by us, and must not be written through.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := u.copyContent(io.MultiWriter(f, h), r)
	if err == nil {
		err = f.Chmod(releaseMode(kindFile, m.mode))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := setMtime(p, m.mtime); err != nil {
		return err
	}
	parent.add(base, &node{kind: kindFile, name: m.name, mode: m.mode, mtime: m.mtime,
		size: n, sum: hex.EncodeToString(h.Sum(nil)), own: m.own})
	return nil
}

// copyContent copies one entry's content through the shared buffer,
// counting the bytes really written against both caps before writing them
// (a zip bomb lies in its headers), and checking for cancellation on every
// chunk so that a long copy stops promptly.
func (u *unpacker) copyContent(dst io.Writer, src io.Reader) (int64, error) {
	var n int64
	for {
		if err := u.ctx.Err(); err != nil {
			return n, err
		}
		k, rerr := src.Read(u.buf)
		if k > 0 {
			if n+int64(k) > u.lim.MaxFileBytes {
				return n, fmt.Errorf("file exceeds MaxFileBytes (%d bytes)", u.lim.MaxFileBytes)
			}
			if u.written+int64(k) > u.lim.MaxTotalBytes {
				return n, fmt.Errorf("bundle exceeds MaxTotalBytes (%d bytes unpacked)", u.lim.MaxTotalBytes)
			}
			if _, err := dst.Write(u.buf[:k]); err != nil {
				return n, err
			}
			n += int64(k)
			u.written += int64(k)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// symlink creates a symlink after the lexical check of its target; the
// check against the whole tree happens in finish.
func (u *unpacker) symlink(m member, target string) error {
	if m.rel == "." {
		return rootTypeChange(kindSymlink)
	}
	if err := checkLinkTarget(m.rel, target); err != nil {
		return err
	}
	parent, base, err := u.parentOf(m)
	if err != nil {
		return err
	}
	if err := u.replace(parent, base, m, kindSymlink); err != nil {
		return err
	}
	p := u.abs(m.rel)
	if err := os.Symlink(target, p); err != nil {
		return err
	}
	if err := setMtime(p, m.mtime); err != nil {
		return err
	}
	parent.add(base, &node{kind: kindSymlink, name: m.name, mode: fs.ModePerm,
		mtime: m.mtime, size: int64(len(target)), target: target, own: m.own})
	return nil
}

// hardlink links m to a regular file unpacked earlier. Anything else (a
// directory, a link, a path outside the tree or not yet unpacked) is refused:
// a hard link to /etc/passwd would otherwise let the next deployment step
// rewrite it.
func (u *unpacker) hardlink(m member, linkname string) error {
	if m.rel == "." {
		return rootTypeChange(kindFile)
	}
	trel, err := cleanName(linkname)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", linkname, err)
	}
	target := u.lookup(trel)
	if target == nil || target.kind != kindFile {
		return fmt.Errorf("hard link target %q is not a regular file unpacked earlier", linkname)
	}
	if trel == m.rel {
		return fmt.Errorf("hard link %q points to itself", linkname)
	}
	parent, base, err := u.parentOf(m)
	if err != nil {
		return err
	}
	if err := u.replace(parent, base, m, kindFile); err != nil {
		return err
	}
	if err := os.Link(u.abs(trel), u.abs(m.rel)); err != nil {
		return err
	}
	// The link shares the target's inode, so its metadata is the target's.
	n := *target
	n.name = m.name
	parent.add(base, &n)
	return nil
}

// lookup finds rel in the tree without creating anything.
func (u *unpacker) lookup(rel string) *node {
	if rel == "." {
		return u.tree
	}
	cur := u.tree
	for _, c := range strings.Split(rel, "/") {
		if cur.kind != kindDir {
			return nil
		}
		if cur = cur.children[c]; cur == nil {
			return nil
		}
	}
	return cur
}

// setMtime sets a modification time without following a final symlink,
// leaving the access time alone. The zero time means "unknown".
func setMtime(p string, t time.Time) error {
	if t.IsZero() {
		return nil
	}
	ts := []unix.Timespec{
		{Nsec: unix.UTIME_OMIT},
		{Sec: t.Unix(), Nsec: int64(t.Nanosecond())},
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &fs.PathError{Op: "utimensat", Path: p, Err: err}
	}
	return nil
}
