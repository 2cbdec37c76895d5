package testbed

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/mountinfo"
)

// The guest's side of an attachment: udev's by-id links, made and removed
// some time after the kernel saw the device come or go (Rules.UdevDelay),
// and who uses a device, which decides whether a detach completes.

// ebsModel is the NVMe model string of an EBS volume on Nitro; its serial
// is the volume id without the dash (EBS User Guide, "Amazon EBS and
// NVMe", https://docs.aws.amazon.com/ebs/latest/userguide/nvme-ebs-volumes.html).
const ebsModel = "Amazon Elastic Block Store"

// udevByIDName is the link udev's 60-persistent-storage.rules makes for
// an NVMe namespace: "nvme-$env{ID_SERIAL}", ID_SERIAL being the model
// with blanks replaced by underscores, "_", and the serial. Written from
// the rule, not from the agent's code, so the two can disagree.
func udevByIDName(model, serial string) string {
	return "nvme-" + strings.Join(strings.Fields(model), "_") + "_" + serial
}

// byIDLinkName is the by-id link of an EBS volume on a Nitro instance.
func byIDLinkName(volumeID string) string {
	return udevByIDName(ebsModel, strings.ReplaceAll(volumeID, "-", ""))
}

// linkLater makes (target != "") or removes the link at path after delay,
// unless a later change of the same link came first. Call with d.mu held.
func (d *dataPlane) linkLater(path, target string, delay time.Duration) error {
	d.linkGen[path]++
	gen := d.linkGen[path]
	apply := func() error {
		_ = os.Remove(path)
		if target == "" {
			return nil
		}
		if err := os.Symlink(target, path); err != nil {
			return fmt.Errorf("by-id link %s: %w", path, err)
		}
		return nil
	}
	if delay <= 0 {
		return apply()
	}
	var t *time.Timer
	t = time.AfterFunc(delay, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		delete(d.timers, t)
		if d.closed || d.linkGen[path] != gen {
			return
		}
		if err := apply(); err != nil {
			fmt.Fprintf(os.Stderr, "testbed: udev: %v\n", err)
		}
	})
	d.timers[t] = true
	return nil
}

// usersOf says what on this host keeps volumeID busy: mounts of its
// device or of a partition of it, in any mount namespace, and holders
// (device-mapper, md). Nothing for a volume without a device here.
func (d *dataPlane) usersOf(volumeID string) ([]string, error) {
	d.mu.Lock()
	v := d.vols[volumeID]
	loop := ""
	if v != nil && v.inst != nil {
		loop = v.loop
	}
	d.mu.Unlock()
	if loop == "" {
		return nil, nil
	}
	return blockUsers(loop)
}

// blockUsers lists the users of a block device and its partitions.
func blockUsers(dev string) ([]string, error) {
	name := filepath.Base(dev)
	sys := filepath.Join("/sys/class/block", name)
	nodes := map[string]string{} // major:minor → name
	parts, _ := filepath.Glob(filepath.Join(sys, name+"*", "partition"))
	dirs := []string{sys}
	for _, p := range parts {
		dirs = append(dirs, filepath.Dir(p))
	}
	var users []string
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "dev"))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, "dev"), err)
		}
		nodes[strings.TrimSpace(string(b))] = filepath.Base(dir)
		holders, _ := os.ReadDir(filepath.Join(dir, "holders"))
		for _, h := range holders {
			users = append(users, filepath.Base(dir)+" is held by "+h.Name())
		}
	}
	mounts, err := mountsInAnyNamespace(nodes)
	if err != nil {
		return nil, err
	}
	return append(users, mounts...), nil
}

// mountsInAnyNamespace scans the mountinfo of one process per mount
// namespace for mounts of the given major:minor numbers.
func mountsInAnyNamespace(nodes map[string]string) ([]string, error) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range procs {
		if !isIndex(p.Name()) {
			continue
		}
		ns, err := os.Readlink(filepath.Join("/proc", p.Name(), "ns", "mnt"))
		if err != nil || seen[ns] {
			continue // gone, or a namespace already read
		}
		seen[ns] = true
		f, err := os.Open(filepath.Join("/proc", p.Name(), "mountinfo"))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) >= 5 && nodes[fs[2]] != "" {
				out = append(out, fmt.Sprintf("%s mounted at %s (mount namespace %s, pid %s)", nodes[fs[2]], mountinfo.Unescape(fs[4]), ns, p.Name()))
			}
		}
		f.Close()
	}
	return out, nil
}

// closeTimers stops the pending link changes (the bed is closing).
func (d *dataPlane) closeTimers() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for t := range d.timers {
		t.Stop()
	}
	d.timers = map[*time.Timer]bool{}
}
