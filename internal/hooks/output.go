package hooks

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
	"unicode/utf8"
)

const (
	// logPerm lets the agent's group read hook output (it may hold
	// secrets a script echoed) but nobody else.
	logPerm        = 0o640
	truncMarkerFmt = "[rollback-agent: output truncated at %d bytes]\n"
)

// openLog opens an event's output file for appending. Only the agent writes
// it: the script's output reaches it through pipes (see drain.go).
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

// scriptsLogTime is the timestamp of a scripts.log line as CodeDeploy's
// agent writes it (hook_executor.rb log_script: Time.now.to_s without the
// zone): local time, "2006-01-02 15:04:05".
const scriptsLogTime = "2006-01-02 15:04:05"

// WriteEventHeader appends the "LifecycleEvent - <event>" line CodeDeploy's
// agent writes to a deployment's scripts.log before the event's first
// script. The engine calls it once per event; Run writes the rest.
func WriteEventHeader(scriptsLog, event string, now time.Time) error {
	f, err := openLog(scriptsLog)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s LifecycleEvent - %s\n", now.Format(scriptsLogTime), event); err != nil {
		return fmt.Errorf("writing %s: %w", scriptsLog, err)
	}
	return nil
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
