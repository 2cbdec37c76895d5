package checkpoint

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rollback-agent/rollback-agent/internal/mountinfo"
)

// What keeps a block device busy, as the kernel sees it. EC2 leaves a
// DetachVolume of a volume still in use "stuck in the busy state ...
// delayed indefinitely until you unmount the volume, force detachment,
// reboot the instance" (DetachVolume API reference): the agent must know,
// before it stops the application, that it can release everything on
// the device it will detach.

// sysClassBlock is where the kernel lists block devices.
const sysClassBlock = "/sys/class/block"

// blockUse is one user of a device the agent cannot release itself.
type blockUse struct {
	What string // "partition nvme1n1p1 mounted at /srv (pid 812's mount namespace)"
}

// unreleasable lists what uses dev (a whole disk) that the agent's
// unmount of the disk's own mounts would not release: mounts of a
// partition of it, holders (LVM and other device-mapper targets, md
// RAID), and mounts in other mount namespaces (a container) that do not
// follow the agent's by propagation. sys is sysClassBlock (tests pass a
// copy).
func unreleasable(sys, dev string) ([]blockUse, error) {
	name := filepath.Base(dev)
	if r, err := filepath.EvalSymlinks(dev); err == nil {
		name = filepath.Base(r)
	}
	disk := filepath.Join(sys, name)
	devs := map[string]string{} // major:minor → kernel name
	num, err := readTrim(filepath.Join(disk, "dev"))
	if err != nil {
		return nil, fmt.Errorf("%s is not a block device the kernel lists: %w", dev, err)
	}
	devs[num] = name
	var uses []blockUse
	entries, _ := os.ReadDir(disk)
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(disk, e.Name(), "partition")); err != nil {
			continue
		}
		n, err := readTrim(filepath.Join(disk, e.Name(), "dev"))
		if err != nil {
			return nil, err
		}
		devs[n] = e.Name()
	}
	for _, kname := range devs {
		dir := disk
		if kname != name {
			dir = filepath.Join(disk, kname)
		}
		holders, _ := os.ReadDir(filepath.Join(dir, "holders"))
		for _, h := range holders {
			what := h.Name()
			if dm, err := readTrim(filepath.Join(sys, h.Name(), "dm", "name")); err == nil {
				what += " (device-mapper " + dm + ", e.g. LVM)"
			} else if strings.HasPrefix(h.Name(), "md") {
				what += " (md RAID)"
			}
			uses = append(uses, blockUse{What: fmt.Sprintf("%s is held by %s", kname, what)})
		}
	}
	mounts, err := mountsEverywhere(devs)
	if err != nil {
		return nil, err
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	// Peer groups of the agent's own mounts of the whole disk: a mount in
	// another namespace that is their peer or slave goes when they go.
	groups := map[string]bool{}
	for _, mt := range mounts {
		if mt.ns == self && mt.dev == name {
			for _, g := range mt.propagation {
				groups[g] = true
			}
		}
	}
	for _, mt := range mounts {
		switch {
		case mt.dev != name:
			where := "this agent's mount namespace"
			if mt.ns != self {
				where = fmt.Sprintf("the mount namespace of pid %s", mt.pid)
			}
			uses = append(uses, blockUse{What: fmt.Sprintf("a filesystem on partition %s is mounted at %s (%s): volumes with partition tables are not restored", mt.dev, mt.target, where)})
		case mt.ns != self && !mt.follows(groups):
			uses = append(uses, blockUse{What: fmt.Sprintf("%s is mounted at %s in another mount namespace (pid %s, e.g. a container), which the agent's unmount does not reach", name, mt.target, mt.pid)})
		}
	}
	return uses, nil
}

// nsMount is one mount of one of the devices, in some namespace.
type nsMount struct {
	dev, target, ns, pid string
	// propagation are the mount's shared:N and master:N peer groups.
	propagation []string
}

// follows is true when the mount is a peer or slave of one of groups:
// unmounting those unmounts it too.
func (m nsMount) follows(groups map[string]bool) bool {
	for _, g := range m.propagation {
		if groups[strings.Replace(g, "master:", "shared:", 1)] {
			return true
		}
	}
	return false
}

// mountsEverywhere reads the mountinfo of one process per mount
// namespace and returns the mounts of devs (major:minor → name).
func mountsEverywhere(devs map[string]string) ([]nsMount, error) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	seen := map[string]bool{}
	var out []nsMount
	// The agent's own namespace first, so it is read even if /proc is
	// long.
	order := []string{"self"}
	for _, p := range procs {
		if p.Name() != "" && p.Name()[0] >= '0' && p.Name()[0] <= '9' {
			order = append(order, p.Name())
		}
	}
	for _, pid := range order {
		ns, err := os.Readlink(filepath.Join("/proc", pid, "ns", "mnt"))
		if err != nil || seen[ns] {
			continue
		}
		seen[ns] = true
		f, err := os.Open(filepath.Join("/proc", pid, "mountinfo"))
		if err != nil {
			continue // the process is gone
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			// id parent major:minor root mountpoint options [optional...] - ...
			fs := strings.Fields(sc.Text())
			if len(fs) < 7 || devs[fs[2]] == "" {
				continue
			}
			m := nsMount{dev: devs[fs[2]], target: mountinfo.Unescape(fs[4]), ns: ns, pid: pid}
			for _, o := range fs[6:] {
				if o == "-" {
					break
				}
				if strings.HasPrefix(o, "shared:") || strings.HasPrefix(o, "master:") {
					m.propagation = append(m.propagation, o)
				}
			}
			out = append(out, m)
		}
		f.Close()
	}
	return out, nil
}

func readTrim(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}
