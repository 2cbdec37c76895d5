package checkpoint_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// foreignSnapshot makes a snapshot of the instance's data volume straight
// in moto with the given tags (none, another instance's, another app's).
func (f *fixture) foreignSnapshot(tags map[string]string) string {
	f.t.Helper()
	in := &ec2.CreateSnapshotInput{VolumeId: aws.String(f.inst.DataVolumeID)}
	if len(tags) > 0 {
		var ts []types.Tag
		for k, v := range tags {
			ts = append(ts, types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: ts}}
	}
	out, err := f.bed.EC2.CreateSnapshot(context.Background(), in)
	if err != nil {
		f.t.Fatal(err)
	}
	return aws.ToString(out.SnapshotId)
}

func (f *fixture) snapshotExists(id string) bool {
	_, err := f.bed.EC2.DescribeSnapshots(context.Background(), &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
	return err == nil
}

// Retention over 30+ checkpoints with foreign resources around: only the
// agent's own, for this instance and app, are pruned; the newest, the
// last good and the pinned ones stay; AMIs go with their snapshots.
func TestRetentionPrunesOnlyOursAndKeepsProtected(t *testing.T) {
	f := newFixture(t, false, nil)
	f.cfg.Retention.KeepCheckpoints = 5
	var ids []string
	ami := f.create(api.KindAMI) // the oldest: an AMI with its snapshots
	f.waitState(ami.ID, api.CheckpointCompleted)
	for range 31 {
		ids = append(ids, f.create(api.KindEBS).ID)
	}
	pinned, lastGood := ids[3], ids[7]
	if _, err := f.m.SetPinned(context.Background(), pinned, true); err != nil {
		t.Fatal(err)
	}
	f.protected[lastGood] = "last good deployment's"
	foreign := map[string]string{
		"untagged":   f.foreignSnapshot(nil),
		"other-inst": f.foreignSnapshot(map[string]string{checkpoint.TagManaged: "true", checkpoint.TagApp: f.cfg.Application, checkpoint.TagInstance: "i-0000000000000000f", checkpoint.TagCheckpoint: "cp-foreign1", checkpoint.TagKind: "ebs"}),
		"other-app":  f.foreignSnapshot(map[string]string{checkpoint.TagManaged: "true", checkpoint.TagApp: "someone-else", checkpoint.TagInstance: f.inst.Doc.InstanceID, checkpoint.TagCheckpoint: "cp-foreign2", checkpoint.TagKind: "ebs"}),
	}
	// Let the newest complete: pending ones are never pruned.
	for _, id := range ids {
		f.waitState(id, api.CheckpointCompleted)
	}
	amiSnaps := f.snapshotsTagged(checkpoint.TagCheckpoint, ami.ID)

	dry, err := f.m.Prune(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := f.m.Prune(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Errors) > 0 {
		t.Fatalf("prune errors: %v", rep.Errors)
	}
	slices.Sort(dry.Deleted)
	deleted := slices.Clone(rep.Deleted)
	slices.Sort(deleted)
	if !slices.Equal(dry.Deleted, deleted) {
		t.Errorf("dry run said %v, prune did %v", dry.Deleted, deleted)
	}
	// Newest first: ids[26..30] are the newest 5.
	want := map[string]bool{pinned: true, lastGood: true}
	for _, id := range ids[26:] {
		want[id] = true
	}
	list, err := f.m.Catalogue(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, c := range list.Checkpoints {
		left = append(left, c.ID)
		if !want[c.ID] {
			t.Errorf("checkpoint %s survived the prune", c.ID)
		}
	}
	if len(left) != len(want) {
		t.Errorf("%d left (%v), want %d", len(left), left, len(want))
	}
	if rep.Kept[pinned] != "pinned" || rep.Kept[lastGood] != "last good deployment's" {
		t.Errorf("kept reasons: %v", rep.Kept)
	}
	for name, id := range foreign {
		if !f.snapshotExists(id) {
			t.Errorf("foreign snapshot (%s) %s was deleted", name, id)
		}
	}
	out, err := f.bed.EC2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{ami.Image.ImageID}})
	if err == nil && len(out.Images) > 0 && out.Images[0].State != types.ImageStateDeregistered {
		t.Errorf("the old AMI %s is still registered", ami.Image.ImageID)
	}
	if len(amiSnaps) == 0 {
		t.Fatal("the AMI had no tagged snapshots to check")
	}
	for _, s := range amiSnaps {
		if f.snapshotExists(aws.ToString(s.SnapshotId)) {
			t.Errorf("the AMI's snapshot %s was left behind", aws.ToString(s.SnapshotId))
		}
	}
	if err := f.m.Delete(context.Background(), pinned); err == nil || !strings.Contains(err.Error(), "pinned") {
		t.Errorf("deleting a pinned checkpoint: %v", err)
	}
}

// One failed delete does not stop the rest, and is reported.
func TestPruneGoesOnAfterAFailedDelete(t *testing.T) {
	f := newFixture(t, false, nil)
	f.cfg.Retention.KeepCheckpoints = 1
	var ids []string
	for range 4 {
		ids = append(ids, f.create(api.KindEBS).ID)
	}
	for _, id := range ids {
		f.waitState(id, api.CheckpointCompleted)
	}
	f.bed.AWS.AddFault(testbed.Fault{Service: "ec2", Action: "DeleteSnapshot", Kind: testbed.FaultErrorCode, Code: "UnauthorizedOperation", Status: 403, Count: 1})
	rep, err := f.m.Prune(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0], "UnauthorizedOperation") || len(rep.Deleted) != 2 {
		t.Errorf("report: deleted %v errors %v", rep.Deleted, rep.Errors)
	}
}

