package testbed

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// The rules of motogaps.go's awsRules table, each against the bed (and,
// where moto could have caught up, against moto directly: when moto
// gains the rule, the test says so).

// withRules puts r in force for the test.
func withRules(t *testing.T, r Rules) {
	t.Cleanup(bed.SetRules(r))
}

// Eventual consistency: for the window after a create, a call naming the
// new id answers its NotFound and filtered lists leave it out; then it is
// there. moto is read-after-write consistent.
func TestRuleEventualConsistency(t *testing.T) {
	ctx := testCtx(t)
	withRules(t, Rules{ConsistencyWindow: 2 * time.Second, UdevDelay: bed.Rules().UdevDelay})
	inst := newInstance(t, InstanceOptions{})
	c := viaProxy(func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	tagged := "cons-" + inst.Doc.InstanceID
	out, err := c.CreateSnapshots(ctx, &ec2.CreateSnapshotsInput{
		InstanceSpecification: &types.InstanceSpecification{InstanceId: aws.String(inst.Doc.InstanceID)},
		TagSpecifications:     []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: []types.Tag{tag("cons", tagged)}}},
	})
	if err != nil {
		t.Fatalf("CreateSnapshots: %v", err)
	}
	id := aws.ToString(out.Snapshots[0].SnapshotId)
	if _, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}}); errCode(err) != "InvalidSnapshot.NotFound" {
		t.Errorf("DescribeSnapshots of a snapshot made a moment ago: %v, want InvalidSnapshot.NotFound", err)
	}
	if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []types.Tag{tag("k", "v")}}); errCode(err) != "InvalidSnapshot.NotFound" {
		t.Errorf("CreateTags on it: %v, want InvalidSnapshot.NotFound", err)
	}
	if _, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{SnapshotId: aws.String(id), AvailabilityZone: aws.String(inst.Doc.AvailabilityZone)}); errCode(err) != "InvalidSnapshot.NotFound" {
		t.Errorf("CreateVolume from it: %v, want InvalidSnapshot.NotFound", err)
	}
	listed, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{Filters: []types.Filter{{Name: aws.String("tag:cons"), Values: []string{tagged}}}})
	if err != nil || len(listed.Snapshots) != 0 {
		t.Errorf("filtered list right after the create: %v, %d snapshots, want none yet", err, len(listDescribe(listed)))
	}
	// moto itself knows it at once.
	if _, err := bed.EC2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}}); err != nil {
		t.Errorf("moto does not know the snapshot: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, "the snapshots to become visible", func() error {
		l, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{Filters: []types.Filter{{Name: aws.String("tag:cons"), Values: []string{tagged}}}})
		if err != nil || len(l.Snapshots) != 2 {
			return fmt.Errorf("%v, %d listed", err, len(listDescribe(l)))
		}
		return nil
	})
	vol, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{Size: aws.Int32(1), AvailabilityZone: aws.String(inst.Doc.AvailabilityZone)})
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	if _, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{aws.ToString(vol.VolumeId)}}); errCode(err) != "InvalidVolume.NotFound" {
		t.Errorf("DescribeVolumes of a volume made a moment ago: %v, want InvalidVolume.NotFound", err)
	}
	img, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(inst.Doc.InstanceID), Name: aws.String("cons-" + inst.Doc.InstanceID), NoReboot: aws.Bool(true)})
	if err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	if _, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(img.ImageId)}}); errCode(err) != "InvalidAMIID.NotFound" {
		t.Errorf("DescribeImages of an image made a moment ago: %v, want InvalidAMIID.NotFound", err)
	}
}

func listDescribe(o *ec2.DescribeSnapshotsOutput) []types.Snapshot {
	if o == nil {
		return nil
	}
	return o.Snapshots
}

