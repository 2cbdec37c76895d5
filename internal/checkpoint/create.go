package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/clock"
	"github.com/rollback-agent/rollback-agent/internal/config"
)

// once disables the SDK's own retries for a create call: retrying a
// request whose answer was lost would create a second snapshot set. The
// agent retries itself, after looking the checkpoint up by its tag.
func once(o *ec2.Options) { o.RetryMaxAttempts = 1 }

// instanceSpec turns checkpoint.volumes into CreateSnapshots' instance
// specification.
func instanceSpec(ident api.Identity, sel config.VolumeSelector) (*types.InstanceSpecification, []api.Volume, error) {
	spec := &types.InstanceSpecification{InstanceId: aws.String(ident.InstanceID)}
	var chosen []api.Volume
	switch sel.Mode {
	case config.VolumesData:
		spec.ExcludeBootVolume = aws.Bool(true)
		for _, v := range ident.Volumes {
			if !v.Root {
				chosen = append(chosen, v)
			}
		}
		if len(chosen) == 0 {
			return nil, nil, fmt.Errorf("checkpoint.volumes is data but %s has no data volume", ident.InstanceID)
		}
	case config.VolumesList:
		for _, id := range sel.IDs {
			if !slices.ContainsFunc(ident.Volumes, func(v api.Volume) bool { return v.VolumeID == id }) {
				return nil, nil, fmt.Errorf("checkpoint.volumes lists %s, which is not attached to %s", id, ident.InstanceID)
			}
		}
		for _, v := range ident.Volumes {
			switch {
			case slices.Contains(sel.IDs, v.VolumeID):
				chosen = append(chosen, v)
			case v.Root:
				spec.ExcludeBootVolume = aws.Bool(true)
			default:
				spec.ExcludeDataVolumeIds = append(spec.ExcludeDataVolumeIds, v.VolumeID)
			}
		}
	default:
		chosen = ident.Volumes
	}
	return spec, chosen, nil
}

// createSnapshots takes the snapshot set; retried says a create was sent
// again after an ambiguous failure (a duplicate set may exist).
func (m *Manager) createSnapshots(ctx context.Context, meta Meta, ident api.Identity, cfg *config.Config) ([]api.CheckpointVolume, bool, error) {
	spec, chosen, err := instanceSpec(ident, cfg.Checkpoint.Volumes)
	if err != nil {
		return nil, false, fmt.Errorf("checkpoint %s: %w", meta.ID, err)
	}
	in := &ec2.CreateSnapshotsInput{
		InstanceSpecification: spec,
		Description:           aws.String(meta.description(cfg.Application)),
		TagSpecifications:     []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: meta.tags(cfg.Application, ident.InstanceID, api.KindEBS)}},
	}
	var out []types.SnapshotInfo
	calls := 0
	err = m.retryCreate(ctx, "CreateSnapshots for "+ident.InstanceID, func(ctx context.Context) error {
		calls++
		res, err := m.o.EC2.CreateSnapshots(ctx, in, once)
		if err == nil {
			out = res.Snapshots
		}
		return err
	}, func(ctx context.Context) (bool, error) {
		found, err := m.findSnapshots(ctx, meta.ID)
		if err != nil {
			return false, err
		}
		// The whole set, one snapshot per chosen volume: a part may still
		// be missing from the list (eventual consistency).
		byVolume := map[string]types.SnapshotInfo{}
		for _, s := range found {
			byVolume[aws.ToString(s.VolumeId)] = s
		}
		var set []types.SnapshotInfo
		for _, v := range chosen {
			s, ok := byVolume[v.VolumeID]
			if !ok {
				return false, nil
			}
			set = append(set, s)
		}
		out = set
		return true, nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("checkpoint %s: %w", meta.ID, err)
	}
	byVol := map[string]api.Volume{}
	for _, v := range chosen {
		byVol[v.VolumeID] = v
	}
	var snaps []api.CheckpointVolume
	for _, s := range out {
		v := byVol[aws.ToString(s.VolumeId)]
		state := api.CheckpointState(s.State)
		if state == "" {
			state = api.CheckpointPending
		}
		snaps = append(snaps, api.CheckpointVolume{
			SnapshotID: aws.ToString(s.SnapshotId), VolumeID: aws.ToString(s.VolumeId), DeviceName: v.DeviceName,
			Root: v.Root, SizeGiB: aws.ToInt32(s.VolumeSize), State: state, Progress: aws.ToString(s.Progress),
		})
	}
	slices.SortFunc(snaps, func(a, b api.CheckpointVolume) int { return strings.Compare(a.DeviceName, b.DeviceName) })
	return snaps, calls > 1, nil
}

