package checkpoint

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// RootIntent is a root restore in progress, kept in an instance tag: after
// the reboot, the agent runs from the restored root, whose journal is
// older than the restore; the tag is how it learns what happened.
type RootIntent struct {
	Operation  string    `json:"op"`
	Checkpoint string    `json:"cp"`
	SnapshotID string    `json:"snap,omitempty"`
	ImageID    string    `json:"ami,omitempty"`
	PreRestore string    `json:"pre,omitempty"`
	TaskID     string    `json:"task,omitempty"`
	Revision   string    `json:"rev,omitempty"`
	Started    time.Time `json:"at"`
}

// Root replacement task states that end it.
const (
	TaskSucceeded      = "succeeded"
	TaskFailed         = "failed"
	TaskFailedDetached = "failed-detached"
)

// PlanRootRestore picks what replaces the root: the checkpoint's root
// snapshot, or else its AMI, which must be complete; and refuses, before
// anything changes, what EC2 would refuse (replaceRootRefusal).
func (m *Manager) PlanRootRestore(ctx context.Context, id string) (*api.RootRestore, error) {
	c, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	rr := &api.RootRestore{Checkpoint: id}
	for _, s := range c.Snapshots {
		if s.Root && s.State == api.CheckpointCompleted {
			rr.SnapshotID = s.SnapshotID
		}
	}
	if rr.SnapshotID == "" && c.Image != nil && c.Image.State == api.CheckpointCompleted {
		rr.ImageID = c.Image.ImageID
	}
	if rr.SnapshotID == "" && rr.ImageID == "" {
		_, waiting, err := Readiness(c, NeedRoot)
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("checkpoint %s: %s: it can be restored once complete", id, waiting)
	}
	if err := m.replaceRootRefusal(ctx, rr); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w; nothing was changed", id, err)
	}
	return rr, nil
}

// replaceRootRefusal is what EC2 would refuse of this replacement. EC2
// User Guide, "Replace the root volume for an Amazon EC2 instance without
// stopping it", Considerations: no instance store root, no bare-metal
// instance (a Mac instance only from a snapshot), no AWS Marketplace AMI,
// and an AMI's root volume at least as large as the current root volume.
func (m *Manager) replaceRootRefusal(ctx context.Context, rr *api.RootRestore) error {
	id := m.o.Identity().InstanceID
	out, err := m.o.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return fmt.Errorf("DescribeInstances %s: %w", id, err)
	}
	var inst *types.Instance
	for _, r := range out.Reservations {
		for i := range r.Instances {
			inst = &r.Instances[i]
		}
	}
	if inst == nil {
		return fmt.Errorf("DescribeInstances %s: no such instance", id)
	}
	itype := string(inst.InstanceType)
	switch {
	case inst.RootDeviceType == types.DeviceTypeInstanceStore:
		return fmt.Errorf("%s has an instance store root volume, which EC2 cannot replace", id)
	case strings.HasSuffix(itype, ".metal") && !strings.HasPrefix(itype, "mac"):
		return fmt.Errorf("EC2 does not replace the root volume of bare metal instances (%s is %s)", id, itype)
	case rr.ImageID == "":
		return nil
	case strings.HasPrefix(itype, "mac"):
		return fmt.Errorf("EC2 replaces the root volume of a Mac instance (%s) from a snapshot only, not from an AMI", itype)
	}
	imgs, err := m.o.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{rr.ImageID}})
	if err != nil || len(imgs.Images) != 1 {
		return fmt.Errorf("DescribeImages %s: %d images, %v", rr.ImageID, lenImages(imgs), err)
	}
	im := imgs.Images[0]
	for _, pc := range im.ProductCodes {
		if pc.ProductCodeType == types.ProductCodeValuesMarketplace {
			return fmt.Errorf("AMI %s carries the AWS Marketplace product code %s, and EC2 does not replace a root volume from a Marketplace AMI", rr.ImageID, aws.ToString(pc.ProductCodeId))
		}
	}
	var amiRoot, curRoot int32
	var curVol string
	for _, b := range im.BlockDeviceMappings {
		if aws.ToString(b.DeviceName) == aws.ToString(im.RootDeviceName) && b.Ebs != nil {
			amiRoot = aws.ToInt32(b.Ebs.VolumeSize)
		}
	}
	for _, b := range inst.BlockDeviceMappings {
		if aws.ToString(b.DeviceName) == aws.ToString(inst.RootDeviceName) && b.Ebs != nil {
			curVol = aws.ToString(b.Ebs.VolumeId)
		}
	}
	if curVol != "" {
		vols, err := m.o.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{curVol}})
		if err != nil {
			return fmt.Errorf("DescribeVolumes %s: %w", curVol, err)
		}
		for _, v := range vols.Volumes {
			curRoot = aws.ToInt32(v.Size)
		}
	}
	if amiRoot < curRoot {
		return fmt.Errorf("the root volume of AMI %s is %d GiB, smaller than the current root volume %s (%d GiB; it was grown after the checkpoint?), and EC2 replaces a root only with one at least as large",
			rr.ImageID, amiRoot, curVol, curRoot)
	}
	return nil
}

