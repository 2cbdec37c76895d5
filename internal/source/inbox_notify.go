package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// How a file came to be in the inbox decides when it may be taken
// (issue 17 item 19). A quiet period cannot tell a finished copy from a
// stalled one, and a writer that closed its file may have died halfway,
// so the inbox acts only on files complete by construction: renamed in
// (the writer finished elsewhere, rename(2) is atomic), or whose bytes
// match the size and sha256 of a manifest beside them. fsnotify reports a
// rename into the directory and a creation alike, so the inbox reads
// inotify itself.
type arrival int

const (
	// renamedIn: IN_MOVED_TO, the whole file arrived at once.
	renamedIn arrival = iota
	// writing: IN_CREATE, written in place by a writer still at work.
	writing
	// closedWrite: IN_CLOSE_WRITE, a writer in place closed the file
	// (finished, or died halfway: the inbox cannot tell).
	closedWrite
	// foundThere: seen in a listing (at start, or after lost events),
	// its arrival unknown.
	foundThere
	// overflow: the kernel dropped events; the directory must be listed.
	overflow
)

type dirEvent struct {
	name string
	how  arrival
}

// dirWatch reads inotify for one directory, without following a link.
type dirWatch struct {
	f      *os.File
	events chan dirEvent
	errs   chan error
}

func watchDir(ctx context.Context, dir string) (*dirWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inbox: inotify for %s: %w", dir, err)
	}
	mask := uint32(unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_CLOSE_WRITE | unix.IN_ONLYDIR | unix.IN_DONT_FOLLOW)
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inbox: watch %s: %w", dir, err)
	}
	// A non-blocking descriptor goes to Go's poller: Close ends a Read.
	w := &dirWatch{f: os.NewFile(uintptr(fd), "inotify:"+dir), events: make(chan dirEvent, 64), errs: make(chan error, 1)}
	go w.read(ctx)
	return w, nil
}

func (w *dirWatch) Close() error { return w.f.Close() }

func (w *dirWatch) read(ctx context.Context) {
	defer close(w.events)
	buf := make([]byte, 64*1024)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				select {
				case w.errs <- fmt.Errorf("inbox: read inotify: %w", err):
				default:
				}
			}
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			raw := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			end := off + unix.SizeofInotifyEvent + int(raw.Len)
			if end > n {
				break
			}
			name := string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:end], "\x00"))
			off = end
			ev, ok := decode(raw.Mask, name)
			if !ok {
				continue
			}
			select {
			case w.events <- ev:
			case <-ctx.Done():
				return
			}
		}
	}
}

func decode(mask uint32, name string) (dirEvent, bool) {
	switch {
	case mask&unix.IN_Q_OVERFLOW != 0:
		return dirEvent{how: overflow}, true
	case name == "" || mask&unix.IN_ISDIR != 0:
		return dirEvent{}, false
	case mask&unix.IN_MOVED_TO != 0:
		return dirEvent{name: name, how: renamedIn}, true
	case mask&unix.IN_CREATE != 0:
		return dirEvent{name: name, how: writing}, true
	case mask&unix.IN_CLOSE_WRITE != 0:
		return dirEvent{name: name, how: closedWrite}, true
	}
	return dirEvent{}, false
}