// findSnapshots looks a checkpoint's snapshot set up by its tag.
func (m *Manager) findSnapshots(ctx context.Context, id string) ([]types.SnapshotInfo, error) {
	out, err := m.o.EC2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{
		OwnerIds: []string{"self"},
		Filters: []types.Filter{
			{Name: aws.String("tag:" + TagCheckpoint), Values: []string{id}},
			{Name: aws.String("tag:" + TagKind), Values: []string{string(api.KindEBS)}},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("DescribeSnapshots by tag %s=%s: %w", TagCheckpoint, id, err)
	}
	var infos []types.SnapshotInfo
	for _, s := range out.Snapshots {
		infos = append(infos, types.SnapshotInfo{SnapshotId: s.SnapshotId, VolumeId: s.VolumeId, State: s.State, Progress: s.Progress, VolumeSize: s.VolumeSize})
	}
	return infos, nil
}

func (m *Manager) createImage(ctx context.Context, meta Meta, ident api.Identity, cfg *config.Config) (*api.CheckpointImage, error) {
	name := AMIName(cfg.Application, meta.Revision, meta.ID)
	in := &ec2.CreateImageInput{
		InstanceId:  aws.String(ident.InstanceID),
		Name:        aws.String(name),
		Description: aws.String(meta.description(cfg.Application)),
		// Without NoReboot, EC2 would reboot the very instance the agent runs on.
		NoReboot: aws.Bool(true),
		TagSpecifications: []types.TagSpecification{
			{ResourceType: types.ResourceTypeImage, Tags: meta.tags(cfg.Application, ident.InstanceID, api.KindAMI)},
			{ResourceType: types.ResourceTypeSnapshot, Tags: meta.tags(cfg.Application, ident.InstanceID, api.KindAMI)},
		},
	}
	var imageID string
	err := m.retryCreate(ctx, "CreateImage for "+ident.InstanceID, func(ctx context.Context) error {
		res, err := m.o.EC2.CreateImage(ctx, in, once)
		if err == nil {
			imageID = aws.ToString(res.ImageId)
		}
		return err
	}, func(ctx context.Context) (bool, error) {
		// By tag, and by name too: the name is unique and carries the id.
		for _, f := range []types.Filter{
			{Name: aws.String("tag:" + TagCheckpoint), Values: []string{meta.ID}},
			{Name: aws.String("name"), Values: []string{name}},
		} {
			out, err := m.o.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []types.Filter{f}})
			if err != nil {
				return false, fmt.Errorf("DescribeImages by %s: %w", aws.ToString(f.Name), err)
			}
			if len(out.Images) > 0 {
				imageID = aws.ToString(out.Images[0].ImageId)
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", meta.ID, err)
	}
	return &api.CheckpointImage{ImageID: imageID, Name: name, State: api.CheckpointPending}, nil
}

// retryCreate calls create until it succeeds, the error is not worth a
// retry, or ctx (the create budget) ends. After every failure it first
// asks lookup whether the resource exists after all: the request may have
// reached EC2 before the connection broke or the 5xx came back. After
// such an ambiguous failure a single look is not enough, as EC2 is
// eventually consistent (a resource created a moment ago is missing from
// filtered lists), so it looks again with backoff for lookupWait before
// creating again: CreateSnapshots takes no ClientToken, and a second set
// would use up the volumes' pending-snapshot limit.
func (m *Manager) retryCreate(ctx context.Context, what string, create func(context.Context) error, lookup func(context.Context) (bool, error)) error {
	var last error
	for attempt := 1; ; attempt++ {
		err := m.frozen(ctx, create)
		if err == nil {
			return nil
		}
		last = err
		retry, wait := classify(err)
		looks := 1
		if ambiguous(err) {
			looks = 0 // until lookupWait has passed
		}
		found, lerr := m.lookAgain(ctx, looks, lookup)
		if found {
			m.o.Log.Warn("create call failed but the resource exists: adopted it", zap.String("call", what), zap.Error(err))
			return nil
		}
		if lerr != nil {
			m.o.Log.Warn("looking the checkpoint up after a failure", zap.String("call", what), zap.Error(lerr))
			retry = retry || isTransient(lerr)
		}
		if !retry {
			return fmt.Errorf("%s: %w", what, err)
		}
		d := backoff(attempt, wait)
		m.o.Log.Warn("create call failed; retrying", zap.String("call", what), zap.Int("attempt", attempt), zap.Duration("in", d), zap.Error(err))
		if clock.Sleep(ctx, m.o.Clock, d) != nil {
			return fmt.Errorf("%s: gave up after %d attempts (checkpoint.create_timeout): %w", what, attempt, last)
		}
	}
}

// lookupWait bounds the looks after an ambiguous create failure, and so
// does a third of what is left of the create budget: a create that did
// not happen must still be retried in time.
const lookupWait = 10 * time.Second

// lookAgain calls lookup up to looks times (0: until lookupWait passed)
// with backoff, until it finds the resource or fails.
func (m *Manager) lookAgain(ctx context.Context, looks int, lookup func(context.Context) (bool, error)) (bool, error) {
	wait := lookupWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/3)
	}
	deadline := m.o.Clock.Now().Add(wait)
	delay := 250 * time.Millisecond
	for n := 1; ; n++ {
		found, err := lookup(ctx)
		if found || err != nil || (looks > 0 && n >= looks) || !m.o.Clock.Now().Before(deadline) {
			return found, err
		}
		if clock.Sleep(ctx, m.o.Clock, delay) != nil {
			return false, nil
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// ambiguous is a failure after which the request may have been carried
// out: no answer (the connection broke or timed out), or a server error.
// Throttling and limit errors are refusals: nothing was made.
func ambiguous(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "RequestLimitExceeded", "Throttling", "ThrottlingException", "SnapshotCreationPerVolumeRateExceeded", "ConcurrentSnapshotLimitExceeded":
			return false
		case "InvalidAMIName.Duplicate":
			return true // an earlier attempt made it
		}
		if ae.ErrorFault() == smithy.FaultServer {
			return true
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() != 0 {
		return re.HTTPStatusCode() >= 500
	}
	return isTransient(err) // no answer at all (the SDK says status 0)
}

// frozen makes one create call with checkpoint.freeze's mounts frozen.
// The call fixes the point in time, so the freeze covers it and nothing
// else: not the backoff between attempts (writes must not block through
// a 15 s wait), and it is thawed when the call returns or times out.
func (m *Manager) frozen(ctx context.Context, call func(context.Context) error) error {
	thaw, err := freeze(m.o.Config().Checkpoint.Freeze, m.o.Log)
	if err != nil {
		return err
	}
	defer thaw()
	// Buffers of every filesystem reach the disks before the point in
	// time is fixed (a crash-consistent snapshot of flushed data).
	unix.Sync()
	return call(ctx)
}

// classify says whether a failed create is worth retrying and the least
// wait before the retry.
func classify(err error) (bool, time.Duration) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "RequestLimitExceeded", "Throttling", "ThrottlingException":
			return true, time.Second
		case "SnapshotCreationPerVolumeRateExceeded", "ConcurrentSnapshotLimitExceeded":
			// AWS asks for at least 15 s between snapshot requests of a volume.
			return true, 15 * time.Second
		case "InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable":
			return true, time.Second
		case "InvalidAMIName.Duplicate":
			// The AMI name carries the checkpoint id: an earlier attempt
			// made the image, which is not visible yet. Look again.
			return true, time.Second
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
		return true, time.Second
	}
	return isTransient(err), time.Second
}

// isTransient is a failure without an answer: the connection broke or
// timed out.
func isTransient(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || errors.As(err, &ne) || strings.Contains(err.Error(), "connection reset") ||
		strings.Contains(err.Error(), "EOF")
}

// backoff is exponential with jitter, at least floor, at most 30 s.
func backoff(attempt int, floor time.Duration) time.Duration {
	d := time.Duration(1<<min(attempt-1, 5)) * 500 * time.Millisecond
	d = d/2 + time.Duration(rand.Int64N(int64(d)))
	if d < floor {
		d = floor + time.Duration(rand.Int64N(int64(floor/4)+1))
	}
	return min(d, 30*time.Second)
}
