package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/config"
)

// maxCommandOutput is how much of a command's output is read back (its
// end, where scripts say what went wrong).
const maxCommandOutput = 64 << 10

type commandCheck struct {
	argv []string
}

func newCommandCheck(name string, c config.CommandCheck) (Checker, error) {
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		return nil, errors.New("command.argv must name a program")
	}
	timeout := orDefault(c.Timeout, defaultCommandTimeout)
	cc := &commandCheck{argv: append([]string(nil), c.Argv...)}
	return &checker{name: name, kind: KindCommand, what: "running " + c.Argv[0], timeout: timeout, probe: cc.probe}, nil
}

// probe runs the command. Its exit status is the output; what it printed
// is the detail, for root only: a check script may well print the
// password it connected with.
func (c *commandCheck) probe(ctx context.Context) (bool, string, string) {
	out, err := os.CreateTemp("", "rollback-agent-health-*.out")
	if err != nil {
		return false, fmt.Sprintf("creating the output file of %s: %v", c.argv[0], err), ""
	}
	// Unlinked at once: the open descriptor is all the command and we need,
	// and nothing is left in the temp dir if the agent dies mid-check.
	_ = os.Remove(out.Name())
	defer out.Close()

	cmd := exec.Command(c.argv[0], c.argv[1:]...)
	cmd.Stdin = nil // /dev/null: a command that reads stdin gets EOF, not a hang
	// A file, not a pipe: with an *os.File exec starts no copying goroutine,
	// so Wait returns when the main process exits even if a background
	// child it started still holds stdout open.
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that the command goes with everything it
	// started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return false, fmt.Sprintf("starting %s: %v", c.argv[0], err), ""
	}
	pid := cmd.Process.Pid

	exited := make(chan struct{})
	reaped := false
	var waitErr error
	go func() {
		defer close(exited)
		if err := waitExitedNoReap(pid); err != nil {
			// Only a kernel without waitid(WNOWAIT) gets here; reaping now
			// merely loses the protection against process group reuse.
			reaped, waitErr = true, cmd.Wait()
		}
	}()

	killed := false
	select {
	case <-exited:
	case <-ctx.Done():
		killed = true
		_ = killGroup(pid)
		// SIGKILL ends the leader at once short of an uninterruptible
		// sleep; the caller's own deadline covers that case.
		<-exited
	}
	// Whatever the command left running goes too: a check runs every few
	// seconds, and leftovers would pile up and keep writing to a file
	// nobody reads. The leader is an unreaped zombie here, so its process
	// group id cannot have been recycled for someone else's group.
	groupErr := killGroup(pid)
	if !reaped {
		waitErr = cmd.Wait()
	}

	output, readErr := readTail(out, maxCommandOutput)
	var status string
	switch {
	case killed:
		status = "killed " + c.argv[0] + " and its process group"
	case waitErr == nil:
		status = "exit status 0"
	default:
		var ee *exec.ExitError
		if errors.As(waitErr, &ee) {
			status = ee.String() // "exit status 3" or "signal: terminated"
		} else {
			status = fmt.Sprintf("waiting for %s: %v", c.argv[0], waitErr)
		}
	}
	if readErr != nil {
		status += fmt.Sprintf(" (reading its output: %v)", readErr)
	}
	if groupErr != nil {
		status += fmt.Sprintf(" (stopping what it left running: %v)", groupErr)
	}
	if output = strings.TrimSpace(output); len(output) > maxOutput-256 {
		// Keep the end of the output: that is where scripts say why.
		output = "…" + tailUTF8(output, maxOutput-256)
	}
	return !killed && waitErr == nil, status, output
}

// readTail returns the last limit bytes written to f.
func readTail(f *os.File, limit int64) (string, error) {
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("stat: %w", err)
	}
	off := max(0, fi.Size()-limit)
	buf := make([]byte, fi.Size()-off)
	n, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return string(buf[:n]), fmt.Errorf("read: %w", err)
	}
	return string(buf[:n]), nil
}

// waitExitedNoReap blocks until pid has exited, leaving it a zombie so that
// its pid (and process group id) stay ours until cmd.Wait reaps it.
func waitExitedNoReap(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting for process %d: %w", pid, err)
		}
		return nil
	}
}

// killGroup sends SIGKILL to the process group pgid. An empty group is what
// we want, not an error.
func killGroup(pgid int) error {
	if pgid <= 1 {
		// kill(-1) or kill(0) would hit far more than the command.
		return fmt.Errorf("refusing to signal process group %d", pgid)
	}
	if err := unix.Kill(-pgid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("killing process group %d: %w", pgid, err)
	}
	return nil
}
