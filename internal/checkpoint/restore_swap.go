package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/identity"
)

// The swap of a data volume: the old one out (unmount, detach), the new
// one in (attach, mount). Each stage checks the state before acting, so
// it is safe to repeat after a crash.

// CheckDetach refuses, before anything is stopped, a restore that could
// not release the old volume: EC2 keeps the detach of a volume still in
// use busy indefinitely, which would leave the application stopped and
// the volume neither detached nor mounted. The agent releases the mounts
// of the whole disk in its own mount namespace; it refuses a device it
// cannot find (it could not tell what uses it), a filesystem on a
// partition, LVM or md holding the disk, and mounts in other mount
// namespaces (a container) that its unmount does not reach.
func (m *Manager) CheckDetach(vr *api.VolumeRestore) error {
	if vr.Stage != "" && vr.Stage != StageCreated {
		return nil // the old volume was released already
	}
	dev, err := identity.FindDevice(m.o.Config().Devices.ByIDDir, vr.OldVolumeID, vr.DeviceName)
	if err != nil {
		return fmt.Errorf("restore %s: the block device of %s cannot be found (%v), so the agent cannot tell what uses it; "+
			"detaching a volume still in use leaves it busy: nothing was stopped or changed", vr.DeviceName, vr.OldVolumeID, err)
	}
	uses, err := unreleasable(sysClassBlock, dev)
	if err != nil {
		return fmt.Errorf("restore %s: what uses %s: %w", vr.DeviceName, dev, err)
	}
	if len(uses) > 0 {
		var what []string
		for _, u := range uses {
			what = append(what, u.What)
		}
		return fmt.Errorf("restore %s: the agent cannot release %s (%s) before detaching it: %s; "+
			"EC2 would leave the detach busy with the application stopped, so nothing was stopped or changed: release it by hand, or restore it by hand",
			vr.DeviceName, vr.OldVolumeID, dev, strings.Join(what, "; "))
	}
	return nil
}

// Unmount records every mount of the old volume's device (once) and
// unmounts them.
func (m *Manager) Unmount(vr *api.VolumeRestore) error {
	dev, err := identity.FindDevice(m.o.Config().Devices.ByIDDir, vr.OldVolumeID, vr.DeviceName)
	if err != nil {
		if vr.Mounts != nil {
			// A repeat after a crash: the mounts are recorded, and the
			// device may have gone with a detach that completed.
			vr.Stage = StageUnmounted
			return nil
		}
		return fmt.Errorf("restore %s: the block device of %s cannot be found: %w; not detaching a volume that may be in use", vr.DeviceName, vr.OldVolumeID, err)
	}
	mounts, err := mountsOf(dev)
	if err != nil {
		return fmt.Errorf("restore %s: %w", vr.DeviceName, err)
	}
	if vr.Mounts == nil {
		vr.Mounts = mounts
		if vr.Mounts == nil {
			vr.Mounts = []api.MountRecord{}
		}
	}
	if err := unmountAll(mounts); err != nil {
		return fmt.Errorf("restore %s: %w", vr.DeviceName, err)
	}
	vr.Stage = StageUnmounted
	return nil
}

// Detach detaches the old volume, waits until it is available, and tags
// it replaced-by the new one so the restore can be undone. A detach EC2
// keeps busy (a mount came back, e.g. an automount) is helped along by
// unmounting again what the agent can; after devices.detach_timeout it
// fails, saying what still uses the volume.
func (m *Manager) Detach(ctx context.Context, checkpointID string, vr *api.VolumeRestore) error {
	ident := m.o.Identity()
	cfg := m.o.Config()
	v, err := m.volume(ctx, vr.OldVolumeID)
	if err != nil {
		return fmt.Errorf("restore %s: %w", vr.DeviceName, err)
	}
	if attachedTo(v, ident.InstanceID) == types.VolumeAttachmentStateAttached {
		_, err := m.o.EC2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vr.OldVolumeID), InstanceId: aws.String(ident.InstanceID), Device: aws.String(vr.DeviceName)})
		if err != nil {
			return fmt.Errorf("restore %s: DetachVolume %s: %w", vr.DeviceName, vr.OldVolumeID, err)
		}
	}
	var busy string
	var have []types.Tag
	err = m.waitVolume(ctx, vr.OldVolumeID, cfg.Devices.DetachTimeout, func(v types.Volume) (bool, error) {
		if v.State == types.VolumeStateAvailable {
			have = v.Tags
			return true, nil
		}
		if attachedTo(v, ident.InstanceID) == types.VolumeAttachmentStateBusy {
			busy = m.releaseBusy(vr)
		}
		return false, nil
	})
	if err != nil {
		if busy != "" {
			return fmt.Errorf("restore %s: EC2 keeps the detach of %s busy: %s. It completes once nothing uses the volume "+
				"(or with a force detach, which risks the data on it); the application is stopped: %w", vr.DeviceName, vr.OldVolumeID, busy, err)
		}
		return fmt.Errorf("restore %s: volume %s did not detach: %w", vr.DeviceName, vr.OldVolumeID, err)
	}
	now := time.Now().UTC()
	if err := m.record(func(led *ledger) {
		led.Volumes[vr.OldVolumeID] = volumeReplaced
		led.Replaced[vr.OldVolumeID] = &replacedRec{By: vr.NewVolumeID, Checkpoint: checkpointID, Device: vr.DeviceName, At: now}
	}); err != nil {
		return fmt.Errorf("restore %s: %w", vr.DeviceName, err)
	}
	// The tags tell people (and IAM policies) what the kept volume is;
	// the ledger is what the agent goes by. They go in order of use, as
	// many as the volume's 50 allow.
	tags, dropped := fitOrdered(have, [][2]string{{TagReplacedBy, vr.NewVolumeID}, {TagManaged, "true"}, {TagInstance, ident.InstanceID},
		{TagApp, cfg.Application}, {TagCheckpoint, checkpointID}, {TagCreated, now.Format(time.RFC3339Nano)}, {TagDevice, vr.DeviceName}})
	if len(dropped) > 0 {
		m.o.Log.Warn("the replaced volume has no room for all the agent's tags (EC2 allows 50): some left off; the agent's ledger keeps what it needs",
			zap.String("volume", vr.OldVolumeID), zap.Strings("left_off", dropped))
	}
	if len(tags) > 0 {
		if _, err := m.o.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{vr.OldVolumeID}, Tags: tags}); err != nil {
			return fmt.Errorf("restore %s: tag the replaced volume %s: %w", vr.DeviceName, vr.OldVolumeID, err)
		}
	}
	vr.Stage = StageDetached
	return nil
}