// frozenFixture mounts the instance's data volume and names it in
// checkpoint.freeze; the mount is never left frozen after the test.
func frozenFixture(t *testing.T) (*fixture, string) {
	t.Helper()
	f := newFixture(t, true, nil)
	mnt := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(mnt, 0o755)
	if err := f.inst.Mount(f.inst.DataVolumeID, mnt); err != nil {
		t.Fatal(err)
	}
	// Cleanups run last in, first out: thaw, then unmount.
	t.Cleanup(func() { f.inst.Unmount(mnt) })
	t.Cleanup(func() { exec.Command("fsfreeze", "-u", mnt).Run() })
	f.cfg.Checkpoint.Freeze = []string{mnt}
	return f, mnt
}

// freeze holds writes to a data filesystem only around the API call, and
// thaws it also when the call fails.
func TestFreezeOnlyAroundTheCallAndAlwaysThawed(t *testing.T) {
	f, mnt := frozenFixture(t)
	f.cfg.Checkpoint.CreateTimeout = 30 * time.Second

	// The call is held at the proxy until the test lets it go. Once the
	// request has reached the proxy the freeze is on (it is taken before
	// the call): a write started then blocks in the kernel, and stays
	// blocked until the call returns and the filesystem thaws.
	hold := make(chan struct{})
	letGo := sync.OnceFunc(func() { close(hold) })
	defer letGo()
	f.bed.AWS.AddFault(testbed.Fault{Service: "ec2", Action: "CreateSnapshots", Kind: testbed.FaultHold, Release: hold, Count: 1})
	f.bed.AWS.ResetCounts()
	created := make(chan struct{})
	go func() {
		defer close(created)
		f.create(api.KindEBS)
	}()
	waitCalled(t, f, "CreateSnapshots")
	wrote := make(chan struct{})
	writer := make(chan int, 1)
	go func() {
		runtime.LockOSThread() // the thread that blocks is this goroutine's
		defer runtime.UnlockOSThread()
		writer <- unix.Gettid()
		writeSynced(t, filepath.Join(mnt, "during"))
		close(wrote)
	}()
	tid := <-writer
	testutil.WaitFor(t, 30*time.Second, "the write to block on the frozen filesystem", func() error {
		select {
		case <-wrote:
			return testutil.Stop(errors.New("a write went through while the filesystem should have been frozen"))
		default:
		}
		if st := threadState(t, tid); st != "D" {
			return fmt.Errorf("the writing thread is in state %s, not blocked in the kernel (D)", st)
		}
		return nil
	})
	if err := refreeze(mnt); !errors.Is(err, unix.EBUSY) {
		t.Errorf("a second FIFREEZE of %s while the call is held: %v, want EBUSY (already frozen)", mnt, err)
	}
	select {
	case <-created:
		t.Errorf("the checkpoint returned while its call was held")
	default:
	}
	letGo()
	<-created
	select {
	case <-wrote:
	case <-time.After(10 * time.Second):
		exec.Command("fsfreeze", "-u", mnt).Run()
		t.Fatal("the filesystem stayed frozen after the checkpoint")
	}

	// A failing call (persistent error) still thaws.
	f.bed.AWS.AddFault(testbed.Fault{Service: "ec2", Action: "CreateSnapshots", Kind: testbed.FaultErrorCode, Code: "UnauthorizedOperation", Status: 403})
	if _, err := f.m.Create(context.Background(), checkpoint.Meta{Kinds: []api.CheckpointKind{api.KindEBS}}); err == nil {
		t.Fatal("create succeeded through a persistent error")
	}
	done := make(chan struct{})
	go func() { writeSynced(t, filepath.Join(mnt, "after")); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		exec.Command("fsfreeze", "-u", mnt).Run()
		t.Fatal("the filesystem stayed frozen after a failed checkpoint")
	}
}