func lenImages(o *ec2.DescribeImagesOutput) int {
	if o == nil {
		return 0
	}
	return len(o.Images)
}

// The intent is JSON in the instance's tags: the first part in
// TagRestoreIntent, further parts (a long revision) in TagRestoreIntent
// ":2" to ":4", each within EC2's 256 characters per tag value.
const (
	intentPartRunes = 256
	intentMaxParts  = 4
)

func intentKey(part int) string {
	if part == 1 {
		return TagRestoreIntent
	}
	return fmt.Sprintf("%s:%d", TagRestoreIntent, part)
}

// SetRootIntent writes the intent to the instance's tags. It refuses,
// before writing anything, an intent that does not fit (at most four tag
// values) or an instance without room for its tags (EC2 allows 50).
func (m *Manager) SetRootIntent(ctx context.Context, in RootIntent) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	r := []rune(string(b))
	var parts []string
	for len(r) > 0 {
		n := min(len(r), intentPartRunes)
		parts = append(parts, string(r[:n]))
		r = r[n:]
	}
	if len(parts) > intentMaxParts {
		return fmt.Errorf("root restore intent too long for %d tags (%d characters)", intentMaxParts, utf8.RuneCount(b))
	}
	inst := m.o.Identity().InstanceID
	have, err := m.o.EC2.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []types.Filter{{Name: aws.String("resource-id"), Values: []string{inst}}}})
	if err != nil {
		return fmt.Errorf("root restore: DescribeTags of %s: %w", inst, err)
	}
	others := 0
	for _, t := range have.Tags {
		if k := aws.ToString(t.Key); !strings.HasPrefix(k, TagRestoreIntent) && !strings.HasPrefix(strings.ToLower(k), "aws:") {
			others++
		}
	}
	if others+len(parts) > MaxTags {
		return fmt.Errorf("root restore: %s has %d tags and the restore intent needs %d more, beyond EC2's %d per resource: remove %d of its tags first",
			inst, others, len(parts), MaxTags, others+len(parts)-MaxTags)
	}
	tags := make([]types.Tag, len(parts))
	for i, p := range parts {
		tags[i] = types.Tag{Key: aws.String(intentKey(i + 1)), Value: aws.String(p)}
	}
	if _, err := m.o.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{inst}, Tags: tags}); err != nil {
		return fmt.Errorf("root restore: tag %s with the intent: %w", inst, err)
	}
	var stale []types.Tag
	for p := len(parts) + 1; p <= intentMaxParts; p++ {
		stale = append(stale, types.Tag{Key: aws.String(intentKey(p))})
	}
	if len(stale) > 0 {
		if _, err := m.o.EC2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{inst}, Tags: stale}); err != nil {
			return fmt.Errorf("root restore: remove stale parts of the intent of %s: %w", inst, err)
		}
	}
	return nil
}

// RootIntentNow reads the intent from the instance's tags (nil: none).
func (m *Manager) RootIntentNow(ctx context.Context) (*RootIntent, error) {
	inst := m.o.Identity().InstanceID
	keys := make([]string, intentMaxParts)
	for i := range keys {
		keys[i] = intentKey(i + 1)
	}
	out, err := m.o.EC2.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []types.Filter{
		{Name: aws.String("resource-id"), Values: []string{inst}},
		{Name: aws.String("key"), Values: keys},
	}})
	if err != nil {
		return nil, fmt.Errorf("root restore: DescribeTags of %s: %w", inst, err)
	}
	byKey := map[string]string{}
	for _, t := range out.Tags {
		byKey[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	if byKey[TagRestoreIntent] == "" {
		return nil, nil
	}
	var b strings.Builder
	for _, k := range keys {
		v, ok := byKey[k]
		if !ok {
			break
		}
		b.WriteString(v)
	}
	var in RootIntent
	if err := json.Unmarshal([]byte(b.String()), &in); err != nil {
		return nil, fmt.Errorf("root restore: tags %s of %s are not an intent: %w", TagRestoreIntent, inst, err)
	}
	return &in, nil
}

// ClearRootIntent removes the intent tags.
func (m *Manager) ClearRootIntent(ctx context.Context) error {
	inst := m.o.Identity().InstanceID
	tags := make([]types.Tag, intentMaxParts)
	for i := range tags {
		tags[i] = types.Tag{Key: aws.String(intentKey(i + 1))}
	}
	_, err := m.o.EC2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{inst}, Tags: tags})
	if err != nil {
		return fmt.Errorf("root restore: remove the intent tag of %s: %w", inst, err)
	}
	return nil
}

