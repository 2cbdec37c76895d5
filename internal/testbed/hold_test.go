package testbed

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

func progressOf(t *testing.T, s types.Snapshot) int {
	t.Helper()
	p, err := strconv.Atoi(strings.TrimSuffix(aws.ToString(s.Progress), "%"))
	if err != nil {
		t.Fatalf("snapshot %s progress %q: %v", aws.ToString(s.SnapshotId), aws.ToString(s.Progress), err)
	}
	return p
}

// describeByStatus lists the snapshots of ids that the status filter
// returns, through the proxy.
func describeByStatus(t *testing.T, c *ec2.Client, status string, ids []string) []types.Snapshot {
	t.Helper()
	out, err := c.DescribeSnapshots(testCtx(t), &ec2.DescribeSnapshotsInput{
		SnapshotIds: ids, Filters: []types.Filter{{Name: aws.String("status"), Values: []string{status}}},
	})
	if err != nil {
		t.Fatalf("DescribeSnapshots status=%s: %v", status, err)
	}
	return out.Snapshots
}

// Held snapshots are pending with a growing progress, the status filter
// agrees with the rewritten state, and the SDK's waiter sees them
// complete once the hold is over.
func TestHoldSnapshots(t *testing.T) {
	ctx := testCtx(t)
	inst := newInstance(t, InstanceOptions{})
	c := viaProxy()
	release := bed.HoldSnapshots(2 * time.Second)
	defer release()
	out, err := c.CreateSnapshots(ctx, &ec2.CreateSnapshotsInput{
		InstanceSpecification: &types.InstanceSpecification{InstanceId: aws.String(inst.Doc.InstanceID)},
		TagSpecifications:     []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: []types.Tag{tag("held", inst.Doc.InstanceID)}}},
	})
	if err != nil {
		t.Fatalf("CreateSnapshots: %v", err)
	}
	var ids []string
	for _, s := range out.Snapshots {
		ids = append(ids, aws.ToString(s.SnapshotId))
		if s.State != types.SnapshotStatePending {
			t.Errorf("CreateSnapshots says %s is %q, want pending", aws.ToString(s.SnapshotId), s.State)
		}
	}
	if len(ids) != 2 {
		t.Fatalf("CreateSnapshots made %d snapshots", len(ids))
	}

	first := describeByStatus(t, c, "pending", ids)
	if len(first) != 2 {
		t.Fatalf("status=pending finds %d of the held snapshots, want 2", len(first))
	}
	if n := len(describeByStatus(t, c, "completed", ids)); n != 0 {
		t.Errorf("status=completed finds %d held snapshots", n)
	}
	p1, p2 := progressOf(t, first[0]), 0
	testutil.WaitFor(t, 10*time.Second, "the held snapshots' progress to grow", func() error {
		second := describeByStatus(t, c, "pending", ids)
		if len(second) != 2 {
			t.Fatalf("later, status=pending finds %d snapshots, want 2 (progress was %d%%)", len(second), p2)
		}
		if p2 = progressOf(t, second[0]); p2 <= p1 {
			return fmt.Errorf("progress still %d%%", p2)
		}
		return nil
	})
	if p2 >= 100 {
		t.Errorf("progress went %d%% → %d%%, want growth below 100%%", p1, p2)
	}

	w := ec2.NewSnapshotCompletedWaiter(c, func(o *ec2.SnapshotCompletedWaiterOptions) {
		o.MinDelay, o.MaxDelay = 200*time.Millisecond, 400*time.Millisecond
	})
	start := time.Now()
	if err := w.Wait(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: ids}, 20*time.Second); err != nil {
		t.Fatalf("SnapshotCompleted waiter: %v", err)
	}
	if el := time.Since(start); el < 500*time.Millisecond {
		t.Errorf("the waiter returned after %v, before the 2s hold was over", el)
	}
	done := describeByStatus(t, c, "completed", ids)
	if len(done) != 2 || progressOf(t, done[0]) != 100 {
		t.Errorf("after the hold status=completed finds %d snapshots (%+v)", len(done), done)
	}
}

// release completes held snapshots at once and ends the hold; HoldImages
// keeps images pending (state filter included) until released.
func TestHoldReleaseAndImages(t *testing.T) {
	ctx := testCtx(t)
	inst := newInstance(t, InstanceOptions{})
	c := viaProxy()
	relSnaps := bed.HoldSnapshots(time.Hour)
	relImages := bed.HoldImages(time.Hour)
	snap, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(inst.DataVolumeID)})
	if err != nil {
		t.Fatalf("CreateSnapshot: %v", err)
	}
	if snap.State != types.SnapshotStatePending {
		t.Errorf("CreateSnapshot under a hold: %q, want pending", snap.State)
	}
	img, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(inst.Doc.InstanceID), Name: aws.String("held-" + inst.Doc.InstanceID), NoReboot: aws.Bool(true)})
	if err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	imageIDs := []string{aws.ToString(img.ImageId)}
	pending, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: imageIDs, Filters: []types.Filter{{Name: aws.String("state"), Values: []string{"pending"}}}})
	if err != nil || len(pending.Images) != 1 || pending.Images[0].State != types.ImageStatePending {
		t.Fatalf("DescribeImages state=pending: %v %+v", err, pending)
	}
	imgSnap := aws.ToString(pending.Images[0].BlockDeviceMappings[0].Ebs.SnapshotId)
	if n := len(describeByStatus(t, c, "pending", []string{aws.ToString(snap.SnapshotId), imgSnap})); n != 2 {
		t.Errorf("%d of the snapshot and the image's snapshot are pending, want 2", n)
	}

	relSnaps()
	relImages()
	if n := len(describeByStatus(t, c, "completed", []string{aws.ToString(snap.SnapshotId), imgSnap})); n != 2 {
		t.Errorf("after release %d snapshots are completed, want 2", n)
	}
	w := ec2.NewImageAvailableWaiter(c, func(o *ec2.ImageAvailableWaiterOptions) { o.MinDelay = 100 * time.Millisecond })
	if err := w.Wait(ctx, &ec2.DescribeImagesInput{ImageIds: imageIDs}, 5*time.Second); err != nil {
		t.Fatalf("ImageAvailable after release: %v", err)
	}
	later, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(inst.DataVolumeID)})
	if err != nil || later.State != types.SnapshotStateCompleted {
		t.Errorf("CreateSnapshot after release: %v, state %q, want completed", err, later.State)
	}
}
