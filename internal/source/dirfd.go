package source

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// Files beside a bundle (its manifest and signature, the inbox's
// subdirectories and reasons) are reached through an open directory with
// the *at calls and O_NOFOLLOW: whoever may write that directory can put
// a link where a file or a subdirectory should be, and a path would
// follow it; a descriptor does not.

// openAt opens the regular file name in dir for reading, never through a
// link, and never blocking on a FIFO.
func openAt(dir *os.File, name string) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(dir.Name(), name), Err: err}
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name))
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file (%s)", f.Name(), fi.Mode().Type())
	}
	return f, nil
}

// readSmallAt reads a manifest or signature of at most release.MaxDocBytes.
func readSmallAt(dir *os.File, name string) ([]byte, error) {
	f, err := openAt(dir, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, release.MaxDocBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > release.MaxDocBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a manifest or signature", f.Name(), release.MaxDocBytes)
	}
	return b, nil
}

// existsAt reports whether dir holds name (of any type, a link included).
func existsAt(dir *os.File, name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

// moveAt renames name in from to newName in to, or to newName.1, .2, ...
// when that is taken: an earlier file is never replaced. It returns the
// name it got.
func moveAt(from *os.File, name string, to *os.File, newName string) (string, error) {
	dst := newName
	for i := 1; ; i++ {
		err := unix.Renameat2(int(from.Fd()), name, int(to.Fd()), dst, unix.RENAME_NOREPLACE)
		if err == nil {
			return dst, nil
		}
		if !errors.Is(err, unix.EEXIST) || i > 10000 {
			return "", fmt.Errorf("move %s to %s: %w", filepath.Join(from.Name(), name), filepath.Join(to.Name(), dst), err)
		}
		dst = fmt.Sprintf("%s.%d", newName, i)
	}
}

// writeNewAt creates name in dir (never over an existing file or link)
// with data.
func writeNewAt(dir *os.File, name string, data []byte) error {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return &os.PathError{Op: "create", Path: filepath.Join(dir.Name(), name), Err: err}
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name))
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
