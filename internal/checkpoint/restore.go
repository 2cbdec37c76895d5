package checkpoint

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/identity"
)

// Stages of a volume restore, in order.
const (
	StageCreated   = "created"
	StageUnmounted = "unmounted"
	StageDetached  = "detached"
	StageAttached  = "attached"
	StageMounted   = "mounted"
)

// waitFor bounds EC2 waiters of a restore.
const waitFor = 10 * time.Minute

// PlanVolumeRestore lists the data volumes of a checkpoint to restore:
// each snapshot of a non-root volume, and the volume attached now at the
// same device (a previous restore may have changed its id). The
// checkpoint must be complete.
func (m *Manager) PlanVolumeRestore(ctx context.Context, id string) ([]api.VolumeRestore, error) {
	c, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if c.State != api.CheckpointCompleted {
		return nil, fmt.Errorf("checkpoint %s is %s (progress %s): it can be restored once complete", id, c.State, c.Progress)
	}
	ident := m.o.Identity()
	var plan []api.VolumeRestore
	for _, s := range c.Snapshots {
		if s.Root {
			continue
		}
		if s.DeviceName == "" {
			return nil, fmt.Errorf("checkpoint %s: snapshot %s does not say which device it was taken of", id, s.SnapshotID)
		}
		vr := api.VolumeRestore{DeviceName: s.DeviceName, SnapshotID: s.SnapshotID}
		for _, v := range ident.Volumes {
			if v.DeviceName == s.DeviceName {
				vr.OldVolumeID = v.VolumeID
			}
		}
		if vr.OldVolumeID == "" {
			return nil, fmt.Errorf("checkpoint %s: no volume is attached at %s now", id, s.DeviceName)
		}
		plan = append(plan, vr)
	}
	if len(plan) == 0 {
		return nil, fmt.Errorf("checkpoint %s has no data volume snapshot (only the root: restore it with --root)", id)
	}
	return plan, nil
}

// CreateRestoreVolume makes the new volume from the snapshot in the
// instance's zone with the old volume's type, size, IOPS, throughput,
// encryption and tags, and waits until it is available. A volume an
// interrupted earlier attempt already made (found by its tag) is reused.
func (m *Manager) CreateRestoreVolume(ctx context.Context, opID, checkpointID string, vr *api.VolumeRestore) error {
	ident := m.o.Identity()
	marker := opID + ":" + vr.DeviceName
	if id, err := m.findVolume(ctx, marker); err != nil {
		return err
	} else if id != "" {
		vr.NewVolumeID = id
	} else {
		old, err := m.o.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vr.OldVolumeID}})
		if err != nil {
			return fmt.Errorf("restore %s: DescribeVolumes %s: %w", vr.DeviceName, vr.OldVolumeID, err)
		}
		kv := map[string]string{}
		in := &ec2.CreateVolumeInput{SnapshotId: aws.String(vr.SnapshotID), AvailabilityZone: aws.String(ident.AvailabilityZone)}
		if len(old.Volumes) == 1 {
			o := old.Volumes[0]
			in.VolumeType, in.Size, in.Encrypted, in.KmsKeyId = o.VolumeType, o.Size, o.Encrypted, o.KmsKeyId
			switch o.VolumeType {
			case types.VolumeTypeIo1, types.VolumeTypeIo2, types.VolumeTypeGp3:
				in.Iops = o.Iops
			}
			if o.VolumeType == types.VolumeTypeGp3 {
				in.Throughput = o.Throughput
			}
			for k, v := range tagMap(o.Tags) {
				if !strings.HasPrefix(k, TagPrefix) && !strings.HasPrefix(k, "aws:") {
					kv[k] = v
				}
			}
		}
		for k, v := range map[string]string{TagApp: m.o.Config().Application, TagInstance: ident.InstanceID, TagManaged: "true",
			TagCheckpoint: checkpointID, TagRestoredFrom: vr.SnapshotID, TagDevice: vr.DeviceName, TagPrefix + "restore": marker} {
			kv[k] = v
		}
		in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: toTags(kv)}}
		out, err := m.o.EC2.CreateVolume(ctx, in, once)
		if err != nil {
			// Ambiguous or not, a volume may exist now: look before failing.
			if id, ferr := m.findVolume(ctx, marker); ferr == nil && id != "" {
				vr.NewVolumeID = id
			} else {
				return fmt.Errorf("restore %s: CreateVolume from %s in %s: %w", vr.DeviceName, vr.SnapshotID, ident.AvailabilityZone, err)
			}
		} else {
			vr.NewVolumeID = aws.ToString(out.VolumeId)
		}
	}
	w := ec2.NewVolumeAvailableWaiter(m.o.EC2, func(o *ec2.VolumeAvailableWaiterOptions) { o.MinDelay, o.MaxDelay = time.Second, 15*time.Second })
	if err := w.Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vr.NewVolumeID}}, waitFor); err != nil {
		return fmt.Errorf("restore %s: volume %s did not become available: %w", vr.DeviceName, vr.NewVolumeID, err)
	}
	vr.Stage = StageCreated
	return nil
}