// At most 5 pending snapshots per volume (1 for st1/sc1), counting those
// of other tools and those deleted while pending. moto has no limit.
func TestRuleConcurrentSnapshots(t *testing.T) {
	ctx := testCtx(t)
	inst := newInstance(t, InstanceOptions{})
	c := viaProxy(func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	foreign, err := bed.ForeignSnapshots(ctx, inst.DataVolumeID, 4, time.Hour, map[string]string{"Name": "backup"})
	if err != nil {
		t.Fatal(err)
	}
	release := bed.HoldSnapshots(time.Hour)
	defer release()
	one, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(inst.DataVolumeID)})
	if err != nil {
		t.Fatalf("the fifth pending snapshot: %v", err)
	}
	_, err = c.CreateSnapshots(ctx, &ec2.CreateSnapshotsInput{InstanceSpecification: &types.InstanceSpecification{InstanceId: aws.String(inst.Doc.InstanceID)}})
	if errCode(err) != "ConcurrentSnapshotLimitExceeded" {
		t.Errorf("a sixth (CreateSnapshots): %v, want ConcurrentSnapshotLimitExceeded", err)
	}
	_, err = c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(inst.Doc.InstanceID), Name: aws.String("lim-" + inst.Doc.InstanceID), NoReboot: aws.Bool(true)})
	if errCode(err) != "ConcurrentSnapshotLimitExceeded" {
		t.Errorf("a sixth (CreateImage): %v, want ConcurrentSnapshotLimitExceeded", err)
	}
	// Deleting a pending snapshot does not give its room back.
	if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: one.SnapshotId}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(inst.DataVolumeID)}); errCode(err) != "ConcurrentSnapshotLimitExceeded" {
		t.Errorf("after deleting a pending one: %v, want ConcurrentSnapshotLimitExceeded still", err)
	}
	// The root volume has room of its own.
	if _, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(inst.RootVolumeID)}); err != nil {
		t.Errorf("a snapshot of the root: %v", err)
	}
	if len(foreign) != 4 {
		t.Errorf("%d foreign snapshots", len(foreign))
	}
	st1, err := bed.EC2.CreateVolume(ctx, &ec2.CreateVolumeInput{Size: aws.Int32(125), VolumeType: types.VolumeTypeSt1, AvailabilityZone: aws.String(inst.Doc.AvailabilityZone)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: st1.VolumeId}); err != nil {
		t.Fatalf("first snapshot of an st1 volume: %v", err)
	}
	if _, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: st1.VolumeId}); errCode(err) != "ConcurrentSnapshotLimitExceeded" {
		t.Errorf("second pending snapshot of an st1 volume: %v, want ConcurrentSnapshotLimitExceeded", err)
	}
}

// Tags: 50 per resource (aws: ones not counted), values of 256
// characters (not bytes); descriptions of 255. moto refuses a 51st tag
// but takes values and descriptions of any length.
func TestRuleTagAndDescriptionLimits(t *testing.T) {
	ctx := testCtx(t)
	inst := newInstance(t, InstanceOptions{})
	c := viaProxy(func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	long := strings.Repeat("a", 257)
	if _, err := bed.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{inst.DataVolumeID}, Tags: []types.Tag{tag("long", long)}}); err != nil {
		t.Errorf("moto now refuses a 257-character tag value (%v): the bed's check may go", err)
	}
	if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{inst.DataVolumeID}, Tags: []types.Tag{tag("long", long)}}); errCode(err) != "InvalidParameterValue" {
		t.Errorf("257 characters: %v, want InvalidParameterValue", err)
	}
	if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{inst.DataVolumeID}, Tags: []types.Tag{tag("wide", strings.Repeat("é", 256))}}); err != nil {
		t.Errorf("256 two-byte characters (512 bytes): %v, want accepted", err)
	}
	var tags []types.Tag
	for i := range 49 {
		tags = append(tags, tag(fmt.Sprintf("k%d", i), "v"))
	}
	if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{inst.DataVolumeID}, Tags: tags}); errCode(err) != "TagLimitExceeded" {
		t.Errorf("49 tags on a volume with 2: %v, want TagLimitExceeded", err)
	}
	if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{inst.DataVolumeID}, Tags: tags[:48]}); err != nil {
		t.Errorf("48 tags on a volume with 2: %v, want accepted (50)", err)
	}
	desc := strings.Repeat("d", 256)
	if _, err := bed.EC2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(inst.RootVolumeID), Description: aws.String(desc)}); err != nil {
		t.Errorf("moto now refuses a 256-character description (%v): the bed's check may go", err)
	}
	if _, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(inst.RootVolumeID), Description: aws.String(desc)}); errCode(err) != "InvalidParameterValue" {
		t.Errorf("a 256-character description: %v, want InvalidParameterValue", err)
	}
}

