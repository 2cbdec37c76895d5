// Package hooks runs one appspec lifecycle hook script the way AWS
// CodeDeploy's agent does (same preflight, error codes, messages, process
// group, SIGTERM on timeout, log header, scripts.log), but without its
// failure modes: a script that leaves a daemon holding its output returns
// at once instead of hanging until the timeout (and is warned about, since
// CodeDeploy fails it); every log stays under its cap whoever writes to the
// script's pipes and for however long; a script that ignores SIGTERM is
// killed after a grace period; and runas switches credentials natively
// instead of through `su`.
package hooks

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	defaultTimeout     = 3600 * time.Second
	defaultMaxLogBytes = 10 << 20
	defaultKillGrace   = 5 * time.Second
	// killSettle is how long to wait, after SIGKILL, for the group to be
	// gone before reporting survivors (a process stuck in uninterruptible
	// sleep dies only when its I/O returns).
	killSettle = time.Second
	// workDir is the working directory CodeDeploy's agent gives hooks by
	// inheriting its own under systemd.
	workDir = "/"
	// shellPath runs scripts without a #! line, as the shell of CodeDeploy's
	// `su user -c path` does after execve fails with ENOEXEC.
	shellPath = "/bin/sh"
	// startRetries bounds retries of ETXTBSY: the script was just written
	// (unpacked) and another goroutine's fork may briefly hold a write fd
	// to it until that child execs (golang/go#22315).
	startRetries = 5
)

// Spec describes one hook script to run.
type Spec struct {
	Event    string // e.g. "BeforeInstall"
	Dir      string // revision root; Location is relative to it
	Location string // as in the appspec
	// Timeout is the appspec's timeout; 0 (or negative) means 3600s.
	Timeout time.Duration
	RunAs   string // "" = as the agent (root)
	// Env is KEY=VALUE added over BaseEnv(): LIFECYCLE_EVENT,
	// DEPLOYMENT_ID, ... (the caller builds them). Later entries win.
	Env []string
	// LogPath is the event's output file, opened O_APPEND|O_CREATE (0640);
	// several scripts of an event append to it.
	LogPath string
	// ScriptsLog is the deployment's scripts.log in CodeDeploy's format
	// ("2006-01-02 15:04:05 [stdout]line"); "" for none.
	ScriptsLog string
	// MaxLogBytes caps LogPath, including what earlier scripts wrote, and
	// what this script adds to ScriptsLog; 0 means 10 MiB.
	MaxLogBytes int64
	// KillGrace is the time between SIGTERM and SIGKILL; 0 means 5s.
	KillGrace time.Duration
}

// Result is the outcome of Run.
type Result struct {
	Event, Location string
	Path            string // absolute script path
	ExitCode        int    // -1 when it did not exit by itself (or never ran)
	Code            ErrorCode
	// Message is CodeDeploy-style text, e.g. "Script at specified location:
	// scripts/x.sh run as user app failed with exit code 3"; empty on success.
	Message   string
	Started   time.Time
	Duration  time.Duration
	Truncated bool // output exceeded MaxLogBytes
	// Lingering are the pids left running in the script's process group
	// after it exited: background children, not killed, reported.
	Lingering []int
	// Held names the outputs ("stdout", "stderr") a process the script
	// left running still held open after it exited.
	Held []string
	// Differences say where CodeDeploy's agent would have ended this
	// script otherwise (an output held open fails it there).
	Differences []string
	// Warnings are problems around the script that did not decide its
	// outcome: capping the log, signalling or scanning the process group.
	Warnings []string
}

// Err is nil when Code is Succeeded, and otherwise an *Error carrying the
// code and the message.
func (r Result) Err() error {
	if r.Code == Succeeded {
		return nil
	}
	return &Error{Event: r.Event, Location: r.Location, Code: r.Code, Message: r.Message}
}

func (r *Result) fail(code ErrorCode, msg string) {
	r.Code, r.Message = code, msg
}

func (r *Result) warn(err error) {
	if err != nil {
		r.Warnings = append(r.Warnings, err.Error())
	}
}

