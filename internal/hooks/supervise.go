package hooks

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// What happens to what a script started:
//
//   - It times out, or the agent stops: everything in its cgroup goes,
//     the script included (SIGTERM, KillGrace, SIGKILL).
//   - It fails (non-zero exit, a signal): what it left in its cgroup goes
//     the same way. A failed hook fails the deployment; what it started
//     is not an application anyone wants running.
//   - It ends well: what it left runs on (`./server &` in ApplicationStart
//     is how CodeDeploy revisions start applications) and is reported;
//     it stays in the script's cgroup, inside its revision's, where a
//     rollback of that revision finds it (Containment.EndGroup).
//
// Without a cgroup the same holds for the script's process group, which a
// process leaves with setsid. Either way the wait is bounded: a process
// that ignores SIGTERM, left its group or sleeps uninterruptibly never
// holds the step past timeout + KillGrace + killSettle (+ outputGrace).

type stopReason int

const (
	exitedByItself stopReason = iota
	timedOut
	cancelled
)

// supervise waits for the main process, enforcing the timeout and ctx,
// ends what must be ended, and fills in the outcome.
func supervise(ctx context.Context, s Spec, cmd *exec.Cmd, out *outputs, cg *cgroup, res *Result) {
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
	switch {
	case reason != exitedByItself:
		// The deployment failed, so everything the script started goes,
		// not only the main process.
		res.Killed = append(res.Killed, end(pid, cg, exited, s.KillGrace, res)...)
		select {
		case <-exited:
		case <-time.After(killSettle):
			// Only uninterruptible sleep survives SIGKILL. The step ends
			// all the same; the process is reaped when it dies.
			res.warn(fmt.Errorf("%s: process %d did not die of SIGKILL (uninterruptible sleep?); the agent goes on without it", scriptAt(s.Location), pid))
			go func() {
				<-exited
				if !reaped {
					_ = cmd.Wait()
				}
			}()
			truncated, held, err := out.finish(outputGrace)
			res.Truncated, res.Held = truncated, held
			res.warn(err)
			failStopped(s, reason, cause, res)
			return
		}
	case failedExit(pid, res):
		// A failed script's leftovers are no application: they go too.
		res.Killed = append(res.Killed, end(pid, cg, exited, s.KillGrace, res)...)
	}

	truncated, held, err := out.finish(outputGrace)
	res.Truncated, res.Held = truncated, held
	res.warn(err)
	// Leftovers of a script that exited well are usually the application
	// it started: report them, never kill them.
	lingering, err := leftovers(pid, cg)
	res.Lingering = lingering
	res.warn(err)
	for _, h := range held {
		res.Differences = append(res.Differences, msgOutputHeld(s.Location, h, lingering))
	}
	if !reaped {
		waitErr = cmd.Wait()
	}
	if cg != nil && len(lingering) == 0 {
		if err := cg.remove(); errors.Is(err, unix.EBUSY) {
			// Something was born in it after the listing.
			res.Lingering, _ = cg.members()
		} else {
			res.warn(err)
		}
	}

	if reason != exitedByItself {
		failStopped(s, reason, cause, res)
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

func failStopped(s Spec, reason stopReason, cause error, res *Result) {
	if reason == timedOut {
		res.fail(ScriptTimedOut, msgTimedOut(s.Location, s.Timeout))
		return
	}
	res.fail(UnknownError, msgStopping(s.Location, cause))
}

// failedExit reports whether the main process, exited and not reaped yet,
// failed. Its wait status is read from /proc while it is a zombie, so
// that its pid (the process group's id) stays reserved while the group
// is ended.
func failedExit(pid int, res *Result) bool {
	ws, err := zombieStatus(pid)
	if err != nil {
		res.warn(fmt.Errorf("reading how the script ended: %w", err))
		return false
	}
	return !ws.Exited() || ws.ExitStatus() != 0
}

// end ends the script's cgroup or, without one, its process group and
// the main process, and returns what it signalled.
func end(pid int, cg *cgroup, exited <-chan struct{}, grace time.Duration, res *Result) []Proc {
	if cg != nil {
		killed, survivors, err := cg.end(grace, killSettle)
		res.warn(err)
		if len(survivors) > 0 {
			res.warn(fmt.Errorf("processes %v in %s did not die of SIGKILL (uninterruptible sleep?)", survivors, cg.dir))
		}
		return killed
	}
	killed, err := stopGroup(pid, exited, grace)
	res.warn(err)
	return killed
}

// leftovers lists what runs in the script's cgroup or process group.
func leftovers(pid int, cg *cgroup) ([]int, error) {
	if cg != nil {
		return cg.members()
	}
	return groupMembers(pid)
}

// stopGroup ends the script's process group: SIGTERM first so that the
// script can clean up, SIGKILL for whatever is left after grace (a script
// that traps or ignores SIGTERM must still end). The main process is
// signalled by pid as well, since it may have left its group (setpgid);
// unreaped, its pid cannot be another process's. It returns what it
// signalled once the group is empty or given up on, within grace plus
// twice killSettle.
func stopGroup(pgid int, exited <-chan struct{}, grace time.Duration) ([]Proc, error) {
	seen := map[int]Proc{}
	// Descendants that left the group (setsid) are found while the script
	// still runs and is their parent; they are signalled by pid, through
	// a pidfd opened while they are known to be ours.
	strays := openStrays(pgid, seen)
	defer closeStrays(strays)
	noteGroup(pgid, seen)
	errs := []error{signalGroup(pgid, unix.SIGTERM), signalMain(pgid, unix.SIGTERM), signalStrays(strays, unix.SIGTERM)}
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
		for empty && straysLive(strays) && time.Now().Before(deadline) {
			time.Sleep(min(groupPollInterval, time.Until(deadline)))
		}
		empty = empty && !straysLive(strays)
	}
	if !empty {
		noteGroup(pgid, seen)
		errs = append(errs, signalGroup(pgid, unix.SIGKILL), signalMain(pgid, unix.SIGKILL), signalStrays(strays, unix.SIGKILL))
		select {
		case <-exited:
		case <-time.After(killSettle):
		}
		_, err := waitGroupEmpty(pgid, time.Now().Add(killSettle))
		errs = append(errs, err)
	}
	killed := make([]Proc, 0, len(seen))
	for _, p := range seen {
		killed = append(killed, p)
	}
	slices.SortFunc(killed, func(a, b Proc) int { return a.PID - b.PID })
	return killed, errors.Join(errs...)
}

// noteGroup adds the live members of the group, and the main process
// when it still runs outside it, to seen.
func noteGroup(pgid int, seen map[int]Proc) {
	pids, _ := groupMembers(pgid)
	if state, _, err := procStat(pgid); err == nil && state != 'Z' && state != 'X' && !slices.Contains(pids, pgid) {
		pids = append(pids, pgid)
	}
	for _, pid := range pids {
		if _, ok := seen[pid]; !ok {
			seen[pid] = procInfo(pid)
		}
	}
}

// signalMain signals the script's main process by pid when it has left
// its group (the group's signal reached it otherwise).
func signalMain(pid int, sig unix.Signal) error {
	state, pgrp, err := procStat(pid)
	if err != nil || state == 'Z' || pgrp == pid {
		return nil
	}
	if err := unix.Kill(pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("sending %s to the script (process %d): %w", unix.SignalName(sig), pid, err)
	}
	return nil
}

// openStrays opens a pidfd on each descendant of the script outside its
// process group, and notes it in seen.
func openStrays(pgid int, seen map[int]Proc) map[int]int {
	roots := []int{pgid}
	if members, err := groupMembers(pgid); err == nil {
		roots = append(roots, members...)
	}
	fds := map[int]int{}
	for _, pid := range descendants(roots) {
		if _, pgrp, err := procStat(pid); err != nil || pgrp == pgid {
			continue
		}
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		fds[pid] = fd
		if _, ok := seen[pid]; !ok {
			seen[pid] = procInfo(pid)
		}
	}
	return fds
}

func signalStrays(fds map[int]int, sig unix.Signal) error {
	var errs []error
	for pid, fd := range fds {
		if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("sending %s to process %d the script started: %w", unix.SignalName(sig), pid, err))
		}
	}
	return errors.Join(errs...)
}

func closeStrays(fds map[int]int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// straysLive reports whether any of the strays still runs.
func straysLive(fds map[int]int) bool {
	for pid := range fds {
		if state, _, err := procStat(pid); err == nil && state != 'Z' && state != 'X' {
			return true
		}
	}
	return false
}
