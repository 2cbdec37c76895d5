package hooks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

const (
	// logPerm lets the agent's group read hook output (it may hold
	// secrets a script echoed) but nobody else.
	logPerm = 0o640
	// capCheckMillis bounds how long the size monitor sleeps between checks
	// when no inotify event arrives (or inotify is unavailable).
	capCheckMillis = 20
	truncMarkerFmt = "[rollback-agent: output truncated at %d bytes]\n"
)

// openLog opens an event's output file for appending. O_APPEND is what lets
// the size monitor truncate under running writers: every write of the script
// and its children lands at the current end, never past a hole.
func openLog(path string) (*os.File, error) {
	if path == "" {
		return nil, errors.New("no log file given for the script's output")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("creating the directory of log file %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, logPerm)
	if err != nil {
		return nil, fmt.Errorf("opening log file: %w", err)
	}
	return f, nil
}

// writeHeader writes the lines CodeDeploy's scripts.log starts each script
// with, so that people who know where to look in that file find the same.
func writeHeader(f *os.File, event, location string, now time.Time) error {
	ts := now.Format(time.RFC3339)
	_, err := fmt.Fprintf(f, "[%s] LifecycleEvent - %s\n[%s] Script - %s\n", ts, event, ts, location)
	if err != nil {
		return fmt.Errorf("writing the script header to %s: %w", f.Name(), err)
	}
	return nil
}

// logCap keeps an output file at or below max bytes while a script runs. A
// hook writing a gigabyte must not fill the disk, and we cannot throttle it
// at the source because its output is the file itself (a pipe would bring
// back the hang on background children), so the file is cut back as it
// grows. Truncation drops the newest output and keeps the beginning, where
// the header and the script's first messages are.
type logCap struct {
	f   *os.File
	max int64
	// ino is an inotify fd watching the file for writes and wake an
	// eventfd that finish uses to interrupt poll; both are -1 when
	// inotify is unavailable and the monitor falls back to a timer.
	ino, wake int
	stop      chan struct{}
	done      chan struct{}
	// truncated and err are written by the monitor goroutine and read by
	// finish after done is closed.
	truncated bool
	err       error
}

// startLogCap starts the size monitor for f; useInotify false makes it rely
// on the timer alone, as it does when inotify is unavailable.
func startLogCap(f *os.File, max int64, useInotify bool) *logCap {
	c := &logCap{f: f, max: max, ino: -1, wake: -1, stop: make(chan struct{}), done: make(chan struct{})}
	if !useInotify {
		go c.loop()
		return c
	}
	if err := c.watch(); err != nil {
		// Out of inotify instances or watches: the timer alone still
		// bounds the file, just less tightly.
		c.closeFds()
	}
	go c.loop()
	return c
}

// watch sets up the inotify watch, so that the monitor wakes on every write
// instead of only every capCheckMillis: a fast writer appends tens of
// megabytes in 20 ms.
func (c *logCap) watch() error {
	ino, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("creating inotify instance: %w", err)
	}
	c.ino = ino
	if _, err := unix.InotifyAddWatch(ino, c.f.Name(), unix.IN_MODIFY); err != nil {
		return fmt.Errorf("watching %s: %w", c.f.Name(), err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("creating eventfd: %w", err)
	}
	c.wake = wake
	return nil
}

func (c *logCap) closeFds() {
	for _, fd := range []*int{&c.ino, &c.wake} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

func (c *logCap) loop() {
	defer close(c.done)
	fds := []unix.PollFd{{Fd: int32(c.ino), Events: unix.POLLIN}, {Fd: int32(c.wake), Events: unix.POLLIN}}
	buf := make([]byte, 4096)
	for {
		c.enforce()
		select {
		case <-c.stop:
			return
		default:
		}
		if c.ino < 0 {
			select {
			case <-c.stop:
				return
			case <-time.After(capCheckMillis * time.Millisecond):
			}
			continue
		}
		fds[0].Revents, fds[1].Revents = 0, 0
		if _, err := unix.Poll(fds, capCheckMillis); err != nil && !errors.Is(err, unix.EINTR) {
			c.setErr(fmt.Errorf("waiting for writes to %s: %w", c.f.Name(), err))
			// Poll keeps failing the same way: go on by the timer.
			time.Sleep(capCheckMillis * time.Millisecond)
			continue
		}
		if fds[1].Revents != 0 {
			return
		}
		// Drain the queued events; one size check covers them all. Our own
		// truncation queues one more, which costs a single extra check.
		for {
			if n, err := unix.Read(c.ino, buf); n <= 0 || err != nil {
				break
			}
		}
	}
}

// enforce cuts the file back to max if it is longer.
func (c *logCap) enforce() {
	fi, err := c.f.Stat()
	if err != nil {
		c.setErr(fmt.Errorf("checking the size of log file: %w", err))
		return
	}
	if fi.Size() <= c.max {
		return
	}
	if err := c.f.Truncate(c.max); err != nil {
		c.setErr(fmt.Errorf("truncating log file to %d bytes: %w", c.max, err))
		return
	}
	c.truncated = true
}

func (c *logCap) setErr(err error) {
	if c.err == nil {
		c.err = err
	}
}

// finish stops the monitor once the script's main process has exited, cuts
// the file back a last time and, if anything was cut, says so in the file
// itself so that a reader does not take the cut for the script's last words.
func (c *logCap) finish() (truncated bool, err error) {
	close(c.stop)
	if c.wake >= 0 {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		// If the write fails, poll's timeout ends the loop anyway.
		_, _ = unix.Write(c.wake, one[:])
	}
	<-c.done
	c.closeFds()
	c.enforce()
	if c.truncated {
		if _, err := fmt.Fprintf(c.f, truncMarkerFmt, c.max); err != nil {
			c.setErr(fmt.Errorf("writing the truncation marker: %w", err))
		}
	}
	return c.truncated, c.err
}

// Tail returns up to n bytes of the end of an event's log file, for the
// diagnostics sent with a failed command (CodeDeploy sends ~2 KB). A tail
// that starts inside a UTF-8 sequence is moved to the next character, so the
// result is never invalid merely because of where it was cut.
func Tail(path string, n int) (string, error) {
	if n <= 0 {
		return "", nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading the tail of log file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("reading the tail of log file %s: %w", path, err)
	}
	off := max(fi.Size()-int64(n), 0)
	buf := make([]byte, n)
	got, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the tail of log file %s: %w", path, err)
	}
	buf = buf[:got]
	if off > 0 {
		for i := 0; i < utf8.UTFMax-1 && len(buf) > 0 && !utf8.RuneStart(buf[0]); i++ {
			buf = buf[1:]
		}
	}
	return string(buf), nil
}