// Run runs one script and returns when the script's main process has exited
// (or was killed). It never waits for background children.
func Run(ctx context.Context, s Spec) Result {
	if s.Timeout <= 0 {
		s.Timeout = defaultTimeout
	}
	if s.MaxLogBytes <= 0 {
		s.MaxLogBytes = defaultMaxLogBytes
	}
	if s.KillGrace <= 0 {
		s.KillGrace = defaultKillGrace
	}
	res := Result{Event: s.Event, Location: s.Location, ExitCode: -1, Started: time.Now()}
	run(ctx, s, &res)
	res.Duration = time.Since(res.Started)
	return res
}

func run(ctx context.Context, s Spec, res *Result) {
	if err := ctx.Err(); err != nil {
		res.fail(UnknownError, msgNotRun(s.Location, context.Cause(ctx)))
		return
	}
	path, msg := resolveScript(s.Dir, s.Location)
	res.Path = path
	if msg != "" {
		res.fail(ScriptMissing, msg)
		return
	}
	if code, msg := ensureExecutable(path, s.Location); code != Succeeded {
		res.fail(code, msg)
		return
	}
	if err := checkEnv(s.Env); err != nil {
		res.fail(UnknownError, scriptAt(s.Location)+": invalid hook environment: "+err.Error())
		return
	}
	var acct *account
	if s.RunAs != "" {
		var err error
		if acct, err = lookupAccount(s.RunAs); err != nil {
			res.fail(UnknownError, "Unable to run script at specified location: "+s.Location+
				" as user "+s.RunAs+": "+err.Error())
			return
		}
	}
	out, err := openOutputs(s)
	if err != nil {
		res.fail(UnknownError, scriptAt(s.Location)+" was not run: "+err.Error())
		return
	}
	defer out.close()
	stdout, stderr := out.childEnds()
	cmd, err := startScript(path, hookEnv(acct, s.Env), acct, stdout, stderr)
	out.start()
	if err != nil {
		res.fail(startFailure(s, path, err))
		truncated, _, cerr := out.finish(0)
		res.Truncated = truncated
		res.warn(cerr)
		return
	}
	supervise(ctx, s, cmd, out, res)
}

// openOutputs opens the log files, writes the script's header lines and
// makes the pipes.
func openOutputs(s Spec) (*outputs, error) {
	logf, err := openLog(s.LogPath)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if err := writeHeader(logf, s.Event, s.Location, now); err != nil {
		logf.Close()
		return nil, err
	}
	var scripts *os.File
	if s.ScriptsLog != "" {
		if scripts, err = openLog(s.ScriptsLog); err != nil {
			logf.Close()
			return nil, err
		}
		if _, err := fmt.Fprintf(scripts, "%s Script - %s\n", now.Format(scriptsLogTime), s.Location); err != nil {
			logf.Close()
			scripts.Close()
			return nil, fmt.Errorf("writing %s: %w", s.ScriptsLog, err)
		}
	}
	out, err := newOutputs(logf, scripts, s.MaxLogBytes)
	if err != nil {
		logf.Close()
		if scripts != nil {
			scripts.Close()
		}
		return nil, err
	}
	return out, nil
}

// resolveScript returns the absolute script path, or a message when the
// location cannot name a script of the revision. CodeDeploy v1 lets "../"
// escape the revision; running whatever a bundle points at outside itself is
// not something a deployment should be able to ask for.
func resolveScript(dir, location string) (path, msg string) {
	if dir == "" {
		return "", scriptAt(location) + " cannot be found: no revision directory given"
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return "", scriptAt(location) + " cannot be found: resolving revision directory: " + err.Error()
	}
	loc := strings.TrimSpace(location)
	if loc == "" {
		return "", "Script at specified location: (empty) cannot be found: script with no location value"
	}
	if filepath.IsAbs(loc) {
		path = filepath.Clean(loc)
	} else {
		path = filepath.Join(root, loc)
	}
	rel, err := filepath.Rel(root, path)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return path, msgOutside(location, root)
	}
	// Revisions may hold links to host paths (absolute links are data):
	// the script itself must resolve inside the revision, or chmod +x and
	// exec would act on a host file.
	if real, err := filepath.EvalSymlinks(path); err == nil {
		realRoot, rerr := filepath.EvalSymlinks(root)
		rel, err := filepath.Rel(realRoot, real)
		if rerr != nil || err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			return path, msgOutside(location, root) + " (it is a symlink to " + real + ")"
		}
	}
	return path, ""
}