func (m *Manager) findVolume(ctx context.Context, marker string) (string, error) {
	out, err := m.o.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{
		{Name: aws.String("tag:" + TagPrefix + "restore"), Values: []string{marker}},
	}})
	if err != nil {
		return "", fmt.Errorf("restore: DescribeVolumes by tag %s: %w", marker, err)
	}
	for _, v := range out.Volumes {
		if v.State != types.VolumeStateDeleting && v.State != types.VolumeStateDeleted {
			return aws.ToString(v.VolumeId), nil
		}
	}
	return "", nil
}

// Unmount records every mount of the old volume's device (once) and
// unmounts them.
func (m *Manager) Unmount(vr *api.VolumeRestore) error {
	byIDDir := m.o.Config().Devices.ByIDDir
	dev, err := identity.FindDevice(byIDDir, vr.OldVolumeID, vr.DeviceName)
	if err == nil {
		mounts, err := mountsOf(dev)
		if err != nil {
			return fmt.Errorf("restore %s: %w", vr.DeviceName, err)
		}
		if vr.Mounts == nil {
			vr.Mounts = mounts
		}
		if err := unmountAll(mounts); err != nil {
			return fmt.Errorf("restore %s: %w", vr.DeviceName, err)
		}
	} else if vr.Stage == StageCreated {
		m.o.Log.Warn("the old volume has no block device here: nothing to unmount", zap.String("volume", vr.OldVolumeID), zap.Error(err))
	}
	vr.Stage = StageUnmounted
	return nil
}

// Detach detaches the old volume, waits until it is available, and tags
// it replaced-by the new one so the restore can be undone.
func (m *Manager) Detach(ctx context.Context, checkpointID string, vr *api.VolumeRestore) error {
	ident := m.o.Identity()
	st, err := m.volumeState(ctx, vr.OldVolumeID)
	if err != nil {
		return err
	}
	if st == types.VolumeStateInUse {
		_, err := m.o.EC2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vr.OldVolumeID), InstanceId: aws.String(ident.InstanceID), Device: aws.String(vr.DeviceName)})
		if err != nil {
			return fmt.Errorf("restore %s: DetachVolume %s: %w", vr.DeviceName, vr.OldVolumeID, err)
		}
	}
	w := ec2.NewVolumeAvailableWaiter(m.o.EC2, func(o *ec2.VolumeAvailableWaiterOptions) { o.MinDelay, o.MaxDelay = time.Second, 15*time.Second })
	if err := w.Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vr.OldVolumeID}}, waitFor); err != nil {
		return fmt.Errorf("restore %s: volume %s did not detach: %w", vr.DeviceName, vr.OldVolumeID, err)
	}
	_, err = m.o.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{vr.OldVolumeID}, Tags: toTags(map[string]string{
		TagReplacedBy: vr.NewVolumeID, TagCheckpoint: checkpointID, TagDevice: vr.DeviceName, TagApp: m.o.Config().Application,
		TagInstance: ident.InstanceID, TagManaged: "true", TagCreated: time.Now().UTC().Format(time.RFC3339Nano),
	})})
	if err != nil {
		return fmt.Errorf("restore %s: tag the replaced volume %s: %w", vr.DeviceName, vr.OldVolumeID, err)
	}
	vr.Stage = StageDetached
	return nil
}

// Attach attaches the new volume at the old device name and waits for its
// block device to appear; it returns the device path.
func (m *Manager) Attach(ctx context.Context, vr *api.VolumeRestore) (string, error) {
	byIDDir := m.o.Config().Devices.ByIDDir
	ident := m.o.Identity()
	st, err := m.volumeState(ctx, vr.NewVolumeID)
	if err != nil {
		return "", err
	}
	if st == types.VolumeStateAvailable {
		_, err := m.o.EC2.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vr.NewVolumeID), InstanceId: aws.String(ident.InstanceID), Device: aws.String(vr.DeviceName)})
		if err != nil {
			return "", fmt.Errorf("restore %s: AttachVolume %s: %w", vr.DeviceName, vr.NewVolumeID, err)
		}
	}
	w := ec2.NewVolumeInUseWaiter(m.o.EC2, func(o *ec2.VolumeInUseWaiterOptions) { o.MinDelay, o.MaxDelay = time.Second, 15*time.Second })
	if err := w.Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vr.NewVolumeID}}, waitFor); err != nil {
		return "", fmt.Errorf("restore %s: volume %s did not attach: %w", vr.DeviceName, vr.NewVolumeID, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		dev, err := identity.FindDevice(byIDDir, vr.NewVolumeID, vr.DeviceName)
		if err == nil {
			vr.Stage = StageAttached
			return dev, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("restore %s: volume %s is attached but its block device did not appear: %w", vr.DeviceName, vr.NewVolumeID, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Mount mounts the new device where the old one was.
func (m *Manager) Mount(vr *api.VolumeRestore, dev string) error {
	if err := mountAll(dev, vr.Mounts); err != nil {
		return fmt.Errorf("restore %s: %w", vr.DeviceName, err)
	}
	vr.Stage = StageMounted
	return nil
}

func (m *Manager) volumeState(ctx context.Context, id string) (types.VolumeState, error) {
	out, err := m.o.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
	if err != nil {
		return "", fmt.Errorf("restore: DescribeVolumes %s: %w", id, err)
	}
	if len(out.Volumes) != 1 {
		return "", fmt.Errorf("restore: volume %s not found", id)
	}
	return out.Volumes[0].State, nil
}
