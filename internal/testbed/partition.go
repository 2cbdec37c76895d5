package testbed

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// PartitionVolume gives volumeID, attached to i, an MBR partition table
// with one Linux partition from 1 MiB to the end, formats the partition
// ext4 and returns its device (/dev/loopNp1). Its filesystem replaces the
// one on the whole disk. Such a volume cannot be released by unmounting
// the disk's own mounts: what the agent must refuse before it stops
// anything. Instance.Close unmounts the partition too.
func (i *Instance) PartitionVolume(volumeID string) (string, error) {
	dev, err := i.BlockDevice(volumeID)
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("testbed: open %s: %w", dev, err)
	}
	defer f.Close()
	size, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKGETSIZE64)
	if err != nil {
		return "", fmt.Errorf("testbed: size of %s: %w", dev, err)
	}
	mbr := make([]byte, 512)
	entry := mbr[446:462]
	entry[4] = 0x83 // Linux
	binary.LittleEndian.PutUint32(entry[8:], 2048)
	binary.LittleEndian.PutUint32(entry[12:], uint32(size/512-2048))
	mbr[510], mbr[511] = 0x55, 0xAA
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return "", fmt.Errorf("testbed: write the partition table of %s: %w", dev, err)
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	// A loop device made without -P takes no partitions; the flag can be
	// set afterwards.
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if err != nil {
		return "", fmt.Errorf("testbed: LOOP_GET_STATUS64 %s: %w", dev, err)
	}
	info.Flags |= unix.LO_FLAGS_PARTSCAN
	if err := unix.IoctlLoopSetStatus64(int(f.Fd()), info); err != nil {
		return "", fmt.Errorf("testbed: LOOP_SET_STATUS64 %s (partscan): %w", dev, err)
	}
	// The kernel may have no partition table parser (this one has none):
	// partx reads the table and adds the partition (BLKPG).
	if out, err := exec.Command("partx", "--add", dev).CombinedOutput(); err != nil {
		return "", fmt.Errorf("testbed: partx --add %s: %w: %s", dev, err, out)
	}
	part := dev + "p1"
	if err := testutil.Poll(10*time.Second, func() error {
		fi, err := os.Stat(part)
		if err != nil || fi.Mode()&os.ModeDevice == 0 {
			return fmt.Errorf("%s did not appear: %v", part, err)
		}
		return nil
	}); err != nil {
		return "", fmt.Errorf("testbed: %w", err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", part).CombinedOutput(); err != nil {
		return "", fmt.Errorf("testbed: mkfs.ext4 %s: %w: %s", part, err, out)
	}
	return part, nil
}

// unmountPartitions unmounts every mount of a partition of dev.
func unmountPartitions(dev string) error {
	parts, _ := filepath.Glob(filepath.Join("/sys/class/block", filepath.Base(dev), filepath.Base(dev)+"p*"))
	var errs []error
	for _, p := range parts {
		if err := unmountAll("/dev/" + filepath.Base(p)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("unmount partitions of %s: %v", dev, errs)
	}
	return nil
}
