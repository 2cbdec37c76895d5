package checkpoint

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// DryRunCall is EC2's verdict, with DryRun set, on one mutating call the
// agent will make with this config (agentctl doctor).
type DryRunCall struct {
	Action string // ec2:CreateSnapshots
	Why    string // what in the config needs it
	Target string // what the call was asked about
	// Err is nil when EC2 answered DryRunOperation (allowed); an
	// UnauthorizedOperation names the missing grant in its message.
	Err error
	// Skipped says why the call could not be asked (no resource to ask
	// about yet); Err is nil then.
	Skipped string
}

// DryRun asks EC2 about every mutating call the config will use, each
// shaped as the agent sends it (the same instance, volumes and tags: IAM
// conditions on tags see what they will see), with DryRun set: EC2 checks
// the caller's permissions and answers DryRunOperation or
// UnauthorizedOperation without doing anything (EC2 API reference,
// DryRun).
func (m *Manager) DryRun(ctx context.Context) []DryRunCall {
	cfg, ident := m.o.Config(), m.o.Identity()
	meta := Meta{ID: "cp-000000000000", Kinds: []api.CheckpointKind{api.KindEBS}, Reason: "doctor", Created: time.Now().UTC()}
	var out []DryRunCall
	ask := func(action, why, target string, call func() error) {
		out = append(out, DryRunCall{Action: action, Why: why, Target: target, Err: dryRunVerdict(call())})
	}
	skip := func(action, why, reason string) {
		out = append(out, DryRunCall{Action: action, Why: why, Skipped: reason})
	}
	dry := aws.Bool(true)

	if spec, _, err := instanceSpec(ident, cfg.Checkpoint.Volumes); err != nil {
		out = append(out, DryRunCall{Action: "ec2:CreateSnapshots", Why: "every checkpoint", Err: err})
	} else {
		ask("ec2:CreateSnapshots", "every checkpoint (tagged on create)", ident.InstanceID, func() error {
			_, err := m.o.EC2.CreateSnapshots(ctx, &ec2.CreateSnapshotsInput{DryRun: dry, InstanceSpecification: spec,
				TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: meta.tags(cfg.Application, ident.InstanceID, api.KindEBS)}}}, once)
			return err
		})
	}
	if slices.Contains(cfg.Checkpoint.BeforeDeploy, api.KindAMI) {
		ask("ec2:CreateImage", "checkpoint.before_deploy: ami", ident.InstanceID, func() error {
			tags := meta.tags(cfg.Application, ident.InstanceID, api.KindAMI)
			_, err := m.o.EC2.CreateImage(ctx, &ec2.CreateImageInput{DryRun: dry, InstanceId: aws.String(ident.InstanceID),
				Name: aws.String(AMIName(cfg.Application, "doctor", meta.ID)), NoReboot: aws.Bool(true),
				TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeImage, Tags: tags}, {ResourceType: types.ResourceTypeSnapshot, Tags: tags}}}, once)
			return err
		})
	}

	list, lerr := m.Catalogue(ctx)
	var rootSnap, dataSnap *api.CheckpointVolume
	var cpID string
	if lerr == nil {
		for _, c := range list.Checkpoints {
			for i := range c.Snapshots {
				s := &c.Snapshots[i]
				if s.Root && rootSnap == nil {
					rootSnap = s
				}
				if !s.Root && dataSnap == nil {
					dataSnap, cpID = s, c.ID
				}
			}
		}
	}
	if dataSnap != nil {
		ask("ec2:CreateTags", "checkpoints are tagged after they are taken (device names, pins)", dataSnap.SnapshotID, func() error {
			_, err := m.o.EC2.CreateTags(ctx, &ec2.CreateTagsInput{DryRun: dry, Resources: []string{dataSnap.SnapshotID},
				Tags: toTags(map[string]string{TagDevice: dataSnap.DeviceName})})
			return err
		})
	}

	if slices.Contains(cfg.Rollback.Ladder, "volumes") {
		why := "rollback.ladder: volumes"
		var data *api.Volume
		for i := range ident.Volumes {
			if !ident.Volumes[i].Root {
				data = &ident.Volumes[i]
				break
			}
		}
		switch {
		case data == nil:
			skip("ec2:CreateVolume", why, "the instance has no data volume")
		default:
			in := &ec2.CreateVolumeInput{DryRun: dry, AvailabilityZone: aws.String(ident.AvailabilityZone), VolumeType: types.VolumeType(data.VolumeType),
				TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: toTags(map[string]string{
					TagApp: cfg.Application, TagInstance: ident.InstanceID, TagManaged: "true", TagDevice: data.DeviceName})}}}
			target := data.DeviceName
			if dataSnap != nil {
				in.SnapshotId, target = aws.String(dataSnap.SnapshotID), "from "+dataSnap.SnapshotID+" of "+cpID
			} else {
				in.Size = aws.Int32(data.SizeGiB)
			}
			ask("ec2:CreateVolume", why, target, func() error {
				_, err := m.o.EC2.CreateVolume(ctx, in, once)
				return err
			})
			ask("ec2:DetachVolume", why, data.VolumeID, func() error {
				_, err := m.o.EC2.DetachVolume(ctx, &ec2.DetachVolumeInput{DryRun: dry, VolumeId: aws.String(data.VolumeID), InstanceId: aws.String(ident.InstanceID), Device: aws.String(data.DeviceName)})
				return err
			})
		}
		// AttachVolume is granted on the agent's own volumes only: ask
		// about one a restore kept, when there is one.
		if lerr == nil && len(list.ReplacedVolumes) > 0 {
			v := list.ReplacedVolumes[0]
			ask("ec2:AttachVolume", why, v.VolumeID, func() error {
				_, err := m.o.EC2.AttachVolume(ctx, &ec2.AttachVolumeInput{DryRun: dry, VolumeId: aws.String(v.VolumeID), InstanceId: aws.String(ident.InstanceID), Device: aws.String(v.DeviceName)})
				return err
			})
		} else {
			skip("ec2:AttachVolume", why, "no volume made by a restore yet to ask about (it is granted on volumes tagged rollback-agent:managed=true only)")
		}
	}

	if slices.Contains(cfg.Rollback.Ladder, "root") {
		why := "rollback.ladder: root"
		in := &ec2.CreateReplaceRootVolumeTaskInput{DryRun: dry, InstanceId: aws.String(ident.InstanceID), DeleteReplacedRootVolume: aws.Bool(false),
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeReplaceRootVolumeTask, Tags: toTags(map[string]string{
				TagApp: cfg.Application, TagInstance: ident.InstanceID, TagManaged: "true", TagCheckpoint: meta.ID})}}}
		target := ident.InstanceID + " to its launch state"
		if rootSnap != nil {
			in.SnapshotId, target = aws.String(rootSnap.SnapshotID), ident.InstanceID+" from "+rootSnap.SnapshotID
		}
		ask("ec2:CreateReplaceRootVolumeTask", why, target, func() error {
			_, err := m.o.EC2.CreateReplaceRootVolumeTask(ctx, in)
			return err
		})
		ask("ec2:CreateTags", why+" (the restore intent on the instance)", ident.InstanceID, func() error {
			_, err := m.o.EC2.CreateTags(ctx, &ec2.CreateTagsInput{DryRun: dry, Resources: []string{ident.InstanceID},
				Tags: []types.Tag{{Key: aws.String(TagRestoreIntent), Value: aws.String("{}")}}})
			return err
		})
	}
	return out
}

// dryRunVerdict turns a DryRun call's error into nil (DryRunOperation:
// allowed) or the error.
func dryRunVerdict(err error) error {
	var ae smithy.APIError
	if err == nil {
		return errors.New("EC2 did the call: DryRun was not honoured")
	}
	if errors.As(err, &ae) && ae.ErrorCode() == "DryRunOperation" {
		return nil
	}
	return err
}