// fitOrdered is the tags of add, in order, that fit next to have within
// EC2's 50 per resource (a key have has already is replaced, free);
// dropped are the keys left off.
func fitOrdered(have []types.Tag, add [][2]string) ([]types.Tag, []string) {
	keys := map[string]bool{}
	for _, t := range have {
		if k := aws.ToString(t.Key); !strings.HasPrefix(strings.ToLower(k), "aws:") {
			keys[k] = true
		}
	}
	var out []types.Tag
	var dropped []string
	for _, kv := range add {
		if !keys[kv[0]] && len(keys) >= MaxTags {
			dropped = append(dropped, kv[0])
			continue
		}
		keys[kv[0]] = true
		out = append(out, types.Tag{Key: aws.String(kv[0]), Value: aws.String(cleanTagValue(kv[1]))})
	}
	return out, dropped
}

// releaseBusy unmounts the old device's mounts in the agent's namespace
// again (something mounted it after the Unmount stage) and says what
// else still uses it.
func (m *Manager) releaseBusy(vr *api.VolumeRestore) string {
	dev, err := identity.FindDevice(m.o.Config().Devices.ByIDDir, vr.OldVolumeID, vr.DeviceName)
	if err != nil {
		return "its block device is no longer visible, yet EC2 says it is busy"
	}
	mounts, err := mountsOf(dev)
	if err == nil && len(mounts) > 0 {
		m.o.Log.Warn("the detach is busy: the volume was mounted again after it was unmounted; unmounting it again",
			zap.String("volume", vr.OldVolumeID), zap.Any("mounts", mounts))
		if err := unmountAll(mounts); err != nil {
			return err.Error()
		}
	}
	uses, err := unreleasable(sysClassBlock, dev)
	if err != nil {
		return err.Error()
	}
	var what []string
	for _, u := range uses {
		what = append(what, u.What)
	}
	if len(what) == 0 {
		return "something on this host held it (it was mounted again after the Unmount stage)"
	}
	return strings.Join(what, "; ")
}