// ensureExecutable checks that path is a regular file and, like CodeDeploy's
// `chmod +x`, adds the execute bits when it has none: bundles built on
// Windows or zipped without modes lose them.
func ensureExecutable(path, location string) (ErrorCode, string) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return ScriptMissing, msgMissing(path, "")
	case err != nil:
		return ScriptMissing, msgMissing(path, err.Error())
	case fi.IsDir():
		return ScriptMissing, msgMissing(path, "it is a directory")
	case !fi.Mode().IsRegular():
		return ScriptMissing, msgMissing(path, "it is not a regular file")
	}
	if fi.Mode().Perm()&0o111 != 0 {
		return Succeeded, ""
	}
	keep := fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	if err := os.Chmod(path, keep|0o111); err != nil {
		return ScriptNotExecutable, msgChmod(location, err)
	}
	return Succeeded, ""
}

// startScript execs the script directly, falling back to /bin/sh for a
// script without a #! line.
func startScript(path string, env []string, acct *account, stdout, stderr *os.File) (*exec.Cmd, error) {
	argv := []string{path}
	for attempt := 0; ; attempt++ {
		cmd := newCmd(argv, env, acct, stdout, stderr)
		err := cmd.Start()
		switch {
		case err == nil:
			return cmd, nil
		case errors.Is(err, syscall.ENOEXEC) && len(argv) == 1:
			argv = []string{shellPath, path}
		case errors.Is(err, syscall.ETXTBSY) && attempt < startRetries:
			time.Sleep(time.Duration(attempt+1) * 10 * time.Millisecond)
		default:
			// exec's error already reads "fork/exec <path>: <reason>".
			return nil, err
		}
	}
}

// newCmd builds the command. stdout and stderr are the write ends of the
// agent's pipes, given as *os.File so that exec.Cmd starts no copying
// goroutines of its own and Wait returns when the main process exits (the
// agent drains the pipes, see drain.go). A nil Stdin is /dev/null, so
// `read` gets EOF at once.
func newCmd(argv, env []string, acct *account, stdout, stderr *os.File) *exec.Cmd {
	cmd := &exec.Cmd{
		Path:   argv[0],
		Args:   argv,
		Env:    env,
		Dir:    workDir,
		Stdin:  nil,
		Stdout: stdout,
		Stderr: stderr,
		// A process group of its own lets a timeout kill the script with
		// everything it started, and identifies its leftovers afterwards.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if acct != nil {
		cmd.SysProcAttr.Credential = acct.credential()
	}
	return cmd
}

// startFailure turns an exec error into a code and a message that tells the
// user what to fix.
func startFailure(s Spec, path string, err error) (ErrorCode, string) {
	switch {
	case errors.Is(err, syscall.EACCES) && s.RunAs != "":
		return ScriptNotExecutable, scriptAt(s.Location) + ": user " + s.RunAs + " cannot execute " + path +
			": check the permissions of the revision directory (execve: permission denied)"
	case errors.Is(err, syscall.EACCES):
		return ScriptNotExecutable, scriptAt(s.Location) + ": cannot execute " + path +
			" (is its file system mounted noexec?): " + err.Error()
	case errors.Is(err, syscall.ENOENT):
		if interp := shebang(path); interp != "" {
			return ScriptFailed, scriptAt(s.Location) + " could not be started: its interpreter " + interp +
				" (from its #! line) does not exist"
		}
		return ScriptMissing, msgMissing(path, "it disappeared before it could be started")
	case errors.Is(err, syscall.EPERM) && s.RunAs != "":
		return UnknownError, scriptAt(s.Location) + " could not be started as user " + s.RunAs +
			" (switching users needs root): " + err.Error()
	}
	return UnknownError, scriptAt(s.Location) + " could not be started: " + err.Error()
}

