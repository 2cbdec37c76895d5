package hooks

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// groupPollInterval is how often a process group is rescanned while we wait
// for it to empty; /proc scans are cheap but not free.
const groupPollInterval = 20 * time.Millisecond

// groupMembers returns the live processes whose process group is pgid,
// sorted. Zombies are left out: they are already dead and only wait for a
// parent to reap them (under a PID 1 that does not reap, forever).
//
// The caller must keep the group leader unreaped while it relies on the
// result, so that pgid cannot be recycled for an unrelated group.
func groupMembers(pgid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes in /proc: %w", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue // not a process directory
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited since ReadDir
		}
		state, pgrp, err := parseStat(data)
		if err != nil {
			return nil, fmt.Errorf("reading /proc/%d/stat: %w", pid, err)
		}
		if pgrp == pgid && state != 'Z' && state != 'X' {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids, nil
}

// procStat reads the state and the process group of pid.
func procStat(pid int) (state byte, pgrp int, err error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	return parseStat(data)
}

// zombieStatus returns the wait status of pid, a zombie not reaped yet,
// from /proc/PID/stat: its 52nd field, exit_code (Linux 3.5), is the
// status waitpid would report.
func zombieStatus(pid int) (unix.WaitStatus, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("reading /proc/%d/stat: %w", pid, err)
	}
	end := bytes.LastIndexByte(data, ')')
	fields := bytes.Fields(data[end+1:])
	// fields[0] is field 3 (state), so field 52 is fields[49].
	if end < 0 || len(fields) < 50 || fields[0][0] != 'Z' {
		return 0, fmt.Errorf("/proc/%d/stat is not that of a zombie with an exit code: %q", pid, data)
	}
	code, err := strconv.ParseUint(string(fields[49]), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: exit code %q: %w", pid, fields[49], err)
	}
	return unix.WaitStatus(code), nil
}

// parseStat extracts the state and the process group from /proc/PID/stat:
// "pid (comm) state ppid pgrp ...". comm may contain spaces and ')', so
// fields are counted from the last ')'.
func parseStat(data []byte) (state byte, pgrp int, err error) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return 0, 0, errors.New("no ')' after the command name")
	}
	fields := bytes.Fields(data[end+1:])
	if len(fields) < 3 || len(fields[0]) != 1 {
		return 0, 0, fmt.Errorf("unexpected format %q", data)
	}
	pgrp, err = strconv.Atoi(string(fields[2]))
	if err != nil {
		return 0, 0, fmt.Errorf("process group %q: %w", fields[2], err)
	}
	return fields[0][0], pgrp, nil
}

// signalGroup sends sig to every process of the group. An empty group is
// not an error: it is the outcome we want.
func signalGroup(pgid int, sig unix.Signal) error {
	if pgid <= 1 {
		// kill(-1) or kill(0) would hit far more than the script.
		return fmt.Errorf("refusing to signal process group %d", pgid)
	}
	if err := unix.Kill(-pgid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("sending %s to process group %d: %w", unix.SignalName(sig), pgid, err)
	}
	return nil
}

// waitGroupEmpty polls until the group has no live member or the deadline
// passes, and reports whether it emptied.
func waitGroupEmpty(pgid int, deadline time.Time) (bool, error) {
	for {
		pids, err := groupMembers(pgid)
		if err != nil {
			return false, err
		}
		if len(pids) == 0 {
			return true, nil
		}
		if !time.Now().Before(deadline) {
			return false, nil
		}
		time.Sleep(min(groupPollInterval, time.Until(deadline)))
	}
}

// waitExitedNoReap blocks until pid has exited but leaves it a zombie
// (WNOWAIT). While the zombie exists its pid, which is also the script's
// process group id, cannot be reused, so signalling and scanning the group
// afterwards cannot hit an unrelated process. exec.Cmd.Wait reaps it later.
func waitExitedNoReap(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting for script process %d: %w", pid, err)
		}
		return nil
	}
}

// descendants returns the live processes below roots in the process tree
// (by parent pid, from one scan of /proc), whatever their process group
// or session. Without a cgroup it is how the agent finds what a script
// moved out of its group (setsid) while the script still runs; a process
// whose parent has exited is reparented away and not found.
func descendants(roots []int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		state, ppid, ok := parsePPID(data)
		if ok && state != 'Z' && state != 'X' {
			children[ppid] = append(children[ppid], pid)
		}
	}
	seen := map[int]bool{}
	queue := slices.Clone(roots)
	var out []int
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	slices.Sort(out)
	return out
}

// parsePPID extracts the state and the parent pid from /proc/PID/stat.
func parsePPID(data []byte) (state byte, ppid int, ok bool) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return 0, 0, false
	}
	fields := bytes.Fields(data[end+1:])
	if len(fields) < 2 || len(fields[0]) != 1 {
		return 0, 0, false
	}
	ppid, err := strconv.Atoi(string(fields[1]))
	return fields[0][0], ppid, err == nil
}
