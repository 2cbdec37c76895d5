package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	unix.Sync() // what the agent does before a snapshot
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// backingFile is the image a loop device reads, from sysfs.
func backingFile(t *testing.T, dev string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
	if err != nil {
		t.Fatalf("backing file of %s: %v", dev, err)
	}
	return strings.TrimSpace(string(b))
}

// linkTarget resolves the by-id link of volumeID on inst.
func linkTarget(inst *Instance, volumeID string) (string, error) {
	return os.Readlink(filepath.Join(inst.ByIDDir, byIDLinkName(volumeID)))
}

// The data-volume restore the agent does: snapshot, new volume from the
// snapshot, unmount, detach, attach at the same device, mount: the
// filesystem has the snapshot's content.
func TestDataVolumeRestore(t *testing.T) {
	ctx := testCtx(t)
	mnt := filepath.Join(t.TempDir(), "data")
	inst := newInstance(t, InstanceOptions{DataPlane: true})
	c := viaProxy()

	dev, err := inst.BlockDevice(inst.DataVolumeID)
	if err != nil {
		t.Fatal(err)
	}
	if link, err := linkTarget(inst, inst.DataVolumeID); err != nil || link != dev {
		t.Fatalf("by-id link of %s → %q (%v), want %s", inst.DataVolumeID, link, err, dev)
	}
	if err := inst.Mount(inst.DataVolumeID, mnt); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(mnt, "state.txt")
	writeFile(t, file, "old")

	out, err := c.CreateSnapshots(ctx, &ec2.CreateSnapshotsInput{
		InstanceSpecification: &types.InstanceSpecification{InstanceId: aws.String(inst.Doc.InstanceID), ExcludeBootVolume: aws.Bool(true)},
	})
	if err != nil || len(out.Snapshots) != 1 {
		t.Fatalf("CreateSnapshots: %v %+v", err, out)
	}
	snapID := aws.ToString(out.Snapshots[0].SnapshotId)
	writeFile(t, file, "new")

	nv, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{SnapshotId: aws.String(snapID), AvailabilityZone: aws.String(inst.Doc.AvailabilityZone), VolumeType: types.VolumeTypeGp3})
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	newVol := aws.ToString(nv.VolumeId)
	if bed.VolumeImage(newVol) == "" {
		t.Fatalf("no image for %s", newVol)
	}

	// Detaching a mounted volume is accepted and stays busy (EC2 does not
	// refuse it) until the volume is unmounted.
	det, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(inst.DataVolumeID), InstanceId: aws.String(inst.Doc.InstanceID)})
	if err != nil || det.State != types.VolumeAttachmentStateDetaching {
		t.Fatalf("DetachVolume of a mounted volume: %v %+v, want accepted, detaching", err, det)
	}
	if st := attachmentState(t, c, inst.DataVolumeID); st != types.VolumeAttachmentStateBusy {
		t.Fatalf("attachment of the mounted volume after DetachVolume: %q, want busy", st)
	}
	if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(newVol), InstanceId: aws.String(inst.Doc.InstanceID), Device: aws.String(DataDevice)}); errCode(err) != "InvalidParameterValue" {
		t.Fatalf("AttachVolume at the busy volume's device: %v, want InvalidParameterValue (already in use)", err)
	}
	if err := inst.Unmount(mnt); err != nil {
		t.Fatal(err)
	}
	if st := attachmentState(t, c, inst.DataVolumeID); st != "" {
		t.Fatalf("attachment after the unmount: %q, want detached", st)
	}
	// udev removes the old link a moment after the kernel dropped the
	// device: stale until then.
	testutil.WaitFor(t, 10*time.Second, "the old volume's by-id link to go", func() error {
		if _, err := linkTarget(inst, inst.DataVolumeID); !os.IsNotExist(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
	if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(newVol), InstanceId: aws.String(inst.Doc.InstanceID), Device: aws.String(DataDevice)}); err != nil {
		t.Fatalf("AttachVolume: %v", err)
	}
	if st := attachmentState(t, c, newVol); st != types.VolumeAttachmentStateAttaching {
		t.Errorf("attachment right after AttachVolume: %q, want attaching (udev has not made the link yet)", st)
	}
	var newDev string
	testutil.WaitFor(t, 10*time.Second, "the new volume's by-id link", func() error {
		newDev, err = linkTarget(inst, newVol)
		return err
	})
	if st := attachmentState(t, c, newVol); st != types.VolumeAttachmentStateAttached {
		t.Errorf("attachment once the link is there: %q, want attached", st)
	}
	if got, _ := inst.BlockDevice(newVol); got != newDev {
		t.Errorf("BlockDevice(%s) = %q, the link says %q", newVol, got, newDev)
	}
	if bf := backingFile(t, newDev); bf != bed.VolumeImage(newVol) {
		t.Errorf("%s reads %s, want the new volume's image %s", newDev, bf, bed.VolumeImage(newVol))
	}
	if err := inst.Mount(newVol, mnt); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, file); got != "old" {
		t.Errorf("restored volume has %q, want the snapshot's %q", got, "old")
	}
	if err := inst.Unmount(mnt); err != nil {
		t.Fatal(err)
	}

	oldImage := bed.VolumeImage(inst.DataVolumeID)
	if _, err := c.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(inst.DataVolumeID)}); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}
	if _, err := os.Stat(oldImage); !os.IsNotExist(err) || bed.VolumeImage(inst.DataVolumeID) != "" {
		t.Errorf("the deleted volume's image %s is still there (%v)", oldImage, err)
	}
	snapImage := bed.sim.dp.snapPath(snapID)
	if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snapID)}); err != nil {
		t.Fatalf("DeleteSnapshot: %v", err)
	}
	if _, err := os.Stat(snapImage); !os.IsNotExist(err) {
		t.Errorf("the deleted snapshot's image is still there (%v)", err)
	}
}