// shebang returns the interpreter named by the script's #! line, or "".
func shebang(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, 256)
	n, _ := f.Read(buf)
	line, _, _ := strings.Cut(string(buf[:n]), "\n")
	rest, ok := strings.CutPrefix(line, "#!")
	if !ok {
		return ""
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return ""
	}
	return fields[0]
}

type stopReason int

const (
	exitedByItself stopReason = iota
	timedOut
	cancelled
)

// supervise waits for the main process, enforcing the timeout and ctx, then
// fills in the outcome.
func supervise(ctx context.Context, s Spec, cmd *exec.Cmd, out *outputs, res *Result) {
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	reaped := false
	var waitErr error
	go func() {
		defer close(exited)
		if err := waitExitedNoReap(pid); err != nil {
			// Cannot happen short of a kernel without waitid(WNOWAIT);
			// reaping here only loses the protection against pgid reuse.
			reaped, waitErr = true, cmd.Wait()
		}
	}()

	timer := time.NewTimer(s.Timeout)
	defer timer.Stop()
	reason := exitedByItself
	var cause error
	select {
	case <-exited:
	case <-timer.C:
		reason = timedOut
	case <-ctx.Done():
		reason, cause = cancelled, context.Cause(ctx)
	}
	if reason != exitedByItself {
		// The deployment failed, so everything the script started goes,
		// not only the main process.
		res.warn(stopGroup(pid, exited, s.KillGrace))
	}
	<-exited

	truncated, held, err := out.finish(outputGrace)
	res.Truncated, res.Held = truncated, held
	res.warn(err)
	// Leftovers of a script that exited by itself are usually the
	// application it started: report them, never kill them.
	lingering, err := groupMembers(pid)
	res.Lingering = lingering
	res.warn(err)
	for _, h := range held {
		res.Differences = append(res.Differences, msgOutputHeld(s.Location, h, lingering))
	}
	if !reaped {
		waitErr = cmd.Wait()
	}

	switch reason {
	case timedOut:
		res.fail(ScriptTimedOut, msgTimedOut(s.Location, s.Timeout))
		return
	case cancelled:
		res.fail(UnknownError, msgStopping(s.Location, cause))
		return
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	var exitErr *exec.ExitError
	if !ok || (waitErr != nil && !errors.As(waitErr, &exitErr)) {
		res.fail(UnknownError, fmt.Sprintf("%s: waiting for the script: %v", scriptAt(s.Location), waitErr))
		return
	}
	switch {
	case ws.Exited():
		res.ExitCode = ws.ExitStatus()
		if res.ExitCode != 0 {
			res.fail(ScriptFailed, msgExitCode(s.Location, s.RunAs, res.ExitCode))
		}
	case ws.Signaled():
		sig := ws.Signal()
		res.fail(ScriptFailed, msgSignal(s.Location, s.RunAs, unix.SignalName(sig)+" ("+sig.String()+")"))
	default:
		res.fail(UnknownError, fmt.Sprintf("%s ended with unexpected wait status %#x", scriptAt(s.Location), uint32(ws)))
	}
}

// stopGroup ends the script's process group: SIGTERM first so that the
// script can clean up, SIGKILL for whatever is left after grace (a script
// that traps or ignores SIGTERM must still end). It returns once the main
// process has exited, and the rest of the group is dead or given up on.
func stopGroup(pgid int, exited <-chan struct{}, grace time.Duration) error {
	var errs []error
	errs = append(errs, signalGroup(pgid, unix.SIGTERM))
	deadline := time.Now().Add(grace)
	t := time.NewTimer(grace)
	defer t.Stop()
	mainGone := false
	select {
	case <-exited:
		mainGone = true
	case <-t.C:
	}
	empty := false
	if mainGone {
		// The leader is an unreaped zombie, so pgid is still ours; the
		// rest of the group gets what is left of the grace period.
		var err error
		empty, err = waitGroupEmpty(pgid, deadline)
		errs = append(errs, err)
	}
	if !empty {
		errs = append(errs, signalGroup(pgid, unix.SIGKILL))
		<-exited
		_, err := waitGroupEmpty(pgid, time.Now().Add(killSettle))
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
