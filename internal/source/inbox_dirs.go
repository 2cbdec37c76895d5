package source

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/securepath"
)

// The inbox may be writable by those who drop bundles (a deploy group);
// its subdirectories are the agent's. Whoever can write the inbox can
// rename processing/ away and put a link to /etc in its place, so the
// agent never reaches into the inbox by path: each pass opens the inbox
// (O_NOFOLLOW, its parent chain checked at start) and its subdirectories
// (O_NOFOLLOW, root's, writable by root only) once, and every look, move
// and write goes through those descriptors.

// inboxDirs are the open inbox and its subdirectories.
type inboxDirs struct {
	root, processing, processed, rejected *os.File
}

func (d *inboxDirs) close() {
	for _, f := range []*os.File{d.root, d.processing, d.processed, d.rejected} {
		if f != nil {
			f.Close()
		}
	}
}

// prepare checks, at start, that only root can change the path to the
// inbox, and creates the inbox and its subdirectories.
func (in *Inbox) prepare() error {
	parent, err := securepath.Open(filepath.Dir(in.Dir), 0o755)
	if err != nil {
		return fmt.Errorf("inbox %s: %w", in.Dir, err)
	}
	defer parent.Close()
	if err := unix.Mkdirat(int(parent.Fd()), filepath.Base(in.Dir), 0o750); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("inbox: create %s: %w", in.Dir, err)
	}
	d, err := in.open()
	if err != nil {
		return err
	}
	d.close()
	return nil
}

// open opens the inbox and its subdirectories, creating missing ones.
func (in *Inbox) open() (*inboxDirs, error) {
	fd, err := unix.Open(in.Dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("inbox: open %s (a directory, not a link): %w", in.Dir, err)
	}
	d := &inboxDirs{root: os.NewFile(uintptr(fd), in.Dir)}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		d.close()
		return nil, fmt.Errorf("inbox: stat %s: %w", in.Dir, err)
	}
	if !securepath.Trusted(st.Uid) {
		d.close()
		return nil, fmt.Errorf("inbox %s is owned by uid %d, not root: its owner could swap what the agent moves; chown it to root (droppers may write it through its group)", in.Dir, st.Uid)
	}
	for _, sub := range []struct {
		name string
		f    **os.File
	}{{dirProcessing, &d.processing}, {dirProcessed, &d.processed}, {dirRejected, &d.rejected}} {
		f, err := openSubdir(d.root, sub.name)
		if err != nil {
			d.close()
			return nil, err
		}
		*sub.f = f
	}
	return d, nil
}

// openSubdir opens (making it first if missing) a subdirectory of the
// inbox that must be the agent's: a real directory, root's, writable by
// root only.
func openSubdir(root *os.File, name string) (*os.File, error) {
	path := filepath.Join(root.Name(), name)
	if err := unix.Mkdirat(int(root.Fd()), name, 0o750); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("inbox: create %s: %w", path, err)
	}
	fd, err := unix.Openat(int(root.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("inbox: open %s (the agent's directory, not a link): %w; remove what is there, the agent makes it again", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inbox: stat %s: %w", path, err)
	}
	if !securepath.Trusted(st.Uid) || st.Mode&0o022 != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("inbox: %s is not the agent's (owner uid %d, mode %04o): someone replaced it; move it away, the agent makes it again", path, st.Uid, st.Mode&0o7777)
	}
	return os.NewFile(uintptr(fd), path), nil
}
