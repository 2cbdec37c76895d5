package hooks

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A hook runs in a cgroup v2 directory of its own (contain.go says where).
// Whatever the script starts is born in it and stays in it, whatever it
// does to its process group or session (setsid, a double fork, setpgid):
// only a write to cgroup.procs moves a process out, and that needs root
// and intent. This file is the agent's side of one such directory: who is
// in it, whether anyone is left, waiting for it to empty, and ending
// everyone in it.

// Proc is a process found in a hook's cgroup, for the record.
type Proc struct {
	PID int
	// Command is its command line, or [comm] when it has none.
	Command string
}

func (p Proc) String() string { return strconv.Itoa(p.PID) + " (" + p.Command + ")" }

const (
	// signalPasses bounds the list-and-signal passes over a cgroup: a
	// process forking while it is signalled puts a new pid in it.
	signalPasses = 4
	// eventsRecheck is a safety net under the inotify wait on
	// cgroup.events: the file is read again at least this often.
	eventsRecheck = 250 * time.Millisecond
	// maxCommand bounds a command line kept for the record.
	maxCommand = 200
)

// cgroup is one directory of the cgroup v2 hierarchy.
type cgroup struct {
	dir  string // where it is in the file system
	path string // its path in the hierarchy, as /proc/PID/cgroup names it
}

func (c cgroup) child(name string) cgroup {
	return cgroup{dir: filepath.Join(c.dir, name), path: strings.TrimSuffix(c.path, "/") + "/" + name}
}

// contains reports whether a hierarchy path is c or below it.
func (c cgroup) contains(path string) bool {
	return path == c.path || strings.HasPrefix(path, strings.TrimSuffix(c.path, "/")+"/")
}

// members returns the pids in c and every cgroup below it, sorted. A
// cgroup that does not exist has none.
func (c cgroup) members() ([]int, error) {
	var pids []int
	err := filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we looked
			}
			return fmt.Errorf("listing cgroup %s: %w", p, err)
		}
		if !d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s/cgroup.procs: %w", p, err)
		}
		for _, f := range strings.Fields(string(data)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				return fmt.Errorf("reading %s/cgroup.procs: pid %q: %w", p, f, err)
			}
			pids = append(pids, pid)
		}
		return nil
	})
	slices.Sort(pids)
	return slices.Compact(pids), err
}

// populated reads cgroup.events: whether any live process is in c or
// below it. Zombies do not count; a cgroup that is gone is empty.
func (c cgroup) populated() (bool, error) {
	data, err := os.ReadFile(filepath.Join(c.dir, "cgroup.events"))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s/cgroup.events: %w", c.dir, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "populated "); ok {
			return v != "0", nil
		}
	}
	return false, fmt.Errorf("%s/cgroup.events has no populated line: %q", c.dir, data)
}

// waitEmpty waits until nobody is left in c or the deadline passes, and
// reports whether it emptied. The kernel announces every change of
// cgroup.events to inotify, so this wakes when the last process goes
// rather than on a poll.
func (c cgroup) waitEmpty(deadline time.Time) (bool, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return false, fmt.Errorf("watching %s: %w", c.dir, err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, filepath.Join(c.dir, "cgroup.events"), unix.IN_MODIFY); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return true, nil
		}
		return false, fmt.Errorf("watching %s/cgroup.events: %w", c.dir, err)
	}
	buf := make([]byte, 4096)
	for {
		busy, err := c.populated()
		if err != nil || !busy {
			return !busy, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(min(left, eventsRecheck)/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
			return false, fmt.Errorf("waiting on %s/cgroup.events: %w", c.dir, err)
		}
		for {
			if _, err := unix.Read(fd, buf); err != nil {
				break // EAGAIN: drained
			}
		}
	}
}

// signal sends sig once to every process in c (at any depth), listing
// again until a pass finds nobody new, and notes each in seen. A pid read
// from cgroup.procs may belong to another process by the time it is
// signalled: the signal goes through a pidfd, opened first, and only after
// the process it holds is seen to be in c.
func (c cgroup) signal(sig unix.Signal, seen map[int]Proc) error {
	sent := map[int]bool{}
	var errs []error
	for range signalPasses {
		pids, err := c.members()
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		fresh := false
		for _, pid := range pids {
			if sent[pid] {
				continue
			}
			sent[pid], fresh = true, true
			errs = append(errs, c.signalOne(pid, sig, seen))
		}
		if !fresh {
			break
		}
	}
	return errors.Join(errs...)
}

