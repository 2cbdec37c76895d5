package testbed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// dataPlane plays EBS's data plane for the volumes it knows: a volume is
// a sparse image file, a snapshot a sparse copy of it, and a volume
// attached to a data-plane instance a loop device with a by-id link in the
// instance's ByIDDir (how the agent finds a volume's block device). The
// proxy drives it after moto accepted a call, so moto stays the control
// plane and the two cannot disagree about what exists.
type dataPlane struct {
	dir string

	// mu serializes every change of the data plane: copies, losetup,
	// links and the helpers' mounts are quick, and one lock keeps a
	// detach from racing an attach or a snapshot of the same volume.
	mu     sync.Mutex
	vols   map[string]*dpVol
	snaps  map[string]string    // snapshot id → image
	insts  map[string]*Instance // data-plane instances by id
	capMiB int64                // size of blank volumes: the largest ImageMiB in use
	// linkGen counts the changes of each by-id link, so that a delayed
	// change never undoes a later one; timers are the pending ones.
	linkGen map[string]int
	timers  map[*time.Timer]bool
	closed  bool
}

type dpVol struct {
	image string
	inst  *Instance // the data-plane instance it is attached to, or nil
	loop  string
}

// instPlane is an instance's share of the data plane (guarded by
// dataPlane.mu).
type instPlane struct {
	mib    int64
	mounts map[string]string // dir → device, made through Instance.Mount
	// orphans are loop devices of volumes that left the instance while
	// still mounted (an old root during a root replacement): freed once
	// unmounted, or at Close.
	orphans []string
	closed  bool
}

func newDataPlane() (*dataPlane, error) {
	tmp := os.TempDir()
	sweepStale(tmp)
	dir, err := os.MkdirTemp(tmp, fmt.Sprintf("%s%d-", stateDirPrefix, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("testbed: data plane directory: %w", err)
	}
	for _, sub := range []string{"volumes", "snapshots", "instances"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("testbed: data plane directory: %w", err)
		}
	}
	return &dataPlane{dir: dir, vols: map[string]*dpVol{}, snaps: map[string]string{}, insts: map[string]*Instance{},
		linkGen: map[string]int{}, timers: map[*time.Timer]bool{}}, nil
}

func (d *dataPlane) volPath(id string) string  { return filepath.Join(d.dir, "volumes", id+".img") }
func (d *dataPlane) snapPath(id string) string { return filepath.Join(d.dir, "snapshots", id+".img") }

// addInstance gives i a by-id directory and a formatted image per volume,
// attached.
func (d *dataPlane) addInstance(i *Instance, mib int64, volumes ...string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	i.ByIDDir = filepath.Join(d.dir, "instances", i.Doc.InstanceID, "by-id")
	if err := os.MkdirAll(i.ByIDDir, 0o755); err != nil {
		return fmt.Errorf("testbed: by-id directory of %s: %w", i.Doc.InstanceID, err)
	}
	i.plane = &instPlane{mib: mib, mounts: map[string]string{}}
	d.insts[i.Doc.InstanceID] = i
	d.capMiB = max(d.capMiB, mib)
	for _, v := range volumes {
		path := d.volPath(v)
		if err := makeImage(path, mib, true); err != nil {
			return fmt.Errorf("testbed: image of %s: %w", v, err)
		}
		d.vols[v] = &dpVol{image: path}
		if err := d.attachLocked(v, i, 0); err != nil {
			return fmt.Errorf("testbed: attach %s: %w", v, err)
		}
	}
	return nil
}

// attachLocked gives volumeID a loop device on i, and its by-id link
// after udevDelay. A volume the data plane does not know (made in moto
// behind the proxy's back, or from a snapshot it has no image of) gets a
// blank image.
func (d *dataPlane) attachLocked(volumeID string, i *Instance, udevDelay time.Duration) error {
	v := d.vols[volumeID]
	if v == nil {
		path := d.volPath(volumeID)
		if err := makeImage(path, i.plane.mib, false); err != nil {
			return fmt.Errorf("blank image for %s: %w", volumeID, err)
		}
		v = &dpVol{image: path}
		d.vols[volumeID] = v
	}
	if v.inst == i {
		return nil
	}
	if v.inst != nil {
		return fmt.Errorf("%s is attached to %s in the data plane", volumeID, v.inst.Doc.InstanceID)
	}
	loop, err := losetup(v.image)
	if err != nil {
		return err
	}
	if err := d.linkLater(filepath.Join(i.ByIDDir, byIDLinkName(volumeID)), loop, udevDelay); err != nil {
		_ = loopDetach(loop)
		return err
	}
	v.inst, v.loop = i, loop
	return nil
}

