package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A rollback between two 10 000-file revisions lstats every source and
// every destination; with absolute paths the kernel resolves each path's
// ten-odd components every time, most of the cost of the call. These
// helpers lstat a name inside an open directory instead (fstatat), with
// the same result as lstat of the whole path.

// statInfo is an fs.FileInfo from fstatat, as os.Lstat would give it.
type statInfo struct {
	name string
	st   syscall.Stat_t
}

func newStatInfo(name string, u *unix.Stat_t) *statInfo {
	return &statInfo{name: name, st: syscall.Stat_t{
		Dev: u.Dev, Ino: u.Ino, Nlink: u.Nlink, Mode: u.Mode, Uid: u.Uid, Gid: u.Gid, Rdev: u.Rdev,
		Size: u.Size, Blksize: u.Blksize, Blocks: u.Blocks,
		Atim: syscall.Timespec{Sec: u.Atim.Sec, Nsec: u.Atim.Nsec},
		Mtim: syscall.Timespec{Sec: u.Mtim.Sec, Nsec: u.Mtim.Nsec},
		Ctim: syscall.Timespec{Sec: u.Ctim.Sec, Nsec: u.Ctim.Nsec},
	}}
}

func (s *statInfo) Name() string       { return s.name }
func (s *statInfo) Size() int64        { return s.st.Size }
func (s *statInfo) ModTime() time.Time { return time.Unix(s.st.Mtim.Sec, s.st.Mtim.Nsec) }
func (s *statInfo) IsDir() bool        { return s.Mode().IsDir() }
func (s *statInfo) Sys() any           { return &s.st }

// Mode converts st_mode as package os does.
func (s *statInfo) Mode() fs.FileMode {
	m := fs.FileMode(s.st.Mode & 0o777)
	switch s.st.Mode & syscall.S_IFMT {
	case syscall.S_IFBLK:
		m |= fs.ModeDevice
	case syscall.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFDIR:
		m |= fs.ModeDir
	case syscall.S_IFIFO:
		m |= fs.ModeNamedPipe
	case syscall.S_IFLNK:
		m |= fs.ModeSymlink
	case syscall.S_IFSOCK:
		m |= fs.ModeSocket
	}
	if s.st.Mode&syscall.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if s.st.Mode&syscall.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if s.st.Mode&syscall.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// dirStatter lstats paths through an open descriptor of their directory,
// kept while consecutive paths share it (the plan's order groups them).
type dirStatter struct {
	dir string
	fd  int // -1: dir could not be opened; lstat the whole path
}

func newDirStatter() *dirStatter { return &dirStatter{fd: -1} }

// lstat is os.Lstat(path), nil when nothing is there.
func (d *dirStatter) lstat(path string) (fs.FileInfo, error) {
	dir, name := filepath.Split(path)
	dir = filepath.Clean(dir)
	if dir != d.dir || d.dir == "" {
		d.close()
		d.dir = dir
		// Following symlinks, as lstat does for every component but the last.
		if fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			d.fd = fd
		}
	}
	var fi fs.FileInfo
	var err error
	if d.fd >= 0 {
		var st unix.Stat_t
		err = unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == nil {
			fi = newStatInfo(name, &st)
		} else {
			err = &fs.PathError{Op: "lstat", Path: path, Err: err}
		}
	} else {
		fi, err = os.Lstat(path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("install: inspect %s: %w", path, err)
	}
	return fi, nil
}

func (d *dirStatter) close() {
	if d.fd >= 0 {
		unix.Close(d.fd)
	}
	d.fd, d.dir = -1, ""
}

// walkTree calls fn for everything under root (not root itself), in the
// order of filepath.WalkDir (depth first, names sorted), with its lstat.
func walkTree(root string, fn func(path string, fi fs.FileInfo) error) error {
	f, err := os.Open(root)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		f.Close()
		return fmt.Errorf("read directory %s: %w", root, err)
	}
	sort.Strings(names)
	type entry struct {
		path string
		fi   fs.FileInfo
	}
	entries := make([]entry, 0, len(names))
	fd := int(f.Fd())
	for _, name := range names {
		var st unix.Stat_t
		p := root + "/" + name
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			f.Close()
			return &fs.PathError{Op: "lstat", Path: p, Err: err}
		}
		entries = append(entries, entry{p, newStatInfo(name, &st)})
	}
	f.Close()
	for _, e := range entries {
		if err := fn(e.path, e.fi); err != nil {
			return err
		}
		if e.fi.IsDir() {
			if err := walkTree(e.path, fn); err != nil {
				return err
			}
		}
	}
	return nil
}
