package checkpoint

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sysfs writes files of a fake /sys/class/block.
func sysfs(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Holders of the disk or of a partition (LVM, md) are what the agent
// cannot release; a disk without them has nothing in the way. (Mounts in
// other namespaces and of partitions are read from /proc: the e2e tests
// make real ones.) The major numbers are unused by real devices, so no
// mount of this machine matches them.
func TestUnreleasableHolders(t *testing.T) {
	free := sysfs(t, map[string]string{"nvme9n1/dev": "240:0\n", "nvme9n1/nvme9n1p1/partition": "1\n", "nvme9n1/nvme9n1p1/dev": "240:1\n"})
	if uses, err := unreleasable(free, "/dev/nvme9n1"); err != nil || len(uses) != 0 {
		t.Errorf("a disk nothing holds: %v %v", uses, err)
	}
	held := sysfs(t, map[string]string{
		"nvme9n1/dev": "240:0\n", "nvme9n1/holders/md127": "",
		"nvme9n1/nvme9n1p1/partition": "1\n", "nvme9n1/nvme9n1p1/dev": "240:1\n", "nvme9n1/nvme9n1p1/holders/dm-3": "",
		"dm-3/dm/name": "vg0-data\n",
	})
	uses, err := unreleasable(held, "/dev/nvme9n1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range uses {
		got = append(got, u.What)
	}
	all := strings.Join(got, "; ")
	for _, want := range []string{"nvme9n1 is held by md127 (md RAID)", "nvme9n1p1 is held by dm-3 (device-mapper vg0-data, e.g. LVM)"} {
		if !strings.Contains(all, want) {
			t.Errorf("uses %q lack %q", all, want)
		}
	}
	if _, err := unreleasable(held, "/dev/nvme8n1"); err == nil {
		t.Error("a device the kernel does not list: no error")
	}
}
