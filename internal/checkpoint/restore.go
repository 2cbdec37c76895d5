package checkpoint

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/clock"
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
// same device (a previous restore may have changed its id, or attached
// it at another name: then the volume tagged with the device). The
// snapshots of the data volumes must be complete (an AMI of the same
// checkpoint need not be).
func (m *Manager) PlanVolumeRestore(ctx context.Context, id string) ([]api.VolumeRestore, error) {
	c, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if ready, waiting, err := Readiness(c, NeedData); err != nil {
		return nil, err
	} else if !ready {
		return nil, fmt.Errorf("checkpoint %s: %s: it can be restored once complete", id, waiting)
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
			if vr.OldVolumeID, err = m.volumeForDevice(ctx, s.DeviceName); err != nil {
				return nil, err
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

// volumeForDevice is the volume of this instance a restore made for
// device and attached at another name ("" when there is none).
func (m *Manager) volumeForDevice(ctx context.Context, device string) (string, error) {
	out, err := m.o.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{m.o.Identity().InstanceID}},
		{Name: aws.String("tag:" + TagDevice), Values: []string{device}},
		{Name: aws.String("tag-key"), Values: []string{TagRestoredFrom}},
	}})
	if err != nil {
		return "", fmt.Errorf("restore %s: DescribeVolumes by tag %s: %w", device, TagDevice, err)
	}
	for _, v := range out.Volumes {
		return aws.ToString(v.VolumeId), nil
	}
	return "", nil
}

// CreateRestoreVolume makes the new volume from the snapshot in the
// instance's zone with the old volume's type, size, IOPS, throughput,
// encryption and tags, and waits until it is available. Its ClientToken
// is the operation and device, so a retry after a lost answer, or after a
// crash, gets the same volume back; a volume an interrupted earlier
// attempt made is found by its tag too. EC2 answers NotFound for a volume
// made a moment ago (eventual consistency): the wait allows for it.
func (m *Manager) CreateRestoreVolume(ctx context.Context, opID, checkpointID string, vr *api.VolumeRestore) error {
	ident := m.o.Identity()
	marker := opID + ":" + vr.DeviceName
	if id, err := m.findVolume(ctx, marker); err != nil {
		return err
	} else if id != "" {
		vr.NewVolumeID = id
	} else {
		in, dropped, err := m.restoreVolumeInput(ctx, checkpointID, marker, vr)
		if err != nil {
			return err
		}
		if len(dropped) > 0 {
			m.o.Log.Warn("the old volume's tags do not all fit on the restored volume (EC2 allows 50): some left off",
				zap.String("volume", vr.OldVolumeID), zap.Strings("left_off", dropped))
		}
		var id string
		err = m.retryCreate(ctx, "CreateVolume for "+vr.DeviceName, func(ctx context.Context) error {
			out, err := m.o.EC2.CreateVolume(ctx, in, once)
			if err == nil {
				id = aws.ToString(out.VolumeId)
			}
			return err
		}, func(ctx context.Context) (bool, error) {
			found, err := m.findVolume(ctx, marker)
			id = found
			return found != "", err
		})
		if err != nil {
			return fmt.Errorf("restore %s: CreateVolume from %s in %s: %w", vr.DeviceName, vr.SnapshotID, ident.AvailabilityZone, err)
		}
		vr.NewVolumeID = id
	}
	if err := m.record(func(led *ledger) { led.Volumes[vr.NewVolumeID] = volumeRestored }); err != nil {
		return fmt.Errorf("restore %s: %w", vr.DeviceName, err)
	}
	if err := m.waitVolume(ctx, vr.NewVolumeID, waitFor, func(v types.Volume) (bool, error) {
		switch v.State {
		case types.VolumeStateAvailable:
			return true, nil
		case types.VolumeStateError, types.VolumeStateDeleting, types.VolumeStateDeleted:
			return false, fmt.Errorf("it is %s", v.State)
		}
		return false, nil
	}); err != nil {
		return fmt.Errorf("restore %s: volume %s did not become available: %w", vr.DeviceName, vr.NewVolumeID, err)
	}
	vr.Stage = StageCreated
	return nil
}

