package testbed

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// rootMapping is the instance's root volume as DescribeInstances (through
// the proxy) reports it; "" when none is attached.
func rootMapping(t *testing.T, c *ec2.Client, instanceID string) (vol string, deleteOnTermination bool) {
	t.Helper()
	out, err := c.DescribeInstances(testCtx(t), &ec2.DescribeInstancesInput{InstanceIds: []string{instanceID}})
	if err != nil {
		t.Fatalf("DescribeInstances: %v", err)
	}
	for _, m := range out.Reservations[0].Instances[0].BlockDeviceMappings {
		if aws.ToString(m.DeviceName) == RootDevice {
			return aws.ToString(m.Ebs.VolumeId), aws.ToBool(m.Ebs.DeleteOnTermination)
		}
	}
	return "", false
}

// rootRecorder plays the reboot of a root replacement as the e2e tests
// do (the root filesystem mount moves to the new root's device) and
// records each replacement. The "boot" lasts until the test's poller has
// seen the task in progress, as a poller of EC2 would during a real
// reboot: no guess of how long a poll takes.
type rootRecorder struct {
	mu   sync.Mutex
	got  []RootReplacement
	seen map[string]chan struct{} // task id → closed once seen in progress
}

// inProgress is the channel closed once task id was seen in progress.
func (r *rootRecorder) inProgress(id string) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch, ok := r.seen[id]
	if !ok {
		ch = make(chan struct{})
		r.seen[id] = ch
	}
	return ch
}

func recordRoot(t *testing.T, inst *Instance, rootMnt string) *rootRecorder {
	rec := &rootRecorder{seen: map[string]chan struct{}{}}
	bed.OnRootReplace(func(r RootReplacement) {
		rec.mu.Lock()
		rec.got = append(rec.got, r)
		rec.mu.Unlock()
		// The boot; EC2 reboots failed replacements too.
		defer func() {
			select {
			case <-rec.inProgress(r.TaskID):
			case <-time.After(30 * time.Second):
				t.Errorf("task %s: no poll saw it in progress during the reboot", r.TaskID)
			}
		}()
		if r.State != rootSucceeded || rootMnt == "" {
			return
		}
		if err := inst.Unmount(rootMnt); err != nil {
			t.Errorf("reboot: unmount the old root: %v", err)
		}
		if err := inst.Mount(r.NewVolumeID, rootMnt); err != nil {
			t.Errorf("reboot: mount the new root: %v", err)
		}
	})
	t.Cleanup(func() { bed.OnRootReplace(nil) })
	return rec
}