// Attach attaches the new volume at the old device name and waits until
// EC2 says it is attached and its block device appeared (found by the
// by-id link of its NVMe serial, never by a device name another volume
// may still hold). When EC2 refuses the name (still in use) or leaves the
// attachment attaching past devices.attach_timeout (the guest still
// holds the name), it detaches and attaches at the next free name, as
// the EBS CSI driver does: the mounts go where they were, whatever the
// name.
func (m *Manager) Attach(ctx context.Context, vr *api.VolumeRestore) (string, error) {
	ident := m.o.Identity()
	cfg := m.o.Config()
	tried := map[string]bool{}
	device := vr.DeviceName
	if vr.AttachedAs != "" {
		device = vr.AttachedAs
	}
	for attempt := 1; ; attempt++ {
		tried[device] = true
		v, err := m.volume(ctx, vr.NewVolumeID)
		if err != nil {
			return "", fmt.Errorf("restore %s: %w", vr.DeviceName, err)
		}
		if st := attachedTo(v, ident.InstanceID); st == "" && v.State == types.VolumeStateAvailable {
			_, err := m.o.EC2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vr.NewVolumeID), InstanceId: aws.String(ident.InstanceID), Device: aws.String(device)})
			switch {
			case inUse(err) && attempt < 4:
				next, nerr := m.freeDeviceName(ctx, tried)
				if nerr != nil {
					return "", fmt.Errorf("restore %s: AttachVolume %s at %s: %w; and no other name: %w", vr.DeviceName, vr.NewVolumeID, device, err, nerr)
				}
				m.o.Log.Warn("EC2 refused the device name: attaching at another", zap.String("device", device), zap.String("instead", next), zap.Error(err))
				device = next
				continue
			case err != nil:
				return "", fmt.Errorf("restore %s: AttachVolume %s at %s: %w", vr.DeviceName, vr.NewVolumeID, device, err)
			}
		} else if len(v.Attachments) > 0 {
			device = aws.ToString(v.Attachments[0].Device)
		}
		if device != vr.DeviceName {
			vr.AttachedAs = device
		}
		dev, err := m.waitAttached(ctx, vr, cfg.Devices.AttachTimeout)
		if err == nil {
			vr.Stage = StageAttached
			return dev, nil
		}
		if ctx.Err() != nil || attempt >= 4 {
			return "", err
		}
		next, nerr := m.freeDeviceName(ctx, tried)
		if nerr != nil {
			return "", fmt.Errorf("%w; and no other device name: %w", err, nerr)
		}
		m.o.Log.Warn("the attachment did not complete: detaching it to attach at another device name (the guest may still hold this one)",
			zap.String("volume", vr.NewVolumeID), zap.String("device", device), zap.String("instead", next), zap.Error(err))
		if _, derr := m.o.EC2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vr.NewVolumeID), InstanceId: aws.String(ident.InstanceID)}); derr != nil {
			return "", fmt.Errorf("%w; detaching it to try another name: %w", err, derr)
		}
		if werr := m.waitVolume(ctx, vr.NewVolumeID, cfg.Devices.DetachTimeout, func(v types.Volume) (bool, error) {
			return v.State == types.VolumeStateAvailable, nil
		}); werr != nil {
			return "", fmt.Errorf("%w; detaching it to try another name: %w", err, werr)
		}
		device = next
	}
}

// waitAttached waits until EC2 says the new volume is attached and its
// block device shows up here.
func (m *Manager) waitAttached(ctx context.Context, vr *api.VolumeRestore, timeout time.Duration) (string, error) {
	byIDDir := m.o.Config().Devices.ByIDDir
	inst := m.o.Identity().InstanceID
	var dev string
	err := m.waitVolume(ctx, vr.NewVolumeID, timeout, func(v types.Volume) (bool, error) {
		if attachedTo(v, inst) != types.VolumeAttachmentStateAttached {
			return false, nil
		}
		d, err := identity.FindAttachedDevice(byIDDir, vr.NewVolumeID, vr.DeviceName)
		if err != nil {
			return false, nil
		}
		dev = d
		return true, nil
	})
	if err != nil {
		_, ferr := identity.FindAttachedDevice(byIDDir, vr.NewVolumeID, vr.DeviceName)
		return "", fmt.Errorf("restore %s: volume %s did not become attached with a block device within %s (devices.attach_timeout): %w (%v)",
			vr.DeviceName, vr.NewVolumeID, timeout, err, ferr)
	}
	return dev, nil
}

// freeDeviceName is the first of /dev/sd[f-p] (the range the EC2 User
// Guide recommends for EBS data volumes, "Device names for volumes on
// Amazon EC2 instances") the instance does not use and the restore has
// not tried.
func (m *Manager) freeDeviceName(ctx context.Context, tried map[string]bool) (string, error) {
	id := m.o.Identity().InstanceID
	out, err := m.o.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return "", fmt.Errorf("DescribeInstances %s: %w", id, err)
	}
	used := map[string]bool{}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			for _, b := range i.BlockDeviceMappings {
				name := aws.ToString(b.DeviceName)
				used[name] = true
				used[strings.Replace(name, "/dev/xvd", "/dev/sd", 1)] = true
			}
		}
	}
	for c := 'f'; c <= 'p'; c++ {
		name := "/dev/sd" + string(c)
		if !used[name] && !tried[name] {
			return name, nil
		}
	}
	return "", errors.New("every name of /dev/sd[f-p] is in use or was tried")
}

// Mount mounts the new device where the old one was.
func (m *Manager) Mount(vr *api.VolumeRestore, dev string) error {
	if err := mountAll(dev, vr.Mounts); err != nil {
		return fmt.Errorf("restore %s: %w", vr.DeviceName, err)
	}
	vr.Stage = StageMounted
	return nil
}

// volume describes one volume.
func (m *Manager) volume(ctx context.Context, id string) (types.Volume, error) {
	var v types.Volume
	err := m.waitVolume(ctx, id, time.Minute, func(got types.Volume) (bool, error) {
		v = got
		return true, nil
	})
	return v, err
}

// attachedTo is the state of v's attachment to instance ("" for none).
func attachedTo(v types.Volume, instance string) types.VolumeAttachmentState {
	for _, a := range v.Attachments {
		if aws.ToString(a.InstanceId) == instance {
			return a.State
		}
	}
	return ""
}

// inUse is EC2's refusal of an attachment point another volume holds.
func inUse(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "InvalidParameterValue" && strings.Contains(ae.ErrorMessage(), "already in use")
}
