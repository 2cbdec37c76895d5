package checkpoint

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/mountinfo"
)

// mountsOf returns every mount of the block device dev, from
// /proc/self/mountinfo (matched by major:minor, so any name of the device
// counts), outermost first.
func mountsOf(dev string) ([]api.MountRecord, error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", dev, err)
	}
	want := fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []api.MountRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 6 || sep < 0 || sep+3 > len(fields) || fields[2] != want {
			continue
		}
		out = append(out, api.MountRecord{
			Root: mountinfo.Unescape(fields[3]), Target: mountinfo.Unescape(fields[4]), Options: fields[5],
			FSType: fields[sep+1], SuperOptions: fields[sep+3],
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	sort.SliceStable(out, func(a, b int) bool { return len(out[a].Target) < len(out[b].Target) })
	return out, nil
}

// unmountAll unmounts the mounts, innermost first.
func unmountAll(mounts []api.MountRecord) error {
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mounts[i].Target, 0); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			return fmt.Errorf("unmount %s: %w (is something still using it? the application was asked to stop first)", mounts[i].Target, err)
		}
	}
	return nil
}

// mountFlags maps the per-mount options of mountinfo to mount(2) flags.
func mountFlags(opts string) uintptr {
	var fl uintptr
	for _, o := range strings.Split(opts, ",") {
		switch o {
		case "ro":
			fl |= unix.MS_RDONLY
		case "nosuid":
			fl |= unix.MS_NOSUID
		case "nodev":
			fl |= unix.MS_NODEV
		case "noexec":
			fl |= unix.MS_NOEXEC
		case "noatime":
			fl |= unix.MS_NOATIME
		case "nodiratime":
			fl |= unix.MS_NODIRATIME
		case "relatime":
			fl |= unix.MS_RELATIME
		case "sync":
			fl |= unix.MS_SYNCHRONOUS
		}
	}
	return fl
}

// fsData keeps the filesystem-specific super options (errors=..., data=...)
// and drops the generic ones mount(2) takes as flags.
func fsData(super string) string {
	var keep []string
	for _, o := range strings.Split(super, ",") {
		switch o {
		case "rw", "ro", "":
		default:
			keep = append(keep, o)
		}
	}
	return strings.Join(keep, ",")
}

// mountAll mounts dev again where the old device was, with the same
// options: the whole filesystem first, bind mounts of its subdirectories
// after.
func mountAll(dev string, mounts []api.MountRecord) error {
	primary := ""
	for _, mr := range mounts {
		if mr.Root != "/" {
			continue
		}
		if already(mr.Target, dev) {
			primary = mr.Target
			continue
		}
		if err := unix.Mount(dev, mr.Target, mr.FSType, mountFlags(mr.Options), fsData(mr.SuperOptions)); err != nil {
			return fmt.Errorf("mount %s on %s (%s, %s): %w", dev, mr.Target, mr.FSType, mr.Options, err)
		}
		if primary == "" {
			primary = mr.Target
		}
	}
	for _, mr := range mounts {
		if mr.Root == "/" || already(mr.Target, dev) {
			continue
		}
		if primary == "" {
			return fmt.Errorf("mount %s on %s: it was a bind mount of %s and the filesystem is mounted nowhere else", dev, mr.Target, mr.Root)
		}
		if err := unix.Mount(primary+mr.Root, mr.Target, "", unix.MS_BIND|mountFlags(mr.Options), ""); err != nil {
			return fmt.Errorf("bind mount %s on %s: %w", primary+mr.Root, mr.Target, err)
		}
	}
	return nil
}

// already reports whether target is a mount of dev right now (a repeated
// step after a crash must not mount twice).
func already(target, dev string) bool {
	cur, err := mountsOf(dev)
	if err != nil {
		return false
	}
	for _, c := range cur {
		if c.Target == target {
			return true
		}
	}
	return false
}
