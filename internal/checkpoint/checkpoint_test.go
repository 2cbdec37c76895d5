package checkpoint_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/identity"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

var peers testbed.Lazy

func TestMain(m *testing.M) {
	code := m.Run()
	peers.Close()
	os.Exit(code)
}

// fixture is a checkpoint manager for one instance in moto, talking to
// it through the test bed's AWS proxy as the agent does.
type fixture struct {
	t         *testing.T
	bed       *testbed.Bed
	inst      *testbed.Instance
	ec2       *ec2.Client
	m         *checkpoint.Manager
	j         *journal.Journal
	cfg       *config.Config
	ident     api.Identity
	protected map[string]string
}

func newFixture(t *testing.T, dataPlane bool, mutate func(*config.Config)) *fixture {
	t.Helper()
	bed := peers.Get(t)
	ctx := context.Background()
	inst, err := bed.NewInstance(ctx, testbed.InstanceOptions{DataPlane: dataPlane})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inst.Close)
	c := ec2.New(ec2.Options{Region: testbed.Region, BaseEndpoint: aws.String(bed.AWS.URL),
		Credentials: credentials.NewStaticCredentialsProvider(testbed.AccessKey, testbed.SecretKey, "")})
	byID := inst.ByIDDir
	if byID == "" {
		byID = t.TempDir()
	}
	ident, err := identity.Describe(ctx, c, identity.Doc{InstanceID: inst.Doc.InstanceID, Region: testbed.Region,
		AvailabilityZone: inst.Doc.AvailabilityZone, AccountID: inst.Doc.AccountID, Source: "imds"}, byID, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg, _, err := config.Parse("t.yaml", []byte(fmt.Sprintf("application: app%d\nstate_dir: %s\ndevices: {by_id_dir: %s}\n", rand.IntN(1e9), dir, byID)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Checkpoint.CreateTimeout = 20 * time.Second
	if mutate != nil {
		mutate(cfg)
	}
	j, err := journal.Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, bed: bed, inst: inst, ec2: c, j: j, cfg: cfg, ident: ident, protected: map[string]string{}}
	f.m = checkpoint.New(checkpoint.Options{
		EC2: c, Identity: func() api.Identity { return f.ident }, Config: func() *config.Config { return f.cfg },
		Cache: j, Log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), PollInterval: 200 * time.Millisecond,
		Protected: func() map[string]string { return f.protected },
	})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); f.m.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done; j.Close(); bed.AWS.ClearFaults() })
	return f
}

func (f *fixture) create(kinds ...api.CheckpointKind) *api.Checkpoint {
	f.t.Helper()
	c, err := f.m.Create(context.Background(), checkpoint.Meta{Kinds: kinds, Reason: checkpoint.ReasonDeploy, Revision: "v1", Deployment: "d-TEST12345"})
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// snapshotsTagged lists, straight from moto, the snapshots carrying a tag.
func (f *fixture) snapshotsTagged(key, value string) []types.Snapshot {
	f.t.Helper()
	out, err := f.bed.EC2.DescribeSnapshots(context.Background(), &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
		Filters: []types.Filter{{Name: aws.String("tag:" + key), Values: []string{value}}}})
	if err != nil {
		f.t.Fatal(err)
	}
	return out.Snapshots
}