func (c cgroup) signalOne(pid int, sig unix.Signal, seen map[int]Proc) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil // gone already
	}
	if err != nil {
		return fmt.Errorf("opening process %d of cgroup %s: %w", pid, c.dir, err)
	}
	defer unix.Close(fd)
	if path, err := procCgroup(pid); err != nil || !c.contains(path) {
		return nil // gone, or the pid is another process's now
	}
	if _, ok := seen[pid]; !ok {
		seen[pid] = procInfo(pid)
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("sending %s to process %d of cgroup %s: %w", unix.SignalName(sig), pid, c.dir, err)
	}
	return nil
}

// note adds the processes in c that are not in seen yet.
func (c cgroup) note(seen map[int]Proc) {
	pids, _ := c.members()
	for _, pid := range pids {
		if _, ok := seen[pid]; !ok {
			seen[pid] = procInfo(pid)
		}
	}
}

// kill SIGKILLs everything in c at once through cgroup.kill (Linux 5.14),
// which also stops anyone in it from forking meanwhile; where the write
// fails, each process is killed on its own.
func (c cgroup) kill() error {
	err := os.WriteFile(filepath.Join(c.dir, "cgroup.kill"), []byte("1"), 0)
	if err == nil || (errors.Is(err, fs.ErrNotExist) && !c.exists()) {
		return nil
	}
	if perr := c.signal(unix.SIGKILL, map[int]Proc{}); perr != nil {
		return fmt.Errorf("writing %s/cgroup.kill: %w; killing each process: %w", c.dir, err, perr)
	}
	return nil
}

func (c cgroup) exists() bool {
	_, err := os.Stat(c.dir)
	return err == nil
}

// end stops everything in c: SIGTERM to each process so that it can clean
// up, up to grace for all of them to go, then SIGKILL to whoever is left
// and up to settle for them to be gone. killed lists every process it
// signalled, sorted; survivors are the pids still there after that (a
// process in uninterruptible sleep dies when its I/O returns). It never
// waits longer than grace+settle, whatever the processes do.
func (c cgroup) end(grace, settle time.Duration) (killed []Proc, survivors []int, err error) {
	seen := map[int]Proc{}
	errs := []error{c.signal(unix.SIGTERM, seen)}
	empty, werr := c.waitEmpty(time.Now().Add(grace))
	errs = append(errs, werr)
	if !empty {
		c.note(seen)
		errs = append(errs, c.kill())
		empty, werr = c.waitEmpty(time.Now().Add(settle))
		errs = append(errs, werr)
		if !empty {
			survivors, _ = c.members()
		}
	}
	for _, p := range seen {
		killed = append(killed, p)
	}
	slices.SortFunc(killed, func(a, b Proc) int { return a.PID - b.PID })
	return killed, survivors, errors.Join(errs...)
}

// remove removes c and the cgroups below it, deepest first. A cgroup with
// a live process in it cannot be removed (EBUSY): that is reported.
func (c cgroup) remove() error {
	var dirs []string
	err := filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("removing cgroup %s: %w", c.dir, err)
	}
	for _, d := range slices.Backward(dirs) {
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("removing cgroup %s: %w", d, err)
		}
	}
	return nil
}

// procCgroup returns the cgroup v2 path of pid from /proc/PID/cgroup.
func procCgroup(pid int) (string, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return "", err
	}
	path, ok := unifiedPath(data)
	if !ok {
		return "", fmt.Errorf("/proc/%d/cgroup names no cgroup v2 path", pid)
	}
	return path, nil
}

// unifiedPath returns the cgroup v2 path in /proc/PID/cgroup content: the
// "0::/path" line (cgroup v1 hierarchies have other ids).
func unifiedPath(data []byte) (string, bool) {
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok && strings.HasPrefix(p, "/") {
			return strings.TrimSuffix(p, " (deleted)"), true
		}
	}
	return "", false
}

// procInfo describes pid for the record: its command line, or its name.
func procInfo(pid int) Proc {
	p := Proc{PID: pid}
	base := "/proc/" + strconv.Itoa(pid)
	if b, err := os.ReadFile(base + "/cmdline"); err == nil && len(b) > 0 {
		p.Command = strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
	} else if b, err := os.ReadFile(base + "/comm"); err == nil {
		p.Command = "[" + strings.TrimSpace(string(b)) + "]"
	} else {
		p.Command = "?"
	}
	if len(p.Command) > maxCommand {
		p.Command = p.Command[:maxCommand] + "..."
	}
	return p
}
