package hooks

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// A script writes to two pipes, stdout and stderr, that the agent drains
// into the event's log file and into the deployment's scripts.log, each
// line of the latter stamped and marked [stdout] or [stderr] as CodeDeploy's
// agent writes it (issue 14.8). The agent is the only writer of both files,
// so their caps hold whoever writes to the pipes and for as long as they do
// (issue 16, a `./server &` writing 50 MiB after its hook returned).
//
// When the script's main process has exited, the pipes are read to their
// end for at most outputGrace. A pipe still open then is held by a process
// the script left running: CodeDeploy's agent would wait for it until the
// script's timeout and then fail the script ("failed to close STDOUT",
// error code 6, hook_executor.rb). This agent goes on, warns with
// CodeDeploy's words, and hands the pipe to a `cat > /dev/null` of its own
// (in its own process group, so it outlives an agent restart) that drains
// it until the process closes it: the process never gets SIGPIPE, and
// nothing it writes after that is kept.

const (
	// maxLine bounds a line held in memory; longer lines are written in
	// pieces.
	maxLine = 64 << 10
	// outputGrace is how long the pipes may stay open after the script's
	// main process has exited before their holder counts as a background
	// process: long enough for a short-lived child to finish its output,
	// short enough not to slow down every hook that starts a server.
	outputGrace = 500 * time.Millisecond
)

// stream is one of the two pipes.
type stream struct {
	name string // "stdout" or "stderr"
	r, w *os.File
	eof  bool // the reader saw the end, not the grace deadline
	done chan struct{}
}

// outputs drains a script's pipes into its log files under their caps.
type outputs struct {
	event   *os.File // the event's log, shared by the event's scripts
	scripts *os.File // scripts.log, or nil
	max     int64
	streams [2]*stream

	mu sync.Mutex
	// eventLeft is what the event file may still take (its cap counts
	// earlier scripts' output); scriptsLeft what this script may add to
	// scripts.log.
	eventLeft, scriptsLeft int64
	eventCut, scriptsCut   bool
	err                    error
}

func newOutputs(event, scripts *os.File, max int64) (*outputs, error) {
	fi, err := event.Stat()
	if err != nil {
		return nil, fmt.Errorf("checking the size of log file: %w", err)
	}
	o := &outputs{event: event, scripts: scripts, max: max, eventLeft: max - fi.Size(), scriptsLeft: max}
	if o.eventLeft < 0 {
		o.eventLeft = 0
	}
	for i, name := range []string{"stdout", "stderr"} {
		r, w, err := os.Pipe()
		if err != nil {
			o.closeAll()
			return nil, fmt.Errorf("creating the %s pipe: %w", name, err)
		}
		o.streams[i] = &stream{name: name, r: r, w: w, done: make(chan struct{})}
	}
	return o, nil
}

// childEnds are the write ends the script gets as stdout and stderr.
func (o *outputs) childEnds() (*os.File, *os.File) { return o.streams[0].w, o.streams[1].w }

// start closes the agent's copies of the write ends (the child has its
// own) and starts reading.
func (o *outputs) start() {
	for _, s := range o.streams {
		s.w.Close()
		s.w = nil
		go o.read(s)
	}
}

func (o *outputs) closeAll() {
	for _, s := range o.streams {
		if s == nil {
			continue
		}
		if s.w != nil {
			s.w.Close()
		}
		s.r.Close()
	}
}

func (o *outputs) read(s *stream) {
	defer close(s.done)
	br := bufio.NewReaderSize(s.r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			o.write(s.name, line)
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			s.eof = true
		case !errors.Is(err, os.ErrDeadlineExceeded):
			o.setErr(fmt.Errorf("reading the script's %s: %w", s.name, err))
		}
		return
	}
}

// write appends one line (or a piece of a long one) to both files, as far
// as their caps allow.
func (o *outputs) write(name string, line []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := min(int64(len(line)), o.eventLeft)
	if n > 0 {
		if _, err := o.event.Write(line[:n]); err != nil {
			o.setErrLocked(fmt.Errorf("writing the log file: %w", err))
		}
		o.eventLeft -= n
	}
	if n < int64(len(line)) {
		o.eventCut = true
	}
	if o.scripts == nil {
		return
	}
	rec := make([]byte, 0, len(scriptsLogTime)+10+len(line)+1)
	rec = append(rec, time.Now().Format(scriptsLogTime)...)
	rec = append(rec, " ["...)
	rec = append(rec, name...)
	rec = append(rec, ']')
	rec = append(rec, line...)
	if line[len(line)-1] != '\n' {
		rec = append(rec, '\n')
	}
	if int64(len(rec)) > o.scriptsLeft {
		o.scriptsLeft = 0
		o.scriptsCut = true
		return
	}
	if _, err := o.scripts.Write(rec); err != nil {
		o.setErrLocked(fmt.Errorf("writing scripts.log: %w", err))
	}
	o.scriptsLeft -= int64(len(rec))
}

func (o *outputs) setErr(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.setErrLocked(err)
}

func (o *outputs) setErrLocked(err error) {
	if o.err == nil {
		o.err = err
	}
}

// finish runs once the script's main process has exited (or was killed):
// it reads the pipes to their end for at most grace, hands those still
// held open to a drain of their own, writes the truncation marker where
// something was cut, and reports the names of the held pipes.
func (o *outputs) finish(grace time.Duration) (truncated bool, held []string, err error) {
	deadline := time.Now().Add(grace)
	for _, s := range o.streams {
		if err := s.r.SetReadDeadline(deadline); err != nil {
			o.setErr(fmt.Errorf("bounding the read of the script's %s: %w", s.name, err))
		}
	}
	for _, s := range o.streams {
		<-s.done
		if s.eof {
			s.r.Close()
			continue
		}
		held = append(held, s.name)
		if err := handOff(s.r); err != nil {
			o.setErr(err)
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	marker := fmt.Sprintf(truncMarkerFmt, o.max)
	if o.eventCut {
		if _, err := o.event.WriteString(marker); err != nil {
			o.setErrLocked(fmt.Errorf("writing the truncation marker: %w", err))
		}
	}
	if o.scriptsCut {
		if _, err := o.scripts.WriteString(time.Now().Format(scriptsLogTime) + " " + marker); err != nil {
			o.setErrLocked(fmt.Errorf("writing the truncation marker to scripts.log: %w", err))
		}
	}
	return o.eventCut || o.scriptsCut, held, o.err
}

// handOff gives a pipe that a background process holds open to a `cat`
// that discards what it reads until the process closes it. cat is in its
// own process group and does not depend on the agent: it outlives an agent
// restart, so the process never gets SIGPIPE because of the agent. Without
// cat, the agent drains the pipe itself as long as it runs.
func handOff(r *os.File) error {
	if err := r.SetReadDeadline(time.Time{}); err != nil {
		r.Close()
		return fmt.Errorf("handing off a held pipe: %w", err)
	}
	cat, err := exec.LookPath("cat")
	if err == nil {
		cmd := &exec.Cmd{
			Path: cat, Args: []string{"cat"}, Dir: workDir, Stdin: r,
			SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
		}
		if err = cmd.Start(); err == nil {
			r.Close()
			go func() { _ = cmd.Wait() }()
			return nil
		}
	}
	go func() {
		_, _ = io.Copy(io.Discard, r)
		r.Close()
	}()
	return nil
}

// close releases the log files (the pipes are closed or handed off by
// finish).
func (o *outputs) close() {
	o.event.Close()
	if o.scripts != nil {
		o.scripts.Close()
	}
}