// A ClientToken returns the first result; with other parameters it is
// IdempotentParameterMismatch. moto ignores it.
func TestRuleClientTokens(t *testing.T) {
	ctx := testCtx(t)
	inst := newInstance(t, InstanceOptions{})
	c := viaProxy(func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	in := &ec2.CreateVolumeInput{Size: aws.Int32(1), AvailabilityZone: aws.String(inst.Doc.AvailabilityZone), ClientToken: aws.String("tok-" + inst.Doc.InstanceID)}
	a, err := c.CreateVolume(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.CreateVolume(ctx, in)
	if err != nil || aws.ToString(b.VolumeId) != aws.ToString(a.VolumeId) {
		t.Errorf("the same token again: %v %s, want %s back", err, aws.ToString(b.VolumeId), aws.ToString(a.VolumeId))
	}
	in.Size = aws.Int32(2)
	if _, err := c.CreateVolume(ctx, in); errCode(err) != "IdempotentParameterMismatch" {
		t.Errorf("the token with another size: %v, want IdempotentParameterMismatch", err)
	}
	ri := &ec2.RunInstancesInput{ImageId: aws.String(inst.Doc.ImageID), MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: aws.String(inst.SubnetID),
		ClientToken: aws.String("run-" + inst.Doc.InstanceID)}
	r1, err := c.RunInstances(ctx, ri)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := c.RunInstances(ctx, ri)
	if err != nil || aws.ToString(r2.Instances[0].InstanceId) != aws.ToString(r1.Instances[0].InstanceId) {
		t.Errorf("RunInstances with the same token: %v, want the first instance back", err)
	}
}

// A device name the guest still holds leaves the attachment attaching
// (no block device); a detach gets the volume back.
func TestRuleHeldDeviceNameStaysAttaching(t *testing.T) {
	ctx := testCtx(t)
	inst := newInstance(t, InstanceOptions{DataPlane: true})
	c := viaProxy()
	vol, err := bed.EC2.CreateVolume(ctx, &ec2.CreateVolumeInput{Size: aws.Int32(1), AvailabilityZone: aws.String(inst.Doc.AvailabilityZone)})
	if err != nil {
		t.Fatal(err)
	}
	inst.HoldDeviceName("/dev/sdg")
	if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: vol.VolumeId, InstanceId: aws.String(inst.Doc.InstanceID), Device: aws.String("/dev/sdg")}); err != nil {
		t.Fatal(err)
	}
	// Another volume attached after it shows up: the udev delay passed,
	// and the one at the held name is still attaching, without a device.
	other, err := bed.EC2.CreateVolume(ctx, &ec2.CreateVolumeInput{Size: aws.Int32(1), AvailabilityZone: aws.String(inst.Doc.AvailabilityZone)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: other.VolumeId, InstanceId: aws.String(inst.Doc.InstanceID), Device: aws.String("/dev/sdh")}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the other volume's by-id link", func() error {
		_, err := linkTarget(inst, aws.ToString(other.VolumeId))
		return err
	})
	if st := attachmentState(t, c, aws.ToString(vol.VolumeId)); st != types.VolumeAttachmentStateAttaching {
		t.Errorf("attachment at a held name: %q, want attaching", st)
	}
	if _, err := inst.BlockDevice(aws.ToString(vol.VolumeId)); err == nil {
		t.Error("a block device appeared for an attachment at a held name")
	}
	if _, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: vol.VolumeId}); err != nil {
		t.Fatal(err)
	}
	if st := attachmentState(t, c, aws.ToString(vol.VolumeId)); st != "" {
		t.Errorf("after the detach: %q", st)
	}
}