// calls returns the replacements seen so far.
func (r *rootRecorder) calls() []RootReplacement {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// waitTask polls a replacement task until it is final and returns the
// states it went through, in order.
func (r *rootRecorder) waitTask(t *testing.T, c *ec2.Client, id string) []string {
	t.Helper()
	ctx := testCtx(t)
	var seen []string
	testutil.WaitFor(t, 30*time.Second, "task "+id+" to be final", func() error {
		out, err := c.DescribeReplaceRootVolumeTasks(ctx, &ec2.DescribeReplaceRootVolumeTasksInput{ReplaceRootVolumeTaskIds: []string{id}})
		if err != nil {
			t.Fatalf("DescribeReplaceRootVolumeTasks %s: %v (states so far %v)", id, err, seen)
		}
		if len(out.ReplaceRootVolumeTasks) != 1 {
			t.Fatalf("DescribeReplaceRootVolumeTasks %s: %d tasks", id, len(out.ReplaceRootVolumeTasks))
		}
		task := out.ReplaceRootVolumeTasks[0]
		st := string(task.TaskState)
		if len(seen) == 0 || seen[len(seen)-1] != st {
			seen = append(seen, st)
		}
		switch task.TaskState {
		case types.ReplaceRootVolumeTaskStateInProgress:
			if ch := r.inProgress(id); !isClosed(ch) {
				close(ch)
			}
		case types.ReplaceRootVolumeTaskStateSucceeded, types.ReplaceRootVolumeTaskStateFailed, types.ReplaceRootVolumeTaskStateFailedDetached:
			if task.CompleteTime == nil {
				t.Errorf("final task %s has no CompleteTime", id)
			}
			return nil
		}
		return fmt.Errorf("states so far %v", seen)
	})
	return seen
}

// waitTask is rootRecorder.waitTask for a task no callback plays.
func waitTask(t *testing.T, c *ec2.Client, id string) []string {
	t.Helper()
	return (&rootRecorder{seen: map[string]chan struct{}{}}).waitTask(t, c, id)
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Root replacement from a snapshot on a data-plane instance: the task
// goes pending → in-progress → succeeded, the instance's root is the new
// volume in moto and behind the by-id link, and it holds the snapshot's
// content.
func TestRootReplaceFromSnapshot(t *testing.T) {
	ctx := testCtx(t)
	rootMnt := filepath.Join(t.TempDir(), "root")
	inst := newInstance(t, InstanceOptions{DataPlane: true, ImageMiB: 32})
	c := viaProxy()
	if err := inst.Mount(inst.RootVolumeID, rootMnt); err != nil {
		t.Fatal(err)
	}
	release := filepath.Join(rootMnt, "release")
	writeFile(t, release, "A")
	snap, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(inst.RootVolumeID)})
	if err != nil {
		t.Fatalf("CreateSnapshot: %v", err)
	}
	writeFile(t, release, "B")
	rec := recordRoot(t, inst, rootMnt)

	in := &ec2.CreateReplaceRootVolumeTaskInput{InstanceId: aws.String(inst.Doc.InstanceID), SnapshotId: snap.SnapshotId, ClientToken: aws.String("tok-" + inst.Doc.InstanceID)}
	out, err := c.CreateReplaceRootVolumeTask(ctx, in)
	if err != nil {
		t.Fatalf("CreateReplaceRootVolumeTask: %v", err)
	}
	task := out.ReplaceRootVolumeTask
	id := aws.ToString(task.ReplaceRootVolumeTaskId)
	if !strings.HasPrefix(id, "replacevol-") || task.TaskState != types.ReplaceRootVolumeTaskStatePending ||
		aws.ToString(task.SnapshotId) != aws.ToString(snap.SnapshotId) || aws.ToString(task.InstanceId) != inst.Doc.InstanceID ||
		task.StartTime == nil || task.DeleteReplacedRootVolume == nil || *task.DeleteReplacedRootVolume {
		t.Fatalf("task %+v", task)
	}
	again, err := c.CreateReplaceRootVolumeTask(ctx, in)
	if err != nil || aws.ToString(again.ReplaceRootVolumeTask.ReplaceRootVolumeTaskId) != id {
		t.Fatalf("same ClientToken again: %v, task %v, want %s", err, again, id)
	}

	if states := rec.waitTask(t, c, id); !slices.Equal(states, []string{"pending", "in-progress", "succeeded"}) {
		t.Fatalf("task states %v, want pending, in-progress, succeeded (error: %v)", states, bed.RootReplaceError(id))
	}
	if err := bed.RootReplaceError(id); err != nil {
		t.Errorf("task error: %v", err)
	}
	got := rec.calls()
	if len(got) != 1 {
		t.Fatalf("callback ran %d times", len(got))
	}
	r := got[0]
	if r.TaskID != id || r.InstanceID != inst.Doc.InstanceID || r.SnapshotID != aws.ToString(snap.SnapshotId) ||
		r.ImageID != "" || r.OldVolumeID != inst.RootVolumeID || r.NewVolumeID == "" || r.NewVolumeID == inst.RootVolumeID || r.State != "succeeded" {
		t.Fatalf("callback got %+v", r)
	}
	if vol, dot := rootMapping(t, c, inst.Doc.InstanceID); vol != r.NewVolumeID || !dot {
		t.Errorf("DescribeInstances root %s (DeleteOnTermination %v), want %s (true)", vol, dot, r.NewVolumeID)
	}
	vols, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{inst.RootVolumeID, r.NewVolumeID}})
	if err != nil {
		t.Fatalf("DescribeVolumes: %v", err)
	}
	for _, v := range vols.Volumes {
		want := types.VolumeStateInUse
		if aws.ToString(v.VolumeId) == inst.RootVolumeID {
			want = types.VolumeStateAvailable
		}
		if v.State != want {
			t.Errorf("volume %s is %s, want %s", aws.ToString(v.VolumeId), v.State, want)
		}
	}
	dev, err := linkTarget(inst, r.NewVolumeID)
	if err != nil {
		t.Fatalf("root by-id link: %v", err)
	}
	if bf := backingFile(t, dev); bf != bed.VolumeImage(r.NewVolumeID) {
		t.Errorf("the root link's device reads %s, want %s", bf, bed.VolumeImage(r.NewVolumeID))
	}
	if _, err := linkTarget(inst, inst.RootVolumeID); err == nil {
		t.Error("the old root's by-id link is still there")
	}
	if got := readFile(t, release); got != "A" {
		t.Errorf("the new root has %q, want the snapshot's %q", got, "A")
	}
	list, err := c.DescribeReplaceRootVolumeTasks(ctx, &ec2.DescribeReplaceRootVolumeTasksInput{
		Filters: []types.Filter{{Name: aws.String("instance-id"), Values: []string{inst.Doc.InstanceID}}},
	})
	if err != nil || len(list.ReplaceRootVolumeTasks) != 1 || aws.ToString(list.ReplaceRootVolumeTasks[0].ReplaceRootVolumeTaskId) != id {
		t.Errorf("DescribeReplaceRootVolumeTasks by instance-id: %v %+v", err, list)
	}
}