// attachmentState is the state of volumeID's attachment through the
// proxy ("" when detached).
func attachmentState(t *testing.T, c *ec2.Client, volumeID string) types.VolumeAttachmentState {
	t.Helper()
	out, err := c.DescribeVolumes(testCtx(t), &ec2.DescribeVolumesInput{VolumeIds: []string{volumeID}})
	if err != nil || len(out.Volumes) != 1 {
		t.Fatalf("DescribeVolumes %s: %v", volumeID, err)
	}
	for _, a := range out.Volumes[0].Attachments {
		return a.State
	}
	return ""
}

// copySparse keeps holes and skips zero blocks, and copies the data.
func TestCopySparse(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	if err := makeImage(src, 64, false); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte("hello at 10 MiB")
	zeros := make([]byte, 4<<20) // written zeros: data to SEEK_DATA, skipped by the copy
	if _, err := f.WriteAt(zeros, 20<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(payload, 10<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(payload, 64<<20-int64(len(payload))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := copySparse(src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if string(a) != string(b) {
		t.Fatal("the copy differs from the source")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dst, &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used > 1<<20 {
		t.Errorf("the copy uses %d bytes on disk, want the holes and zeros skipped", used)
	}
}

// A bed whose test binary died (no Close) is swept by the next one: its
// mounts, loop devices and directory go. Beds of live processes stay.
func TestSweepStale(t *testing.T) {
	root := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(root, fmt.Sprintf("%s%d-x", stateDirPrefix, dead.Process.Pid))
	live := filepath.Join(root, fmt.Sprintf("%s%d-x", stateDirPrefix, os.Getppid()))
	for _, d := range []string{stale, live} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(stale, "v.img")
	if err := makeImage(img, 8, true); err != nil {
		t.Fatal(err)
	}
	dev, err := losetup(img)
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(root, "mnt")
	t.Cleanup(func() { _ = unmount(mnt); _ = loopDetach(dev) }) // only if the sweep failed
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, mnt, "ext4", 0, ""); err != nil {
		t.Fatal(err)
	}
	sweepStale(root)
	if dirs, _ := mountsOf(dev); len(dirs) > 0 {
		t.Errorf("%s still mounted at %v", dev, dirs)
	}
	if b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file")); err == nil {
		t.Errorf("%s still backed by %s", dev, b)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale bed directory left (%v)", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live process's bed directory was removed: %v", err)
	}
}
