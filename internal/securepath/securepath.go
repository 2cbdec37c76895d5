// Package securepath checks and creates the directories the agent keeps
// its state and its socket in, so that no user but root can redirect
// what the agent writes there or what agentctl talks to.
//
// A directory is safe when every directory from / down to it is owned by
// root (or the agent's own user) and writable by nobody else. A sticky
// directory such as /tmp may be on the way, never at the end: in it
// others may create names but not replace root's. A symbolic link on the
// way is followed only when root (or the agent's user) owns it, and its
// target is checked the same way. Missing directories are created with
// mkdirat relative to a parent opened with O_NOFOLLOW, and modes and
// owners are changed through descriptors, never by path: a link swapped
// in after the check cannot send a chmod elsewhere.
package securepath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// maxLinks bounds the symbolic links followed on one path (the kernel's
// own limit is 40).
const maxLinks = 40

// UnsafeError says why a path is not safe for the agent's state.
type UnsafeError struct {
	// Path is the path asked about; Component the directory or link on
	// the way that makes it unsafe.
	Path, Component string
	Why             string
}

func (e *UnsafeError) Error() string {
	if e.Component == e.Path {
		return fmt.Sprintf("%s: %s", e.Path, e.Why)
	}
	return fmt.Sprintf("%s: %s %s", e.Path, e.Component, e.Why)
}

// Trusted reports whether uid may own what the agent relies on: root,
// or the user the agent runs as.
func Trusted(uid uint32) bool { return uid == 0 || int(uid) == os.Geteuid() }

// Check returns nil when path is a directory no untrusted user can
// change or redirect, or an *UnsafeError (or the error of looking).
func Check(path string) error {
	f, err := Open(path, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// CheckExisting is Check for a path that may not exist yet: what exists
// of it must be safe, and the rest is for root to create. The agent's
// --check-config uses it, before the package or the agent made the dirs.
func CheckExisting(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%s: not an absolute path", path)
	}
	fd, err := walk(filepath.Clean(path), path, 0, true)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// Open checks path as Check does and returns the directory opened
// (read-only, for Fchmod, Fchown and the *at calls). With perm non-zero
// the missing directories are created with that mode (before the umask),
// each relative to its checked parent.
func Open(path string, perm os.FileMode) (*os.File, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%s: not an absolute path", path)
	}
	fd, err := walk(filepath.Clean(path), path, perm, false)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	dir, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return os.NewFile(uintptr(dir), path), nil
}

// walk resolves path one component at a time from /, checking each, and
// returns an O_PATH descriptor of the last directory (with partial, of
// the last one that exists).
func walk(path, asked string, perm os.FileMode, partial bool) (int, error) {
	todo := components(path)
	fd, done, err := openRoot(asked)
	if err != nil {
		return -1, err
	}
	links := 0
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		here := filepath.Join(done, name)
		var st unix.Stat_t
		err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) && perm != 0 {
			if err := unix.Mkdirat(fd, name, uint32(perm.Perm())); err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(fd)
				return -1, fmt.Errorf("create %s: %w", here, err)
			}
			err = unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		}
		if errors.Is(err, unix.ENOENT) && partial {
			return fd, nil
		}
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("%s: %w", here, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			target, err := readlinkat(fd, name)
			unix.Close(fd)
			if err != nil {
				return -1, fmt.Errorf("read link %s: %w", here, err)
			}
			if !Trusted(st.Uid) {
				return -1, &UnsafeError{Path: asked, Component: here, Why: fmt.Sprintf("is a symbolic link (to %s) owned by uid %d, not root: whoever owns it chooses where the agent writes", target, st.Uid)}
			}
			if links++; links > maxLinks {
				return -1, fmt.Errorf("%s: more than %d symbolic links on the way", asked, maxLinks)
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(done, target)
			}
			// done holds no links, so cleaning ".." in the joined path
			// lexically is what the kernel would do.
			todo = append(components(filepath.Clean(target)), todo...)
			if fd, done, err = openRoot(asked); err != nil {
				return -1, err
			}
			continue
		case unix.S_IFDIR:
		default:
			unix.Close(fd)
			return -1, fmt.Errorf("%s: %s is not a directory", asked, here)
		}
		if err := dirSafe(asked, here, &st, len(todo) == 0); err != nil {
			unix.Close(fd)
			return -1, err
		}
		next, err := unix.Openat(fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("open %s: %w", here, err)
		}
		// The directory opened must be the one checked, not one swapped
		// in between (which the checks above forbid, but cheaply proven).
		var got unix.Stat_t
		if err := unix.Fstat(next, &got); err != nil || got.Dev != st.Dev || got.Ino != st.Ino {
			unix.Close(next)
			return -1, fmt.Errorf("%s: %s changed while it was checked", asked, here)
		}
		fd, done = next, here
	}
	return fd, nil
}

// openRoot opens / and checks it.
func openRoot(asked string) (int, string, error) {
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", fmt.Errorf("open /: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("stat /: %w", err)
	}
	if err := dirSafe(asked, "/", &st, asked == "/"); err != nil {
		unix.Close(fd)
		return -1, "", err
	}
	return fd, "/", nil
}

// dirSafe checks one directory: a trusted owner, and no write access for
// group or others, except for a sticky directory on the way. The group
// bits also carry the mask of an ACL, so a named user granted write by
// an ACL shows here too.
func dirSafe(asked, here string, st *unix.Stat_t, last bool) error {
	if !Trusted(st.Uid) {
		return &UnsafeError{Path: asked, Component: here, Why: fmt.Sprintf("is owned by uid %d, not root: its owner could replace what the agent keeps there", st.Uid)}
	}
	mode := st.Mode & 0o7777
	if mode&0o022 == 0 {
		return nil
	}
	if mode&unix.S_ISVTX != 0 && !last {
		return nil
	}
	return &UnsafeError{Path: asked, Component: here, Why: fmt.Sprintf("is writable by group or others (mode %04o): they could replace what the agent keeps there; make it writable by root only (chmod go-w)", mode)}
}

func components(path string) []string {
	var out []string
	for _, c := range strings.Split(path, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		if len(buf) >= unix.PathMax {
			return "", unix.ENAMETOOLONG
		}
		buf = make([]byte, len(buf)*4)
	}
}

// SetModeGroup gives the entry name of dir the mode perm and the group
// gid (-1: unchanged), without following it should it be a link: it must
// be of the type kind (unix.S_IFSOCK, unix.S_IFREG, ...).
func SetModeGroup(dir *os.File, name string, kind uint32, perm os.FileMode, gid int) error {
	path := filepath.Join(dir.Name(), name)
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != kind {
		return fmt.Errorf("%s is not what the agent made (file type %o, want %o)", path, st.Mode&unix.S_IFMT, kind)
	}
	if gid >= 0 {
		if err := unix.Fchownat(fd, "", -1, gid, unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("chown %s to group %d: %w", path, gid, err)
		}
	}
	// fchmodat2 (Linux 6.6) changes the mode of what fd is; older kernels
	// do it through the descriptor's /proc entry, as glibc does.
	err = unix.Fchmodat(fd, "", uint32(perm.Perm()), unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		err = unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), uint32(perm.Perm()))
	}
	if err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return nil
}
