package identity_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/rollback-agent/rollback-agent/internal/identity"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

var peers testbed.Lazy

func TestMain(m *testing.M) {
	code := m.Run()
	peers.Close()
	os.Exit(code)
}

func newInstance(t *testing.T) (*testbed.Bed, *testbed.Instance) {
	t.Helper()
	bed := peers.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := bed.NewInstance(ctx, testbed.InstanceOptions{AvailabilityZone: "us-east-1b", InstanceType: "m5.large"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inst.Close)
	return bed, inst
}

func TestDiscoverAndDescribeAgainstIMDSMockAndMoto(t *testing.T) {
	bed, inst := newInstance(t)
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", inst.IMDS.URL)
	ctx := context.Background()
	doc, err := identity.Discover(ctx, "", "", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := identity.Doc{InstanceID: inst.Doc.InstanceID, Region: "us-east-1", AvailabilityZone: "us-east-1b",
		AccountID: inst.Doc.AccountID, InstanceType: "m5.large", Source: "imds"}
	if doc != want {
		t.Fatalf("doc = %+v, want %+v", doc, want)
	}
	id, err := identity.Describe(ctx, ec2.NewFromConfig(bed.AWSConfig()), doc, t.TempDir(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(id.Volumes) != 2 || id.Volumes[0].VolumeID != inst.RootVolumeID || !id.Volumes[0].Root ||
		id.Volumes[1].VolumeID != inst.DataVolumeID || id.Volumes[1].DeviceName != testbed.DataDevice ||
		id.Volumes[1].SizeGiB != 2 || id.Volumes[1].VolumeType != "gp3" {
		t.Errorf("volumes: %+v", id.Volumes)
	}
	if id.Volumes[1].LinuxDevice != "" || !strings.Contains(id.Volumes[1].LinuxDeviceError, identity.ByIDLinkName(inst.DataVolumeID)) {
		t.Errorf("no device should be found in an empty by-id dir: %+v", id.Volumes[1])
	}
}

// Right after RunInstances EC2 may not know the new instance yet (the bed
// keeps it out of sight for its consistency window). An id IMDS gave is
// asked for again until it appears; an id from the config fails at once.
func TestDescribeWaitsOutEventualConsistency(t *testing.T) {
	bed := peers.Get(t)
	r := bed.Rules()
	r.ConsistencyWindow = 3 * time.Second
	defer bed.SetRules(r)()
	_, first := newInstance(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := bed.AWSConfig()
	cfg.BaseEndpoint = aws.String(bed.AWS.URL) // the proxy, where the bed plays EC2's rules
	c := ec2.NewFromConfig(cfg)
	// Launched from a template, the instance is made through the bed's
	// proxy, which starts its window.
	lt, err := c.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("identity-" + first.Doc.InstanceID),
		LaunchTemplateData: &types.RequestLaunchTemplateData{ImageId: aws.String(first.Doc.ImageID), InstanceType: types.InstanceTypeT3Micro}})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := bed.NewInstance(ctx, testbed.InstanceOptions{LaunchTemplateID: aws.ToString(lt.LaunchTemplate.LaunchTemplateId)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inst.Close)
	doc := identity.Doc{InstanceID: inst.Doc.InstanceID, Region: testbed.Region, Source: "config"}
	if _, err := identity.Describe(ctx, c, doc, t.TempDir(), time.Minute); !errors.Is(err, identity.ErrUnknownInstance) {
		t.Fatalf("a configured id inside the window: %v, want ErrUnknownInstance at once", err)
	}
	doc.Source = "imds"
	id, err := identity.Describe(ctx, c, doc, t.TempDir(), time.Minute)
	if err != nil {
		t.Fatalf("an id from IMDS inside the window: %v", err)
	}
	if id.InstanceID != inst.Doc.InstanceID || len(id.Volumes) != 2 {
		t.Errorf("identity %+v", id)
	}
}

// With IMDS answering IMDSv1 GETs but refusing the IMDSv2 token, the
// agent must fail, not silently downgrade.
func TestNoSilentIMDSv1Fallback(t *testing.T) {
	_, inst := newInstance(t)
	v1, err := testbed.StartIMDSWith(context.Background(), inst.Doc, testbed.IMDSOptions{AllowV1: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v1.Stop()
	px, err := testbed.StartProxy("imds-v1", v1.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Stop()
	px.AddFault(testbed.Fault{Service: "imds", Action: "PUT /latest/api/token", Kind: testbed.FaultForbidden})
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", px.URL)
	_, err = identity.Discover(context.Background(), "", "", time.Second)
	if !errors.Is(err, identity.ErrIMDSDisabled) {
		t.Fatalf("want identity.ErrIMDSDisabled, got %v", err)
	}
	for op, n := range px.Counts() {
		if strings.HasPrefix(op, "imds:GET") {
			t.Errorf("IMDSv1 request made: %s x%d", op, n)
		}
	}
}

func TestOnPremDiscoverSkipsIMDS(t *testing.T) {
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1")
	doc, err := identity.Discover(context.Background(), "i-0123456789abcdef0", "eu-west-1", 0)
	if err != nil || doc.Source != "config" || doc.Region != "eu-west-1" {
		t.Fatalf("%+v %v", doc, err)
	}
}

// FindDevice resolves a volume through the udev by-id link to a real loop
// device, and falls back to the attach-time name.
func TestFindDeviceWithLoopDevice(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "vol.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v (tests run as root with loop devices)", err)
	}
	loop := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", loop).Run()

	byID := filepath.Join(dir, "by-id")
	os.MkdirAll(byID, 0o755)
	vol := "vol-0abc123def4567890"
	if err := os.Symlink(loop, filepath.Join(byID, "nvme-Amazon_Elastic_Block_Store_vol0abc123def4567890")); err != nil {
		t.Fatal(err)
	}
	dev, err := identity.FindDevice(byID, vol, "/dev/sdf")
	if err != nil || dev != loop {
		t.Fatalf("FindDevice = %q, %v; want %s", dev, err, loop)
	}
	// A link to something that is not a block device is an error.
	os.Symlink(img, filepath.Join(byID, identity.ByIDLinkName("vol-0aaaaaaaaaaaaaaaa")))
	if _, err := identity.FindDevice(byID, "vol-0aaaaaaaaaaaaaaaa", ""); err == nil || !strings.Contains(err.Error(), "not a block device") {
		t.Errorf("regular file accepted: %v", err)
	}
	// Attach-time name fallback (Xen spelling too).
	xen := filepath.Join(dir, "xvdg")
	os.Symlink(loop, xen)
	if dev, err := identity.FindDevice(byID, "vol-0bbbbbbbbbbbbbbbb", filepath.Join(dir, "sdg")); err != nil || dev != loop {
		t.Errorf("xvd fallback: %q %v", dev, err)
	}
	if _, err := identity.FindDevice(byID, "vol-0ccccccccccccccc0", "/dev/sdz"); err == nil || !strings.Contains(err.Error(), "/dev/xvdz") {
		t.Errorf("missing device error should list what was tried: %v", err)
	}
}