// A mount in another mount namespace (a container) keeps a detach busy
// until it goes.
func TestRuleBusyDetachInAnotherNamespace(t *testing.T) {
	ctx := testCtx(t)
	inst := newInstance(t, InstanceOptions{DataPlane: true})
	c := viaProxy()
	dev, err := inst.BlockDevice(inst.DataVolumeID)
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", "mount "+dev+" "+mnt+" && echo mounted && exec sleep 600")
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }() //nolint:errcheck
	buf := make([]byte, 8)
	if n, err := out.Read(buf); err != nil || !bytes.HasPrefix(buf[:n], []byte("mounted")) {
		t.Fatalf("the namespace did not mount %s: %v %q", dev, err, buf[:n])
	}
	if _, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(inst.DataVolumeID)}); err != nil {
		t.Fatal(err)
	}
	if st := attachmentState(t, c, inst.DataVolumeID); st != types.VolumeAttachmentStateBusy {
		t.Fatalf("detach of a volume mounted in another namespace: %q, want busy", st)
	}
	holder.Process.Kill()
	holder.Wait() //nolint:errcheck
	testutil.WaitFor(t, 10*time.Second, "the busy detach to complete once the namespace is gone", func() error {
		if st := attachmentState(t, c, inst.DataVolumeID); st != "" {
			return fmt.Errorf("still %s", st)
		}
		return nil
	})
}

// What EC2 refuses of a root replacement: a repeated token with other
// parameters, an AMI smaller than the root, a Marketplace AMI, a bare
// metal instance.
func TestRuleRootReplacementRefusals(t *testing.T) {
	ctx := testCtx(t)
	inst := newInstance(t, InstanceOptions{RootGiB: 8})
	c := viaProxy(func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
	img, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(inst.Doc.InstanceID), Name: aws.String("rr-" + inst.Doc.InstanceID), NoReboot: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	// The token rule on an instance of its own: the task it starts
	// replaces that instance's root while the refusals below are asked
	// (a task under way made them "no EBS root volume" instead).
	tokInst := newInstance(t, InstanceOptions{RootGiB: 8})
	snap, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(tokInst.RootVolumeID)})
	if err != nil {
		t.Fatal(err)
	}
	tok := "rr-" + tokInst.Doc.InstanceID
	if _, err := c.CreateReplaceRootVolumeTask(ctx, &ec2.CreateReplaceRootVolumeTaskInput{InstanceId: aws.String(tokInst.Doc.InstanceID), SnapshotId: snap.SnapshotId, ClientToken: aws.String(tok)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateReplaceRootVolumeTask(ctx, &ec2.CreateReplaceRootVolumeTaskInput{InstanceId: aws.String(tokInst.Doc.InstanceID), ImageId: img.ImageId, ClientToken: aws.String(tok)})
	if errCode(err) != "IdempotentParameterMismatch" {
		t.Errorf("the same token with an image: %v, want IdempotentParameterMismatch", err)
	}
	if _, err := bed.EC2.ModifyVolume(ctx, &ec2.ModifyVolumeInput{VolumeId: aws.String(inst.RootVolumeID), Size: aws.Int32(16)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateReplaceRootVolumeTask(ctx, &ec2.CreateReplaceRootVolumeTaskInput{InstanceId: aws.String(inst.Doc.InstanceID), ImageId: img.ImageId}); errCode(err) != "InvalidParameterValue" {
		t.Errorf("an AMI whose 8 GiB root is smaller than the 16 GiB root: %v, want InvalidParameterValue", err)
	}
	bed.MarkMarketplace(inst.Doc.ImageID, "mkt-"+inst.Doc.InstanceID)
	market, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(inst.Doc.InstanceID), Name: aws.String("mkt-" + inst.Doc.InstanceID), NoReboot: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	di, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(market.ImageId)}})
	if err != nil || len(di.Images) != 1 || len(di.Images[0].ProductCodes) != 1 || di.Images[0].ProductCodes[0].ProductCodeType != types.ProductCodeValuesMarketplace {
		t.Errorf("an image of an instance launched from a Marketplace AMI: %v %+v, want its product code", err, di)
	}
	if _, err := c.CreateReplaceRootVolumeTask(ctx, &ec2.CreateReplaceRootVolumeTaskInput{InstanceId: aws.String(inst.Doc.InstanceID), ImageId: market.ImageId}); errCode(err) != "InvalidParameterValue" {
		t.Errorf("a Marketplace AMI: %v, want InvalidParameterValue", err)
	}
	metal := newInstance(t, InstanceOptions{InstanceType: "m5.metal"})
	msnap, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(metal.RootVolumeID)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateReplaceRootVolumeTask(ctx, &ec2.CreateReplaceRootVolumeTaskInput{InstanceId: aws.String(metal.Doc.InstanceID), SnapshotId: msnap.SnapshotId}); errCode(err) != "UnsupportedOperation" {
		t.Errorf("a bare metal instance: %v, want UnsupportedOperation", err)
	}
}

