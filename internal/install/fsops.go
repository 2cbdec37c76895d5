package install

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Every change Install makes on disk goes through a tree: paths are walked
// from "/" one component at a time with openat(O_NOFOLLOW), and the change
// is made relative to the directory found (mkdirat, unlinkat, renameat,
// ...). A symlink met on the way is followed only when a non-root user
// cannot have made it; so a link that the application's user puts where a
// directory of the previous revision was (www/old -> /rootonly) can neither
// make the cleanup delete a root-only file nor make the copy write one
// (issue 17.8). A link is trusted when
//
//   - it is root's, in a directory that is root's and writable by nobody
//     else (or sticky, where nobody else can replace root's entry), and
//   - it is not where this agent made a directory: a link there was put
//     in its place after the install (a hook swapping directories, issue
//     14.5), and is replaced rather than followed.
//
// So the administrator's /var/www -> /data/www works as it does for
// CodeDeploy's agent, and nothing a non-root writer controls is followed.

// maxHops is the kernel's limit on links followed in one lookup (ELOOP).
const maxHops = 40

// errUntrusted says that a path leads through a symlink that is not
// followed; the path is not where the agent put it.
type errUntrusted struct {
	link   string // the link met, by its real path
	asked  string // the same, by the path asked for ("" when reached through another link's target)
	target string
	why    string
}

func (e *errUntrusted) Error() string {
	return fmt.Sprintf("%s is a symlink to %s (%s), which this agent does not follow", e.link, e.target, e.why)
}

// tree resolves and changes paths safely. ours holds the directories this
// agent made (from the manifests and as it goes).
type tree struct {
	ours map[string]bool
	// lastDir is the most recently opened directory, kept open: an
	// install creates siblings one after the other.
	lastDir  string
	lastFd   int
	lastReal string
}

func newTree(ours map[string]bool) *tree {
	if ours == nil {
		ours = map[string]bool{}
	}
	return &tree{ours: ours, lastFd: -1}
}

// close releases the cached directory.
func (t *tree) close() {
	if t.lastFd >= 0 {
		unix.Close(t.lastFd)
		t.lastFd, t.lastDir = -1, ""
	}
}

type comp struct {
	name string
	orig bool // from the path asked for, not from a link's target
}

func split(p string, orig bool) []comp {
	var out []comp
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, comp{c, orig})
		}
	}
	return out
}

type level struct {
	fd   int
	path string // real path, for messages
}

// openDir opens the directory at the absolute path p (O_RDONLY,
// O_DIRECTORY) and returns its fd and its real path. The fd belongs to
// the tree, which keeps the last directory opened (an install works on
// siblings one after the other): it stays valid until the next openDir,
// so callers neither close it nor hold it across another call.
func (t *tree) openDir(p string) (int, string, error) {
	p = path.Clean(p)
	if t.lastFd >= 0 && t.lastDir == p {
		return t.lastFd, t.lastReal, nil
	}
	fd, real, err := t.walk(p)
	if err != nil {
		return -1, "", err
	}
	t.close()
	t.lastDir, t.lastFd, t.lastReal = p, fd, real
	return fd, real, nil
}