// Root replacement from an image, deleting the replaced root.
func TestRootReplaceFromImage(t *testing.T) {
	ctx := testCtx(t)
	rootMnt := filepath.Join(t.TempDir(), "root")
	inst := newInstance(t, InstanceOptions{DataPlane: true, ImageMiB: 32})
	c := viaProxy()
	if err := inst.Mount(inst.RootVolumeID, rootMnt); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(rootMnt, "release"), "image")
	img, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(inst.Doc.InstanceID), Name: aws.String("root-" + inst.Doc.InstanceID), NoReboot: aws.Bool(true)})
	if err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	writeFile(t, filepath.Join(rootMnt, "release"), "later")
	rec := recordRoot(t, inst, rootMnt)
	out, err := c.CreateReplaceRootVolumeTask(ctx, &ec2.CreateReplaceRootVolumeTaskInput{
		InstanceId: aws.String(inst.Doc.InstanceID), ImageId: img.ImageId, DeleteReplacedRootVolume: aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("CreateReplaceRootVolumeTask: %v", err)
	}
	id := aws.ToString(out.ReplaceRootVolumeTask.ReplaceRootVolumeTaskId)
	if aws.ToString(out.ReplaceRootVolumeTask.ImageId) != aws.ToString(img.ImageId) {
		t.Errorf("task image %q", aws.ToString(out.ReplaceRootVolumeTask.ImageId))
	}
	if states := rec.waitTask(t, c, id); states[len(states)-1] != "succeeded" {
		t.Fatalf("states %v (error %v)", states, bed.RootReplaceError(id))
	}
	r := rec.calls()[0]
	if r.ImageID != aws.ToString(img.ImageId) {
		t.Errorf("callback image %q", r.ImageID)
	}
	if got := readFile(t, filepath.Join(rootMnt, "release")); got != "image" {
		t.Errorf("new root has %q, want the image's %q", got, "image")
	}
	_, err = c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{inst.RootVolumeID}})
	if errCode(err) != "InvalidVolume.NotFound" {
		t.Errorf("the replaced root with DeleteReplacedRootVolume: %v, want InvalidVolume.NotFound", err)
	}
	if bed.VolumeImage(inst.RootVolumeID) != "" {
		t.Error("the deleted root's image is still there")
	}
}

// Forced failures: failed keeps the old root; failed-detached leaves the
// instance without one, and the replacement volume goes in both cases.
func TestRootReplaceFailures(t *testing.T) {
	ctx := testCtx(t)
	inst := newInstance(t, InstanceOptions{DataPlane: true, ImageMiB: 16})
	c := viaProxy()
	snap, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(inst.RootVolumeID)})
	if err != nil {
		t.Fatalf("CreateSnapshot: %v", err)
	}
	rec := recordRoot(t, inst, "")
	for n, state := range []string{"failed", "failed-detached"} {
		bed.FailNextRootReplace(state)
		out, err := c.CreateReplaceRootVolumeTask(ctx, &ec2.CreateReplaceRootVolumeTaskInput{InstanceId: aws.String(inst.Doc.InstanceID), SnapshotId: snap.SnapshotId})
		if err != nil {
			t.Fatalf("CreateReplaceRootVolumeTask: %v", err)
		}
		id := aws.ToString(out.ReplaceRootVolumeTask.ReplaceRootVolumeTaskId)
		// A failing task passes through failing (or failing-detached)
		// before it ends (EC2 User Guide, replace-root.html).
		failing := strings.Replace(state, "failed", "failing", 1)
		if states := rec.waitTask(t, c, id); !slices.Equal(states, []string{"pending", "in-progress", failing, state}) {
			t.Errorf("states %v, want pending, in-progress, %s, %s", states, failing, state)
		}
		r := rec.calls()[n]
		if r.State != state {
			t.Errorf("callback told %q, want %q", r.State, state)
		}
		if _, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{r.NewVolumeID}}); errCode(err) != "InvalidVolume.NotFound" {
			t.Errorf("replacement volume after %s: %v, want it deleted", state, err)
		}
		vol, _ := rootMapping(t, c, inst.Doc.InstanceID)
		_, linkErr := linkTarget(inst, inst.RootVolumeID)
		switch state {
		case "failed":
			if vol != inst.RootVolumeID || linkErr != nil {
				t.Errorf("after failed: root %q (link error %v), want %s kept", vol, linkErr, inst.RootVolumeID)
			}
		case "failed-detached":
			if vol != "" || linkErr == nil {
				t.Errorf("after failed-detached: root %q (link error %v), want none", vol, linkErr)
			}
		}
	}
}
