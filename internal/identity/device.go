package identity

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ByIDLinkName is the udev by-id name of an EBS volume on Nitro: the NVMe
// model and serial, where the serial is the volume id without its dash.
func ByIDLinkName(volumeID string) string {
	return "nvme-Amazon_Elastic_Block_Store_" + strings.ReplaceAll(volumeID, "-", "")
}

// SysClassBlock is where the kernel lists block devices.
const SysClassBlock = "/sys/class/block"

// FindDevice maps a volume to the block device it appears as on this host.
// It tries, in order: the by-id link built from the NVMe serial (Nitro), the
// device name given at attach time (/dev/sdf), and its Xen spelling
// (/dev/xvdf). The kernel name (nvme1n1) is never trusted on its own: NVMe
// numbering follows PCI enumeration and changes between boots. A device
// whose NVMe serial names another volume is refused: udev updates links
// some time after the kernel, so a link can be stale and point at a
// device that now is another volume (aws-ebs-csi-driver#1224).
func FindDevice(byIDDir, volumeID, deviceName string) (string, error) {
	return findDevice(SysClassBlock, byIDDir, volumeID, deviceName, true)
}

// FindAttachedDevice is FindDevice for a volume attached a moment ago:
// only its by-id link counts, since the link of the device name may still
// point at the volume that was there before. Only on a host without any
// EBS by-id link (a Xen instance) does the device name count.
func FindAttachedDevice(byIDDir, volumeID, deviceName string) (string, error) {
	byName := !hasEBSLinks(byIDDir)
	return findDevice(SysClassBlock, byIDDir, volumeID, deviceName, byName)
}

func hasEBSLinks(byIDDir string) bool {
	m, _ := filepath.Glob(filepath.Join(byIDDir, "nvme-Amazon_Elastic_Block_Store_vol*"))
	return len(m) > 0
}

func findDevice(sys, byIDDir, volumeID, deviceName string, byName bool) (string, error) {
	link := filepath.Join(byIDDir, ByIDLinkName(volumeID))
	tried := []string{link}
	if dev, err := filepath.EvalSymlinks(link); err == nil {
		if !isBlockDevice(dev) {
			return "", fmt.Errorf("%s points to %s, which is not a block device", link, dev)
		}
		if err := checkSerial(sys, dev, volumeID); err != nil {
			return "", fmt.Errorf("%s is stale: %w", link, err)
		}
		return dev, nil
	}
	if byName && deviceName != "" {
		candidates := []string{deviceName}
		if base := filepath.Base(deviceName); strings.HasPrefix(base, "sd") {
			candidates = append(candidates, filepath.Join(filepath.Dir(deviceName), "xvd"+base[2:]))
		}
		for _, c := range candidates {
			if dev, err := filepath.EvalSymlinks(c); err == nil && isBlockDevice(dev) {
				if err := checkSerial(sys, dev, volumeID); err != nil {
					return "", fmt.Errorf("%s: %w", c, err)
				}
				return dev, nil
			}
			tried = append(tried, c)
		}
	}
	return "", fmt.Errorf("no block device for %s (tried %s)", volumeID, strings.Join(tried, ", "))
}

// checkSerial refuses a device whose NVMe serial (the volume id without
// its dash on EBS) names another volume. Devices without a serial in
// sysfs (Xen, loop devices) cannot be checked and pass.
func checkSerial(sys, dev, volumeID string) error {
	b, err := os.ReadFile(filepath.Join(sys, filepath.Base(dev), "device", "serial"))
	if err != nil {
		return nil
	}
	got, want := strings.TrimSpace(string(b)), strings.ReplaceAll(volumeID, "-", "")
	if got != want && strings.HasPrefix(got, "vol") {
		return fmt.Errorf("%s has the NVMe serial %s, not %s's", dev, got, volumeID)
	}
	return nil
}

func isBlockDevice(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
}