// waitCalled waits until the proxy has seen an EC2 call of action.
func waitCalled(t *testing.T, f *fixture, action string) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, action+" to reach the proxy", func() error {
		if f.bed.AWS.Count("ec2", action) == 0 {
			return errors.New("not seen yet")
		}
		return nil
	})
}

// threadState is the state letter of thread tid of this process (R, S,
// D, ...), from /proc/self/task/<tid>/stat.
func threadState(t *testing.T, tid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name, in parentheses, may hold spaces: the state is
	// the first field after the last ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) == 0 {
		t.Fatalf("thread %d: stat %q", tid, b)
	}
	return f[0]
}

// refreeze tries to freeze mnt. On a frozen filesystem the kernel
// answers EBUSY; a freeze that succeeds (the filesystem was not frozen)
// is undone at once.
func refreeze(mnt string) error {
	fh, err := os.Open(mnt)
	if err != nil {
		return err
	}
	defer fh.Close()
	const fifreeze, fithaw = 0xC0045877, 0xC0045878 // _IOWR('X', 119/120, int)
	if err := unix.IoctlSetInt(int(fh.Fd()), fifreeze, 0); err != nil {
		return err
	}
	unix.IoctlSetInt(int(fh.Fd()), fithaw, 0)
	return nil
}

func writeSynced(t *testing.T, path string) {
	fh, err := os.Create(path)
	if err != nil {
		t.Error(err)
		return
	}
	fh.WriteString("x")
	fh.Sync()
	fh.Close()
}

// The freeze covers each create call, not the backoff between attempts,
// and a call that outlives checkpoint.create_timeout is thawed too.
func TestFreezeIsNotHeldAcrossRetriesOrPastTheTimeout(t *testing.T) {
	f, mnt := frozenFixture(t)
	f.cfg.Checkpoint.CreateTimeout = 30 * time.Second

	// Throttled once: the retry waits at least a second, unfrozen.
	f.bed.AWS.AddFault(testbed.Fault{Service: "ec2", Action: "CreateSnapshots", Kind: testbed.FaultErrorCode, Code: "RequestLimitExceeded", Status: 503, Count: 1})
	f.bed.AWS.ResetCounts()
	created := make(chan struct{})
	go func() {
		defer close(created)
		f.create(api.KindEBS)
	}()
	waitCalled(t, f, "CreateSnapshots")
	writeSynced(t, filepath.Join(mnt, "between-attempts"))
	if n := f.bed.AWS.Count("ec2", "CreateSnapshots"); n != 1 {
		t.Errorf("the write waited for attempt %d: the freeze was held across the backoff", n)
	}
	<-created

	// Held past create_timeout: the checkpoint fails and the mount thaws.
	f.cfg.Checkpoint.CreateTimeout = time.Second
	f.bed.AWS.AddFault(testbed.Fault{Service: "ec2", Action: "CreateSnapshots", Kind: testbed.FaultLatency, Latency: 4 * time.Second, Count: 1})
	if _, err := f.m.Create(context.Background(), checkpoint.Meta{Kinds: []api.CheckpointKind{api.KindEBS}}); err == nil {
		t.Fatal("create succeeded past its timeout")
	}
	done := make(chan struct{})
	go func() { writeSynced(t, filepath.Join(mnt, "after-timeout")); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the filesystem stayed frozen after a timed-out checkpoint")
	}
}