func tagsOf(tags []types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func (f *fixture) waitState(id string, state api.CheckpointState) *api.Checkpoint {
	f.t.Helper()
	var c *api.Checkpoint
	testutil.WaitFor(f.t, time.Minute, fmt.Sprintf("checkpoint %s to be %s", id, state), func() error {
		var err error
		if c, err = f.m.Cached(id); err != nil {
			return err
		}
		if c.State != state {
			return fmt.Errorf("it is %s: %+v", c.State, c)
		}
		return nil
	})
	return c
}

func TestSnapshotSetCoversTheVolumesWithAllTags(t *testing.T) {
	f := newFixture(t, false, nil)
	f.bed.AWS.ResetCounts()
	c := f.create(api.KindEBS)
	if n := f.bed.AWS.Count("ec2", "CreateSnapshots"); n != 1 {
		t.Errorf("CreateSnapshots called %d times", n)
	}
	if n := f.bed.AWS.Count("ec2", "DescribeSnapshots"); n > 1 {
		t.Errorf("the create itself looked things up: %v", f.bed.AWS.Counts())
	}
	snaps := f.snapshotsTagged(checkpoint.TagCheckpoint, c.ID)
	if len(snaps) != 2 || len(c.Snapshots) != 2 {
		t.Fatalf("want one set of 2 snapshots (root and data), got %d in moto, %d recorded", len(snaps), len(c.Snapshots))
	}
	vols := []string{}
	for _, s := range snaps {
		vols = append(vols, aws.ToString(s.VolumeId))
		tags := tagsOf(s.Tags)
		for k, v := range map[string]string{
			checkpoint.TagApp: f.cfg.Application, checkpoint.TagCheckpoint: c.ID, checkpoint.TagRevision: "v1",
			checkpoint.TagReason: "deploy", checkpoint.TagInstance: f.inst.Doc.InstanceID, checkpoint.TagManaged: "true",
			checkpoint.TagKind: "ebs", checkpoint.TagDeployment: "d-TEST12345",
		} {
			if tags[k] != v {
				t.Errorf("snapshot %s tag %s = %q, want %q", aws.ToString(s.SnapshotId), k, tags[k], v)
			}
		}
	}
	slices.Sort(vols)
	want := []string{f.inst.RootVolumeID, f.inst.DataVolumeID}
	slices.Sort(want)
	if !slices.Equal(vols, want) {
		t.Errorf("volumes %v, want %v", vols, want)
	}
	// The device tags come in the background.
	testutil.WaitFor(t, 10*time.Second, "the data snapshot to be tagged with its device", func() error {
		if n := len(f.snapshotsTagged(checkpoint.TagDevice, testbed.DataDevice)); n != 1 {
			return fmt.Errorf("%d snapshots tagged %s=%s, want 1", n, checkpoint.TagDevice, testbed.DataDevice)
		}
		return nil
	})
}

func TestVolumeSelection(t *testing.T) {
	f := newFixture(t, false, func(c *config.Config) { c.Checkpoint.Volumes = config.VolumeSelector{Mode: config.VolumesData} })
	c := f.create(api.KindEBS)
	if len(c.Snapshots) != 1 || c.Snapshots[0].VolumeID != f.inst.DataVolumeID {
		t.Errorf("volumes: data took %+v", c.Snapshots)
	}
	f.cfg.Checkpoint.Volumes = config.VolumeSelector{Mode: config.VolumesList, IDs: []string{f.inst.RootVolumeID}}
	c = f.create(api.KindEBS)
	if len(c.Snapshots) != 1 || c.Snapshots[0].VolumeID != f.inst.RootVolumeID || !c.Snapshots[0].Root {
		t.Errorf("volumes: [root] took %+v", c.Snapshots)
	}
	f.cfg.Checkpoint.Volumes = config.VolumeSelector{Mode: config.VolumesList, IDs: []string{"vol-0123456789abcdef0"}}
	if _, err := f.m.Create(context.Background(), checkpoint.Meta{Kinds: []api.CheckpointKind{api.KindEBS}}); err == nil || !strings.Contains(err.Error(), "not attached") {
		t.Errorf("a volume that is not attached: %v", err)
	}
}

func TestAMIHasItsNameAndTagsOnImageAndSnapshots(t *testing.T) {
	f := newFixture(t, false, nil)
	c := f.create(api.KindAMI)
	if c.Image == nil || c.Image.Name != checkpoint.AMIName(f.cfg.Application, "v1", c.ID) {
		t.Fatalf("image %+v", c.Image)
	}
	out, err := f.bed.EC2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{c.Image.ImageID}}) // what AWS holds
	if err != nil || len(out.Images) != 1 {
		t.Fatal(err)
	}
	if tags := tagsOf(out.Images[0].Tags); tags[checkpoint.TagCheckpoint] != c.ID || tags[checkpoint.TagKind] != "ami" {
		t.Errorf("image tags %v", tags)
	}
	snaps := f.snapshotsTagged(checkpoint.TagCheckpoint, c.ID)
	if len(snaps) == 0 {
		t.Errorf("the image's snapshots carry no tags")
	}
	for _, s := range snaps {
		if tagsOf(s.Tags)[checkpoint.TagKind] != "ami" {
			t.Errorf("snapshot %s tags %v", aws.ToString(s.SnapshotId), tagsOf(s.Tags))
		}
	}
	done := f.waitState(c.ID, api.CheckpointCompleted)
	if done.Image.State != api.CheckpointCompleted {
		t.Errorf("image state %s", done.Image.State)
	}
}

func TestAMINamesFollowTheRules(t *testing.T) {
	for _, tc := range []struct{ app, rev string }{
		{"shop", "v1.2.3"}, {"shop", "feature/branch#7 ok?"}, {"x", ""}, {"a", strings.Repeat("r", 300)},
	} {
		n := checkpoint.AMIName(tc.app, tc.rev, "cp-0123456789ab")
		if len(n) < 3 || len(n) > 128 || strings.ContainsAny(n, "#?*") || !strings.HasSuffix(n, "-01234567") {
			t.Errorf("AMIName(%q, %q) = %q", tc.app, tc.rev, n)
		}
	}
}

