// Package hooks runs one appspec lifecycle hook script the way AWS
// CodeDeploy's agent does (same preflight, error codes, messages, process
// group, SIGTERM on timeout, log header, scripts.log), but without its
// failure modes: a script that leaves a daemon holding its output returns
// at once instead of hanging until the timeout (and is warned about, since
// CodeDeploy fails it); every log stays under its cap whoever writes to the
// script's pipes and for however long; a script that ignores SIGTERM is
// killed after a grace period; each script runs in a cgroup of its own, so
// that a failure or timeout ends everything it started however it left
// its process group (setsid, a double fork), and a rollback ends what a
// revision's hooks left running (contain.go, supervise.go); and runas
// switches credentials natively instead of through `su`.
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
	// Contain puts the script in a cgroup of its own, named Name, in the
	// cgroup of Group (the release whose script it is); nil, or a
	// Containment that is off, leaves it to its process group.
	Contain     *Containment
	Group, Name string
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
	// Lingering are the pids left running in the script's cgroup (or,
	// without one, its process group) after it exited well: background
	// children, the application it started; not killed, reported.
	Lingering []int
	// Killed are the processes the agent ended because the script failed,
	// timed out or was stopped: everything in its cgroup (or process
	// group), the script itself included when it still ran, and what an
	// earlier run of it cut short by the agent's death had left.
	Killed []Proc
	// Cgroup is the script's cgroup directory ("" without one).
	Cgroup string
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
	cg, cgfd := placeScript(s, res)
	stdout, stderr := out.childEnds()
	env := hookEnv(acct, s.Env)
	cmd, err := startScript(path, env, acct, stdout, stderr, cgfd)
	if err != nil && cg != nil && cloneIntoCgroupFailed(err) {
		res.warn(fmt.Errorf("%s could not be started in cgroup %s (%w): it is contained by its process group only", scriptAt(s.Location), cg.dir, err))
		cg, res.Cgroup = nil, ""
		cmd, err = startScript(path, env, acct, stdout, stderr, -1)
	}
	if cgfd >= 0 {
		unix.Close(cgfd)
	}
	out.start()
	if err != nil {
		res.fail(startFailure(s, path, err))
		truncated, _, cerr := out.finish(0)
		res.Truncated = truncated
		res.warn(cerr)
		if cg != nil {
			res.warn(cg.remove())
		}
		return
	}
	supervise(ctx, s, cmd, out, cg, res)
}

// placeScript makes the script's cgroup and opens it, so that the script
// is born in it (clone3 CLONE_INTO_CGROUP) before it can fork. It returns
// nil and -1 when the script is to be contained by its process group.
func placeScript(s Spec, res *Result) (*cgroup, int) {
	if !s.Contain.On() {
		return nil, -1
	}
	cg, earlier, warn, err := s.Contain.hookCgroup(s.Group, s.Name, s.KillGrace)
	res.Killed = append(res.Killed, earlier...)
	if len(earlier) > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%s: ended %d process(es) left by an earlier run of it that the agent's death cut short: %s",
			scriptAt(s.Location), len(earlier), procList(earlier)))
	}
	res.warn(warn)
	if err != nil {
		res.warn(fmt.Errorf("%s has no cgroup of its own, it is contained by its process group only: %w", scriptAt(s.Location), err))
		return nil, -1
	}
	fd, err := unix.Open(cg.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		res.warn(fmt.Errorf("%s has no cgroup of its own, it is contained by its process group only: opening %s: %w", scriptAt(s.Location), cg.dir, err))
		return nil, -1
	}
	res.Cgroup = cg.dir
	return &cg, fd
}

// cloneIntoCgroupFailed reports whether a start failed at clone3 with
// CLONE_INTO_CGROUP rather than at exec: the script then runs without
// its cgroup rather than not at all.
func cloneIntoCgroupFailed(err error) bool {
	for _, e := range []error{syscall.EBUSY, syscall.EOPNOTSUPP, syscall.ENOSYS, syscall.EINVAL, syscall.E2BIG, syscall.ENODEV} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// procList formats processes for a record: "123 (sleep 100), 124 (...)".
func procList(ps []Proc) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return strings.Join(parts, ", ")
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
func startScript(path string, env []string, acct *account, stdout, stderr *os.File, cgfd int) (*exec.Cmd, error) {
	argv := []string{path}
	for attempt := 0; ; attempt++ {
		cmd := newCmd(argv, env, acct, stdout, stderr, cgfd)
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
// `read` gets EOF at once. cgfd, when not -1, is the script's cgroup: it
// is born there.
func newCmd(argv, env []string, acct *account, stdout, stderr *os.File, cgfd int) *exec.Cmd {
	cmd := &exec.Cmd{
		Path:   argv[0],
		Args:   argv,
		Env:    env,
		Dir:    workDir,
		Stdin:  nil,
		Stdout: stdout,
		Stderr: stderr,
		// A process group of its own, as under CodeDeploy's agent: scripts
		// may signal it (kill 0), and without a cgroup it is what a
		// timeout kills and what identifies the leftovers.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if cgfd >= 0 {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, cgfd
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