// Forged checkpoints (issue 17, item 7): snapshots of another instance's
// volume, an AMI of another instance and a volume of another instance,
// all tagged rollback-agent:* as this host's (one of them with the id of
// a real checkpoint) are neither listed nor pruned, and do not push this
// host's real rollback points out of retention. Tags are not proof: the
// agent's ledger is.
func TestForgedCheckpointsAreIgnoredAndNeverPruned(t *testing.T) {
	f := newFixture(t, false, nil)
	f.cfg.Retention.KeepCheckpoints = 2
	ctx := context.Background()
	var real []string
	for range 3 {
		c := f.create(api.KindEBS)
		f.waitState(c.ID, api.CheckpointCompleted)
		real = append(real, c.ID)
	}
	other, err := f.bed.NewInstance(ctx, testbed.InstanceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	ours := func(cp, kind string, created time.Time) []types.Tag {
		var ts []types.Tag
		for k, v := range map[string]string{checkpoint.TagManaged: "true", checkpoint.TagApp: f.cfg.Application, checkpoint.TagInstance: f.inst.Doc.InstanceID,
			checkpoint.TagCheckpoint: cp, checkpoint.TagKind: kind, checkpoint.TagCreated: created.UTC().Format(time.RFC3339Nano)} {
			ts = append(ts, types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		return ts
	}
	future := time.Now().Add(time.Hour) // newer than every real one
	var forged []string
	for i, cp := range []string{"cp-f0f0f0f0f0f0", "cp-f1f1f1f1f1f1", real[0]} {
		out, err := f.bed.EC2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(other.DataVolumeID),
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: ours(cp, "ebs", future.Add(time.Duration(i)*time.Minute))}}})
		if err != nil {
			t.Fatal(err)
		}
		forged = append(forged, aws.ToString(out.SnapshotId))
	}
	img, err := f.bed.EC2.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(other.Doc.InstanceID), Name: aws.String("forged-" + other.Doc.InstanceID), NoReboot: aws.Bool(true),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeImage, Tags: ours(real[1], "ami", future)}}})
	if err != nil {
		t.Fatal(err)
	}
	replacedBy := append(ours(real[2], "ebs", time.Now().Add(-100*24*time.Hour)), types.Tag{Key: aws.String(checkpoint.TagReplacedBy), Value: aws.String("vol-0123")})
	if _, err := f.bed.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{other.DataVolumeID}, Tags: replacedBy}); err != nil {
		t.Fatal(err)
	}
	list, err := f.m.Catalogue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list.Checkpoints {
		for _, s := range c.Snapshots {
			if slices.Contains(forged, s.SnapshotID) {
				t.Errorf("forged snapshot %s catalogued as checkpoint %s", s.SnapshotID, c.ID)
			}
		}
		if c.Image != nil && c.Image.ImageID == aws.ToString(img.ImageId) {
			t.Errorf("forged image catalogued as checkpoint %s", c.ID)
		}
	}
	for _, v := range list.ReplacedVolumes {
		if v.VolumeID == other.DataVolumeID {
			t.Errorf("another instance's volume listed as replaced: %+v", v)
		}
	}
	f.cfg.Retention.MaxAge = 24 * time.Hour
	rep, err := f.m.Prune(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Deleted, []string{real[0]}) {
		t.Errorf("prune deleted %v, want only the oldest real checkpoint %s (errors %v)", rep.Deleted, real[0], rep.Errors)
	}
	for _, id := range forged {
		if !f.snapshotExists(id) {
			t.Errorf("forged snapshot %s was deleted", id)
		}
	}
	if out, err := f.bed.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{other.DataVolumeID}}); err != nil || len(out.Volumes) != 1 {
		t.Errorf("another instance's volume, tagged replaced-by, was deleted: %v", err)
	}
	if out, err := f.bed.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(img.ImageId)}}); err != nil || len(out.Images) != 1 {
		t.Errorf("the forged image was deregistered: %v", err)
	}
	for _, id := range real[1:] {
		if len(f.snapshotsTagged(checkpoint.TagCheckpoint, id)) != 2 {
			t.Errorf("real checkpoint %s lost its snapshots", id)
		}
	}
}