// The deploy's critical path never waits for completion: Create returns
// with the snapshots pending; the tracker sees them complete later.
func TestCompletionIsTrackedInTheBackground(t *testing.T) {
	f := newFixture(t, false, nil)
	release := f.bed.HoldSnapshots(3 * time.Second)
	defer release()
	c := f.create(api.KindEBS)
	if c.State != api.CheckpointPending {
		t.Fatalf("state right after create: %s", c.State)
	}
	// Every state the cache shows on the way is recorded.
	seen := map[string]bool{}
	testutil.WaitFor(t, 30*time.Second, "checkpoint "+c.ID+" to complete", func() error {
		cur, err := f.m.Cached(c.ID)
		if err != nil {
			return testutil.Stop(err)
		}
		seen[string(cur.State)+" "+cur.Progress] = true
		if cur.State != api.CheckpointCompleted {
			return fmt.Errorf("seen %v", seen)
		}
		return nil
	})
	if !seen["completed 100%"] {
		t.Fatalf("never completed: %v", seen)
	}
	progressed := 0
	for k := range seen {
		if strings.HasPrefix(k, "pending ") && k != "pending 0%" {
			progressed++
		}
	}
	if progressed == 0 {
		t.Errorf("no progress seen while pending: %v", seen)
	}
	if s := f.m.Summary(); s.Pending != 0 || s.Newest == nil || s.Newest.ID != c.ID {
		t.Errorf("summary %+v", s)
	}
}

func TestThrottlingAndServerErrorsAreRetried(t *testing.T) {
	f := newFixture(t, false, nil)
	f.bed.AWS.AddFault(testbed.Fault{Service: "ec2", Action: "CreateSnapshots", Kind: testbed.FaultThrottle, Count: 2})
	f.bed.AWS.AddFault(testbed.Fault{Service: "ec2", Action: "CreateSnapshots", Kind: testbed.FaultServerError, Count: 1})
	f.bed.AWS.ResetCounts()
	c := f.create(api.KindEBS)
	if n := f.bed.AWS.Count("ec2", "CreateSnapshots"); n < 4 {
		t.Errorf("CreateSnapshots called %d times; 3 faults should have been retried", n)
	}
	if got := f.snapshotsTagged(checkpoint.TagCheckpoint, c.ID); len(got) != 2 {
		t.Errorf("%d snapshots for the checkpoint, want one set of 2", len(got))
	}
}

// A connection reset after the request reached EC2 is the ambiguous
// failure: the set exists. It is found by its tag, not created again.
func TestResetAfterTheCallReachedEC2MakesNoDuplicate(t *testing.T) {
	f := newFixture(t, false, nil)
	f.bed.AWS.AddFault(testbed.Fault{Service: "ec2", Action: "CreateSnapshots", Kind: testbed.FaultResetAfterUpstream, Count: 1})
	f.bed.AWS.ResetCounts()
	c := f.create(api.KindEBS)
	if got := f.snapshotsTagged(checkpoint.TagCheckpoint, c.ID); len(got) != 2 || len(c.Snapshots) != 2 {
		t.Errorf("%d snapshots in moto (%d recorded), want exactly one set of 2", len(got), len(c.Snapshots))
	}
	if n := f.bed.AWS.Count("ec2", "CreateSnapshots"); n != 1 {
		t.Errorf("CreateSnapshots sent %d times, want 1 (the set was adopted)", n)
	}
	all := f.snapshotsTagged(checkpoint.TagInstance, f.inst.Doc.InstanceID)
	if len(all) != 2 {
		t.Errorf("%d snapshots of the instance in moto, want 2", len(all))
	}
}

func TestPersistentQuotaErrorFailsWithinTheBudget(t *testing.T) {
	f := newFixture(t, false, func(c *config.Config) { c.Checkpoint.CreateTimeout = 2 * time.Second })
	f.bed.AWS.AddFault(testbed.Fault{Service: "ec2", Action: "CreateSnapshots", Kind: testbed.FaultErrorCode, Code: "ConcurrentSnapshotLimitExceeded"})
	_, err := f.m.Create(context.Background(), checkpoint.Meta{Kinds: []api.CheckpointKind{api.KindEBS}})
	if err == nil || !strings.Contains(err.Error(), "ConcurrentSnapshotLimitExceeded") || !strings.Contains(err.Error(), "CreateSnapshots for "+f.inst.Doc.InstanceID) {
		t.Fatalf("err = %v", err)
	}
	if got := f.snapshotsTagged(checkpoint.TagInstance, f.inst.Doc.InstanceID); len(got) != 0 {
		t.Errorf("snapshots left behind: %d", len(got))
	}
}

// A replacement task the agent started but never recorded (it stopped
// between the call and the intent tag) is found again by its checkpoint
// tag, and only that one.
func TestFindRootTaskByItsCheckpoint(t *testing.T) {
	f := newFixture(t, true, nil)
	cp := f.create(api.KindEBS)
	f.waitState(cp.ID, api.CheckpointCompleted)
	ctx := context.Background()
	rr, err := f.m.PlanRootRestore(ctx, cp.ID)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Now()
	if err := f.m.StartRootReplace(ctx, "op-find", rr); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.WaitRootTask(ctx, rr.TaskID, time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cp    string
		since time.Time
		want  string
	}{
		{cp.ID, since, rr.TaskID},
		{"cp-000000000000", since, ""},    // another checkpoint's
		{cp.ID, since.Add(time.Hour), ""}, // an older task
	} {
		got, err := f.m.FindRootTask(ctx, c.cp, c.since)
		if err != nil || got != c.want {
			t.Errorf("FindRootTask(%s, %s) = %q, %v; want %q", c.cp, c.since.Format(time.TimeOnly), got, err, c.want)
		}
	}
}