func (t *tree) walk(p string) (int, string, error) {
	if !strings.HasPrefix(p, "/") {
		return -1, "", fmt.Errorf("%s is not an absolute path", p)
	}
	root, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", &fs.PathError{Op: "open", Path: "/", Err: err}
	}
	stack := []level{{root, "/"}}
	closeAll := func() {
		for _, l := range stack {
			unix.Close(l.fd)
		}
	}
	todo := split(p, true)
	asked := "/" // the prefix of p consumed so far
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		cur := stack[len(stack)-1]
		if c.name == ".." {
			if len(stack) > 1 {
				unix.Close(cur.fd)
				stack = stack[:len(stack)-1]
			}
			continue
		}
		here := path.Join(cur.path, c.name)
		if c.orig {
			asked = path.Join(asked, c.name)
		}
		fd, err := unix.Openat(cur.fd, c.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == nil {
			stack = append(stack, level{fd, here})
			continue
		}
		if !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR) {
			closeAll()
			return -1, "", &fs.PathError{Op: "open", Path: here, Err: err}
		}
		var st unix.Stat_t
		if err := unix.Fstatat(cur.fd, c.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK {
			closeAll()
			return -1, "", &fs.PathError{Op: "open", Path: here, Err: unix.ENOTDIR}
		}
		target, err := readlinkat(cur.fd, c.name)
		if err != nil {
			closeAll()
			return -1, "", &fs.PathError{Op: "readlink", Path: here, Err: err}
		}
		if why := t.distrust(cur.fd, &st, c.orig, asked); why != "" {
			closeAll()
			e := &errUntrusted{link: here, target: target, why: why}
			if c.orig {
				e.asked = asked
			}
			return -1, "", e
		}
		if hops++; hops > maxHops {
			closeAll()
			return -1, "", &fs.PathError{Op: "open", Path: p, Err: unix.ELOOP}
		}
		if strings.HasPrefix(target, "/") {
			for _, l := range stack[1:] {
				unix.Close(l.fd)
			}
			stack = stack[:1]
		}
		// The rest of the path asked for keeps its name: a directory this
		// agent made below a trusted link is still recognised as its own.
		todo = append(split(target, false), todo...)
	}
	for _, l := range stack[:len(stack)-1] {
		unix.Close(l.fd)
	}
	top := stack[len(stack)-1]
	return top.fd, top.path, nil
}

// distrust says why the link described by st in the directory dirFd is
// not followed, or "".
func (t *tree) distrust(dirFd int, st *unix.Stat_t, orig bool, asked string) string {
	if orig && t.ours[asked] {
		return "it stands where this agent made a directory"
	}
	if st.Uid != 0 {
		return fmt.Sprintf("it belongs to uid %d", st.Uid)
	}
	var dst unix.Stat_t
	if err := unix.Fstat(dirFd, &dst); err != nil {
		return "its directory cannot be checked: " + err.Error()
	}
	if dst.Uid != 0 {
		return fmt.Sprintf("its directory belongs to uid %d", dst.Uid)
	}
	if dst.Mode&0o022 != 0 && dst.Mode&unix.S_ISVTX == 0 {
		return fmt.Sprintf("its directory is writable by others (mode %04o)", dst.Mode&0o7777)
	}
	return ""
}

func readlinkat(dirFd int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dirFd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// parent opens the directory of p (the tree's fd, see openDir).
func (t *tree) parent(p string) (fd int, base, realDir string, err error) {
	p = path.Clean(p)
	dir, base := path.Split(p)
	if base == "" {
		return -1, "", "", fmt.Errorf("%s has no parent", p)
	}
	fd, realDir, err = t.openDir(path.Clean(dir))
	return fd, base, realDir, err
}

// lstat is lstat(2) of p, its last component not followed.
func (t *tree) lstat(p string) (*unix.Stat_t, error) {
	fd, base, _, err := t.parent(p)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: p, Err: err}
	}
	return &st, nil
}

// remove unlinks p (rmdir when dir) without following anything.
func (t *tree) remove(p string, dir bool) error {
	fd, base, _, err := t.parent(p)
	if err != nil {
		return err
	}
	flags := 0
	if dir {
		// The tree's cached directory is p's parent now, never p.
		flags = unix.AT_REMOVEDIR
	}
	if err := unix.Unlinkat(fd, base, flags); err != nil {
		return &fs.PathError{Op: "remove", Path: p, Err: err}
	}
	return nil
}

// kindOfStat names what st describes, as kindOf does for a FileInfo.
func kindOfStat(st *unix.Stat_t) string {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return KindDir
	case unix.S_IFLNK:
		return KindSymlink
	case unix.S_IFREG:
		return KindFile
	}
	return "special file"
}

func statKeyOf(st *unix.Stat_t) *StatKey {
	return &StatKey{
		Dev: st.Dev, Ino: st.Ino, Size: st.Size,
		MTime: st.Mtim.Sec*1e9 + st.Mtim.Nsec, CTime: st.Ctim.Sec*1e9 + st.Ctim.Nsec,
	}
}

// readlink reads the link p without following its ancestors' untrusted
// links.
func (t *tree) readlink(p string) (string, error) {
	fd, base, _, err := t.parent(p)
	if err != nil {
		return "", err
	}
	return readlinkat(fd, base)
}
