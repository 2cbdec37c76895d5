package identity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A by-id link is trusted only when the NVMe serial of the device it
// points to is the volume's: udev updates links after the kernel, so a
// stale link may point at a device that now is another volume
// (aws-ebs-csi-driver#1224). A device without a serial (Xen, a loop
// device) cannot be checked.
func TestFindDeviceChecksTheSerial(t *testing.T) {
	dir := t.TempDir()
	dev := filepath.Join(dir, "nvme7n1")
	if err := unix.Mknod(dev, unix.S_IFBLK|0o600, int(unix.Mkdev(240, 7))); err != nil {
		t.Fatalf("mknod (tests run as root): %v", err)
	}
	byID := filepath.Join(dir, "by-id")
	os.MkdirAll(byID, 0o755)
	if err := os.Symlink(dev, filepath.Join(byID, ByIDLinkName("vol-0aaa"))); err != nil {
		t.Fatal(err)
	}
	sys := filepath.Join(dir, "sys")
	serial := filepath.Join(sys, "nvme7n1", "device", "serial")
	os.MkdirAll(filepath.Dir(serial), 0o755)

	if got, err := findDevice(sys, byID, "vol-0aaa", "", false); err != nil || got != dev {
		t.Errorf("no serial to check: %q %v, want %s", got, err, dev)
	}
	os.WriteFile(serial, []byte("vol0aaa   \n"), 0o644)
	if got, err := findDevice(sys, byID, "vol-0aaa", "", false); err != nil || got != dev {
		t.Errorf("matching serial: %q %v", got, err)
	}
	os.WriteFile(serial, []byte("vol0bbb\n"), 0o644)
	if _, err := findDevice(sys, byID, "vol-0aaa", "", false); err == nil || !strings.Contains(err.Error(), "stale") {
		t.Errorf("a link to another volume's device: %v, want stale", err)
	}
	// Right after an attach only the by-id link counts on a host that has
	// EBS links: a device-name link may still be the previous volume's.
	named := filepath.Join(dir, "sdf")
	os.Symlink(dev, named)
	if _, err := findDevice(sys, byID, "vol-0ccc", named, !hasEBSLinks(byID)); err == nil {
		t.Error("a volume without its by-id link was found by its device name on a host with EBS links")
	}
}