// detachLocked frees volumeID's loop device, or keeps it as an orphan of
// the instance while it is mounted; its by-id link goes after udevDelay
// (until then it is stale).
func (d *dataPlane) detachLocked(volumeID string, udevDelay time.Duration) error {
	v := d.vols[volumeID]
	if v == nil || v.inst == nil {
		return nil
	}
	i, loop := v.inst, v.loop
	v.inst, v.loop = nil, ""
	if err := d.linkLater(filepath.Join(i.ByIDDir, byIDLinkName(volumeID)), "", udevDelay); err != nil {
		return err
	}
	if dirs, err := mountsOf(loop); err != nil || len(dirs) > 0 {
		i.plane.orphans = append(i.plane.orphans, loop)
		return nil
	}
	return loopDetach(loop)
}

// snapshot copies volumeID's image as snapID's, if the volume is known.
func (d *dataPlane) snapshot(volumeID, snapID string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.vols[volumeID]
	if v == nil {
		return nil
	}
	dst := d.snapPath(snapID)
	if err := copySparse(v.image, dst); err != nil {
		return err
	}
	d.snaps[snapID] = dst
	return nil
}

// volumeCreated gives a new volume its image: a copy of the snapshot's,
// or (no snapshot) a blank one of the requested size, capped.
func (d *dataPlane) volumeCreated(volumeID, snapID string, sizeGiB int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if snapID != "" {
		src := d.snaps[snapID]
		if src == "" {
			return nil // not ours: a blank image if it is ever attached
		}
		if err := copySparse(src, d.volPath(volumeID)); err != nil {
			return err
		}
		d.vols[volumeID] = &dpVol{image: d.volPath(volumeID)}
		return nil
	}
	if d.capMiB == 0 {
		return nil // no data-plane instance: nobody could attach it
	}
	if err := makeImage(d.volPath(volumeID), min(max(sizeGiB, 1)<<10, d.capMiB), false); err != nil {
		return err
	}
	d.vols[volumeID] = &dpVol{image: d.volPath(volumeID)}
	return nil
}

func (d *dataPlane) attach(volumeID, instanceID string, udevDelay time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := d.insts[instanceID]
	if i == nil {
		return nil
	}
	return d.attachLocked(volumeID, i, udevDelay)
}

func (d *dataPlane) detach(volumeID string, udevDelay time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.detachLocked(volumeID, udevDelay)
}

func (d *dataPlane) deleteVolume(volumeID string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.vols[volumeID]
	if v == nil {
		return nil
	}
	err := d.detachLocked(volumeID, 0)
	delete(d.vols, volumeID)
	return errors.Join(err, removeFile(v.image))
}

func (d *dataPlane) deleteSnapshot(snapID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.snaps[snapID]; p != "" {
		_ = removeFile(p)
		delete(d.snaps, snapID)
	}
}

