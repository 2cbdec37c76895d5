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

// FindDevice maps a volume to the block device it appears as on this host.
// It tries, in order: the by-id link built from the NVMe serial (Nitro), the
// device name given at attach time (/dev/sdf), and its Xen spelling
// (/dev/xvdf). The kernel name (nvme1n1) is never trusted on its own: NVMe
// numbering follows PCI enumeration and changes between boots.
func FindDevice(byIDDir, volumeID, deviceName string) (string, error) {
	link := filepath.Join(byIDDir, ByIDLinkName(volumeID))
	if dev, err := filepath.EvalSymlinks(link); err == nil {
		if isBlockDevice(dev) {
			return dev, nil
		}
		return "", fmt.Errorf("%s points to %s, which is not a block device", link, dev)
	}
	tried := []string{link}
	if deviceName != "" {
		candidates := []string{deviceName}
		if base := filepath.Base(deviceName); strings.HasPrefix(base, "sd") {
			candidates = append(candidates, filepath.Join(filepath.Dir(deviceName), "xvd"+base[2:]))
		}
		for _, c := range candidates {
			if dev, err := filepath.EvalSymlinks(c); err == nil && isBlockDevice(dev) {
				return dev, nil
			}
			tried = append(tried, c)
		}
	}
	return "", fmt.Errorf("no block device for %s (tried %s)", volumeID, strings.Join(tried, ", "))
}

func isBlockDevice(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
}