// S3: a missing key is 403 without s3:ListBucket; a bucket in another
// region answers 301 PermanentRedirect, which the SDK does not follow.
func TestRuleS3(t *testing.T) {
	ctx := testCtx(t)
	c := s3At(bed.AWS.URL)
	for _, b := range []string{"rule-nolist", "rule-region"} {
		if _, err := s3At(bed.Moto.URL).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b)}); err != nil {
			t.Fatal(err)
		}
	}
	defer bed.S3WithoutListBucket("rule-nolist")()
	_, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("rule-nolist"), Key: aws.String("missing")})
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusForbidden {
		t.Errorf("GET of a missing key without ListBucket: %v, want 403", err)
	}
	_, err = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("rule-nolist"), Key: aws.String("missing")})
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusForbidden {
		t.Errorf("HEAD of a missing key without ListBucket: %v, want 403", err)
	}
	defer bed.S3BucketInRegion("rule-region", "eu-west-1")()
	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("rule-region"), Key: aws.String("k")})
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusMovedPermanently || re.Response.Header.Get("x-amz-bucket-region") != "eu-west-1" {
		t.Errorf("GET from a bucket in eu-west-1 signed for %s: %v, want 301 with x-amz-bucket-region", Region, err)
	}
	other := s3.New(s3.Options{Region: "eu-west-1", BaseEndpoint: aws.String(bed.AWS.URL), UsePathStyle: true, Credentials: c.Options().Credentials})
	if _, err := other.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("rule-region"), Key: aws.String("k")}); !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusNotFound {
		t.Errorf("GET signed for eu-west-1: %v, want moto's 404", err)
	}
}

// The by-id link is named as udev's rule names it (model and serial), not
// by the agent's function.
func TestUdevLinkName(t *testing.T) {
	got := udevByIDName("Amazon Elastic Block Store              ", "vol0123456789abcdef0")
	if got != "nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0" {
		t.Errorf("udev name %q", got)
	}
}

// Every rule of the table names its AWS source and tests of the agent
// through it that exist.
func TestAWSRulesTable(t *testing.T) {
	e2e, err := filepath.Glob("../e2e/*_test.go")
	if err != nil || len(e2e) == 0 {
		t.Fatalf("e2e tests: %v", err)
	}
	var all strings.Builder
	for _, f := range e2e {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	for _, r := range awsRules() {
		if !strings.HasPrefix(r.Source, "https://") || r.AWS == "" || r.Moto == "" || r.Bed == "" {
			t.Errorf("rule %q: source %q, and what AWS, moto and the bed do, must be given", r.Name, r.Source)
		}
		if len(r.Tests) == 0 {
			t.Errorf("rule %q has no test of the agent through it", r.Name)
		}
		for _, name := range r.Tests {
			if !strings.Contains(all.String(), "func "+name+"(t *testing.T)") {
				t.Errorf("rule %q: no e2e test %s", r.Name, name)
			}
		}
	}
}