// AdoptRestored records in the ledger what a root restore's intent names:
// the journal of the restored root predates the checkpoint it restored
// and the pre-restore checkpoint, so they would otherwise be unlisted.
func (m *Manager) AdoptRestored(in RootIntent) error {
	return m.record(func(led *ledger) {
		for _, id := range []string{in.Checkpoint, in.PreRestore} {
			if id == "" {
				continue
			}
			if e := led.Checkpoints[id]; e == nil {
				led.Checkpoints[id] = &ledgerEntry{Created: in.Started, Adopted: true}
			} else {
				e.Adopted = true
			}
		}
		if e := led.Checkpoints[in.Checkpoint]; e != nil && in.ImageID != "" {
			e.Image = in.ImageID
		}
	})
}

// StartRootReplace asks EC2 to replace the root volume; EC2 reboots the
// instance. The replaced volume is kept (DeleteReplacedRootVolume false)
// so the restore can be undone.
func (m *Manager) StartRootReplace(ctx context.Context, opID string, rr *api.RootRestore) error {
	in := &ec2.CreateReplaceRootVolumeTaskInput{
		InstanceId:               aws.String(m.o.Identity().InstanceID),
		DeleteReplacedRootVolume: aws.Bool(false),
		// Per operation and source: a repeat after a crash starts no
		// second task, and never reuses the token with other parameters.
		ClientToken: aws.String(clientToken("replace-root", opID, rr.SnapshotID, rr.ImageID)),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeReplaceRootVolumeTask, Tags: toTags(map[string]string{
			TagApp: m.o.Config().Application, TagInstance: m.o.Identity().InstanceID, TagManaged: "true", TagCheckpoint: rr.Checkpoint,
		})}},
	}
	if rr.SnapshotID != "" {
		in.SnapshotId = aws.String(rr.SnapshotID)
	} else {
		in.ImageId = aws.String(rr.ImageID)
	}
	out, err := m.o.EC2.CreateReplaceRootVolumeTask(ctx, in)
	if err != nil {
		return fmt.Errorf("root restore: CreateReplaceRootVolumeTask for %s: %w", m.o.Identity().InstanceID, err)
	}
	rr.TaskID = aws.ToString(out.ReplaceRootVolumeTask.ReplaceRootVolumeTaskId)
	rr.TaskState = string(out.ReplaceRootVolumeTask.TaskState)
	return nil
}

// FindRootTask looks for the replacement task of checkpoint cp that this
// instance started at or after since: the agent can stop (or the host
// reboot) after CreateReplaceRootVolumeTask returned and before the task
// id reached the intent tag. "" when there is none.
func (m *Manager) FindRootTask(ctx context.Context, cp string, since time.Time) (string, error) {
	id := m.o.Identity().InstanceID
	out, err := m.o.EC2.DescribeReplaceRootVolumeTasks(ctx, &ec2.DescribeReplaceRootVolumeTasksInput{
		Filters: []types.Filter{{Name: aws.String("instance-id"), Values: []string{id}}},
	})
	if err != nil {
		return "", fmt.Errorf("root restore: DescribeReplaceRootVolumeTasks for %s: %w", id, err)
	}
	var found string
	var newest time.Time
	for _, t := range out.ReplaceRootVolumeTasks {
		if tagMap(t.Tags)[TagCheckpoint] != cp {
			continue
		}
		// A minute of slack for the clocks of this host and of EC2; a
		// start time that does not parse does not rule the task out.
		start, err := time.Parse(time.RFC3339, aws.ToString(t.StartTime))
		if err == nil && (start.Before(since.Add(-time.Minute)) || (found != "" && !start.After(newest))) {
			continue
		}
		found, newest = aws.ToString(t.ReplaceRootVolumeTaskId), start
	}
	return found, nil
}

// WaitRootTask polls the replacement task until it ends or timeout.
func (m *Manager) WaitRootTask(ctx context.Context, taskID string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := time.Second
	for {
		out, err := m.o.EC2.DescribeReplaceRootVolumeTasks(ctx, &ec2.DescribeReplaceRootVolumeTasksInput{ReplaceRootVolumeTaskIds: []string{taskID}})
		if err == nil && len(out.ReplaceRootVolumeTasks) == 1 {
			switch st := string(out.ReplaceRootVolumeTasks[0].TaskState); st {
			case TaskSucceeded, TaskFailed, TaskFailedDetached:
				return st, nil
			}
		} else if err != nil && ctx.Err() == nil {
			m.o.Log.Warn("DescribeReplaceRootVolumeTasks " + taskID + ": " + err.Error())
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("root restore: task %s did not end within %s: %w", taskID, timeout, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 10*time.Second)
	}
}