// restoreVolumeInput is the CreateVolume of a restore: the old volume's
// attributes, the agent's tags first and as many of the old volume's own
// tags as EC2's 50 allow (dropped names those left off).
func (m *Manager) restoreVolumeInput(ctx context.Context, checkpointID, marker string, vr *api.VolumeRestore) (*ec2.CreateVolumeInput, []string, error) {
	ident := m.o.Identity()
	old, err := m.o.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{vr.OldVolumeID}})
	if err != nil {
		return nil, nil, fmt.Errorf("restore %s: DescribeVolumes %s: %w", vr.DeviceName, vr.OldVolumeID, err)
	}
	agent := map[string]string{TagApp: m.o.Config().Application, TagInstance: ident.InstanceID, TagManaged: "true",
		TagCheckpoint: checkpointID, TagRestoredFrom: vr.SnapshotID, TagDevice: vr.DeviceName, TagPrefix + "restore": marker}
	user := map[string]string{}
	in := &ec2.CreateVolumeInput{SnapshotId: aws.String(vr.SnapshotID), AvailabilityZone: aws.String(ident.AvailabilityZone),
		ClientToken: aws.String(clientToken("restore-volume", marker, vr.SnapshotID))}
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
			if !strings.HasPrefix(k, TagPrefix) && !strings.HasPrefix(strings.ToLower(k), "aws:") {
				user[k] = v
			}
		}
	}
	tags, dropped := fitTags(agent, user)
	in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: tags}}
	return in, dropped, nil
}

// fitTags is first's tags and as many of more's as fit in EC2's 50 per
// resource (Name first, then by key); dropped are the keys left off.
func fitTags(first, more map[string]string) ([]types.Tag, []string) {
	all := maps.Clone(first)
	keys := slices.Sorted(maps.Keys(more))
	slices.SortStableFunc(keys, func(a, b string) int {
		switch {
		case a == "Name":
			return -1
		case b == "Name":
			return 1
		}
		return 0
	})
	var dropped []string
	for _, k := range keys {
		if _, ok := all[k]; ok {
			continue
		}
		if len(all) >= MaxTags {
			dropped = append(dropped, k)
			continue
		}
		all[k] = more[k]
	}
	return toTags(all), dropped
}

// clientToken is a ClientToken for a request that must happen once per
// what it names (at most 64 ASCII characters).
func clientToken(parts ...string) string {
	h := sha256.Sum256([]byte("rollback-agent " + strings.Join(parts, " ")))
	return hex.EncodeToString(h[:16])
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

// waitVolume polls volume id until done says it is, fails, or timeout
// passes. NotFound is waited through for a while (a volume made moments
// ago is not known everywhere yet), and so are transient errors.
func (m *Manager) waitVolume(ctx context.Context, id string, timeout time.Duration, done func(types.Volume) (bool, error)) error {
	deadline := m.o.Clock.Now().Add(timeout)
	delay := 250 * time.Millisecond
	var last error
	for {
		out, err := m.o.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
		switch {
		case err == nil && len(out.Volumes) == 1:
			ok, derr := done(out.Volumes[0])
			if derr != nil || ok {
				return derr
			}
			last = fmt.Errorf("still %s", describeAttachment(out.Volumes[0]))
		case err == nil:
			last = fmt.Errorf("DescribeVolumes %s: no such volume", id)
		case notFound(err) || isTransient(err):
			last = err
		default:
			return fmt.Errorf("DescribeVolumes %s: %w", id, err)
		}
		if !m.o.Clock.Now().Before(deadline) {
			return fmt.Errorf("gave up after %s: %w", timeout, last)
		}
		if err := clock.Sleep(ctx, m.o.Clock, delay); err != nil {
			return err
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func describeAttachment(v types.Volume) string {
	if len(v.Attachments) == 0 {
		return string(v.State)
	}
	a := v.Attachments[0]
	return fmt.Sprintf("%s, attachment to %s at %s %s", v.State, aws.ToString(a.InstanceId), aws.ToString(a.Device), a.State)
}
