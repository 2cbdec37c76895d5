package checkpoint

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

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
// snapshot, or else its AMI. It must be complete.
func (m *Manager) PlanRootRestore(ctx context.Context, id string) (*api.RootRestore, error) {
	c, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	rr := &api.RootRestore{Checkpoint: id}
	for _, s := range c.Snapshots {
		if s.Root {
			if s.State != api.CheckpointCompleted {
				return nil, fmt.Errorf("checkpoint %s: root snapshot %s is %s (%s): it can be restored once complete", id, s.SnapshotID, s.State, s.Progress)
			}
			rr.SnapshotID = s.SnapshotID
		}
	}
	if rr.SnapshotID == "" && c.Image != nil {
		if c.Image.State != api.CheckpointCompleted {
			return nil, fmt.Errorf("checkpoint %s: image %s is %s: it can be restored once available", id, c.Image.ImageID, c.Image.State)
		}
		rr.ImageID = c.Image.ImageID
	}
	if rr.SnapshotID == "" && rr.ImageID == "" {
		return nil, fmt.Errorf("checkpoint %s has neither a root volume snapshot nor an AMI (checkpoint.volumes was data?)", id)
	}
	return rr, nil
}

// SetRootIntent writes the intent to the instance's tags.
func (m *Manager) SetRootIntent(ctx context.Context, in RootIntent) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	if len(b) > 256 {
		return fmt.Errorf("root restore intent too long for a tag (%d bytes)", len(b))
	}
	inst := m.o.Identity().InstanceID
	_, err = m.o.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{inst},
		Tags: []types.Tag{{Key: aws.String(TagRestoreIntent), Value: aws.String(string(b))}}})
	if err != nil {
		return fmt.Errorf("root restore: tag %s with the intent: %w", inst, err)
	}
	return nil
}

// RootIntentNow reads the intent from the instance's tags (nil: none).
func (m *Manager) RootIntentNow(ctx context.Context) (*RootIntent, error) {
	inst := m.o.Identity().InstanceID
	out, err := m.o.EC2.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []types.Filter{
		{Name: aws.String("resource-id"), Values: []string{inst}},
		{Name: aws.String("key"), Values: []string{TagRestoreIntent}},
	}})
	if err != nil {
		return nil, fmt.Errorf("root restore: DescribeTags of %s: %w", inst, err)
	}
	if len(out.Tags) == 0 {
		return nil, nil
	}
	var in RootIntent
	if err := json.Unmarshal([]byte(aws.ToString(out.Tags[0].Value)), &in); err != nil {
		return nil, fmt.Errorf("root restore: tag %s of %s is not an intent: %w", TagRestoreIntent, inst, err)
	}
	return &in, nil
}

// ClearRootIntent removes the intent tag.
func (m *Manager) ClearRootIntent(ctx context.Context) error {
	inst := m.o.Identity().InstanceID
	_, err := m.o.EC2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{inst}, Tags: []types.Tag{{Key: aws.String(TagRestoreIntent)}}})
	if err != nil {
		return fmt.Errorf("root restore: remove the intent tag of %s: %w", inst, err)
	}
	return nil
}

// StartRootReplace asks EC2 to replace the root volume; EC2 reboots the
// instance. The replaced volume is kept (DeleteReplacedRootVolume false)
// so the restore can be undone; the operation id is the client token, so
// a repeated call after a crash starts no second task.
func (m *Manager) StartRootReplace(ctx context.Context, opID string, rr *api.RootRestore) error {
	in := &ec2.CreateReplaceRootVolumeTaskInput{
		InstanceId:               aws.String(m.o.Identity().InstanceID),
		DeleteReplacedRootVolume: aws.Bool(false),
		ClientToken:              aws.String(opID),
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