func removeFile(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

// replaceRoot moves instanceID's root from oldVol to newVol: the by-id
// link of newVol appears on a new loop device; oldVol's link goes, and its
// loop device is freed once the test no longer mounts it.
func (d *dataPlane) replaceRoot(instanceID, oldVol, newVol string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := d.insts[instanceID]
	if i == nil {
		return nil
	}
	if err := d.attachLocked(newVol, i, 0); err != nil {
		return fmt.Errorf("attach new root %s: %w", newVol, err)
	}
	if err := d.detachLocked(oldVol, 0); err != nil {
		return fmt.Errorf("detach old root %s: %w", oldVol, err)
	}
	return nil
}

// reapInstance frees the orphaned loop devices of an instance that are no
// longer mounted.
func (d *dataPlane) reapInstance(instanceID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := d.insts[instanceID]
	if i == nil {
		return
	}
	kept := i.plane.orphans[:0]
	for _, dev := range i.plane.orphans {
		if dirs, err := mountsOf(dev); err == nil && len(dirs) == 0 && loopDetach(dev) == nil {
			continue
		}
		kept = append(kept, dev)
	}
	i.plane.orphans = kept
}

// closeInstance unmounts and frees every loop device of i, mounts made
// behind the helpers' back included, and removes its by-id directory.
func (d *dataPlane) closeInstance(i *Instance) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if i.plane == nil || i.plane.closed {
		return nil
	}
	i.plane.closed = true
	var errs []error
	for dir := range i.plane.mounts {
		if err := unmount(dir); err != nil {
			errs = append(errs, err)
		}
	}
	devs := append([]string(nil), i.plane.orphans...)
	for _, v := range d.vols {
		if v.inst == i {
			devs = append(devs, v.loop)
			v.inst, v.loop = nil, ""
		}
	}
	for _, dev := range devs {
		if err := unmountPartitions(dev); err != nil {
			errs = append(errs, err)
		}
		if err := unmountAll(dev); err != nil {
			errs = append(errs, err)
		}
		if err := loopDetach(dev); err != nil {
			errs = append(errs, err)
		}
	}
	i.plane.orphans, i.plane.mounts = nil, map[string]string{}
	delete(d.insts, i.Doc.InstanceID)
	if err := os.RemoveAll(filepath.Dir(i.ByIDDir)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// close frees every instance's devices, then every image.
func (d *dataPlane) close() error {
	d.mu.Lock()
	insts := make([]*Instance, 0, len(d.insts))
	for _, i := range d.insts {
		insts = append(insts, i)
	}
	d.mu.Unlock()
	var errs []error
	for _, i := range insts {
		errs = append(errs, d.closeInstance(i))
	}
	if err := os.RemoveAll(d.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", d.dir, err))
	}
	return errors.Join(errs...)
}

// BlockDevice is the loop device that backs volumeID on this instance now
// (what the by-id link points to). It fails for a volume not attached
// here, and on an instance without DataPlane.
func (i *Instance) BlockDevice(volumeID string) (string, error) {
	d := i.bed.sim.dp
	d.mu.Lock()
	defer d.mu.Unlock()
	return i.blockDeviceLocked(volumeID)
}

func (i *Instance) blockDeviceLocked(volumeID string) (string, error) {
	if i.plane == nil {
		return "", fmt.Errorf("testbed: instance %s has no data plane (InstanceOptions.DataPlane)", i.Doc.InstanceID)
	}
	v := i.bed.sim.dp.vols[volumeID]
	if v == nil || v.inst != i {
		return "", fmt.Errorf("testbed: %s is not attached to %s in the data plane", volumeID, i.Doc.InstanceID)
	}
	return v.loop, nil
}

// Mount mounts the filesystem of volumeID (ext4) at dir, creating dir.
// Instance.Close unmounts it if the test did not.
func (i *Instance) Mount(volumeID, dir string) error {
	d := i.bed.sim.dp
	d.mu.Lock()
	defer d.mu.Unlock()
	dev, err := i.blockDeviceLocked(volumeID)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("testbed: mount point %s: %w", dir, err)
	}
	if err := unix.Mount(dev, dir, "ext4", 0, ""); err != nil {
		return fmt.Errorf("testbed: mount -t ext4 %s %s (volume %s): %w", dev, dir, volumeID, err)
	}
	i.plane.mounts[dir] = dev
	return nil
}

// Unmount unmounts dir (mounted with Mount or otherwise).
func (i *Instance) Unmount(dir string) error {
	if err := unix.Unmount(dir, 0); err != nil {
		return fmt.Errorf("testbed: umount %s: %w", dir, err)
	}
	if i.plane != nil {
		d := i.bed.sim.dp
		d.mu.Lock()
		delete(i.plane.mounts, dir)
		d.mu.Unlock()
	}
	return nil
}

// VolumeImage is the image file of volumeID in the data plane, or "" for
// a volume it has no image of.
func (b *Bed) VolumeImage(volumeID string) string {
	d := b.sim.dp
	d.mu.Lock()
	defer d.mu.Unlock()
	if v := d.vols[volumeID]; v != nil {
		return v.image
	}
	return ""
}

// The proxy's data-plane hooks.

func (s *sim) afterCreateVolume(c *call, r *reply) *reply {
	if !r.ok() {
		return r
	}
	doc, err := parseXML(r.Body)
	if err != nil {
		return internalError("read CreateVolume answer", err)
	}
	size, _ := strconv.ParseInt(doc.get("size"), 10, 64)
	if err := s.dp.volumeCreated(doc.get("volumeId"), doc.get("snapshotId"), size); err != nil {
		return internalError("data plane: image of "+doc.get("volumeId"), err)
	}
	return r
}

func (s *sim) afterAttachVolume(c *call, r *reply) *reply {
	if !r.ok() {
		return r
	}
	vol := c.param("VolumeId")
	if c.stash["stuck"] != nil {
		// The guest still holds the name: no device ever appears.
		s.attachStarted(vol, 0, true)
		return r
	}
	d := s.currentRules().UdevDelay
	if err := s.dp.attach(vol, c.param("InstanceId"), d); err != nil {
		return internalError("data plane: attach "+vol, err)
	}
	s.attachStarted(vol, d, false)
	return r
}

func (s *sim) afterDetachVolume(c *call, r *reply) *reply {
	if !r.ok() {
		return r
	}
	vol := c.param("VolumeId")
	s.detachStarted(vol)
	if err := s.dp.detach(vol, s.currentRules().UdevDelay); err != nil {
		return internalError("data plane: detach "+vol, err)
	}
	return r
}

func (s *sim) afterDeleteVolume(c *call, r *reply) *reply {
	if !r.ok() {
		return r
	}
	if err := s.dp.deleteVolume(c.param("VolumeId")); err != nil {
		return internalError("data plane: delete "+c.param("VolumeId"), err)
	}
	return r
}

// afterDeleteSnapshot drops a deleted snapshot's image and hold.
func (s *sim) afterDeleteSnapshot(c *call, r *reply) *reply {
	if r.ok() {
		s.forgetSnapshot(c.param("SnapshotId"))
	}
	return r
}
