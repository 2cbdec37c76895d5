package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// Run tracks pending checkpoints to completion until ctx ends: it polls
// DescribeSnapshots/DescribeImages for what is pending, slowing down the
// longer nothing changes, and records state and progress in the cache.
// When it returns, the background work of creates (settle) has ended too:
// nothing of the manager outlives Run.
func (m *Manager) Run(ctx context.Context) {
	defer m.endBackground()
	delay := m.o.PollInterval
	for {
		pending := m.pending()
		if len(pending) == 0 {
			delay = m.o.PollInterval
			select {
			case <-ctx.Done():
				return
			case <-m.wake:
				continue
			}
		}
		changed, err := m.poll(ctx, pending)
		if err != nil && ctx.Err() == nil {
			m.o.Log.Warn("tracking checkpoint completion", zap.Error(err))
		}
		if changed {
			delay = m.o.PollInterval
			m.o.OnChange()
		} else {
			delay = min(delay*3/2, 30*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
			delay = m.o.PollInterval
		case <-time.After(delay):
		}
	}
}

func (m *Manager) pending() []api.Checkpoint {
	cached, err := m.o.Cache.Checkpoints()
	if err != nil {
		return nil
	}
	var out []api.Checkpoint
	for _, c := range cached {
		if c.State == api.CheckpointPending {
			out = append(out, c)
		}
	}
	return out
}

// poll refreshes the state of pending checkpoints; it reports whether any
// changed.
func (m *Manager) poll(ctx context.Context, cps []api.Checkpoint) (bool, error) {
	var snapIDs, imageIDs []string
	for _, c := range cps {
		for _, s := range c.Snapshots {
			if s.State == api.CheckpointPending {
				snapIDs = append(snapIDs, s.SnapshotID)
			}
		}
		if c.Image != nil && c.Image.State == api.CheckpointPending {
			imageIDs = append(imageIDs, c.Image.ImageID)
		}
	}
	// EC2 is eventually consistent: a snapshot or image a moment old may
	// answer NotFound. Only after notFoundGrace does NotFound mean gone.
	born := map[string]time.Time{}
	for _, c := range cps {
		for _, s := range c.Snapshots {
			born[s.SnapshotID] = c.CreatedAt
		}
		if c.Image != nil {
			born[c.Image.ImageID] = c.CreatedAt
		}
	}
	gone := func(id string) bool { return time.Since(born[id]) > notFoundGrace }
	snaps := map[string]types.Snapshot{}
	var errs []error
	if len(snapIDs) > 0 {
		p := ec2.NewDescribeSnapshotsPaginator(m.o.EC2, &ec2.DescribeSnapshotsInput{SnapshotIds: snapIDs})
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				if !notFound(err) {
					errs = append(errs, fmt.Errorf("DescribeSnapshots %s: %w", strings.Join(snapIDs, ","), err))
					break
				}
				// One unknown id fails the whole call: look one by one.
				for _, id := range snapIDs {
					o, err := m.o.EC2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
					switch {
					case err == nil && len(o.Snapshots) == 1:
						snaps[id] = o.Snapshots[0]
					case notFound(err) && gone(id):
						snaps[id] = types.Snapshot{SnapshotId: aws.String(id), State: types.SnapshotStateError, StateMessage: aws.String("snapshot no longer exists")}
					case err != nil && !notFound(err):
						errs = append(errs, fmt.Errorf("DescribeSnapshots %s: %w", id, err))
					}
				}
				break
			}
			for _, s := range out.Snapshots {
				snaps[aws.ToString(s.SnapshotId)] = s
			}
		}
	}
	images := map[string]types.Image{}
	for _, id := range imageIDs {
		out, err := m.o.EC2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{id}})
		switch {
		case err == nil:
			for _, im := range out.Images {
				images[aws.ToString(im.ImageId)] = im
			}
		case notFound(err) && gone(id):
			images[id] = types.Image{ImageId: aws.String(id), State: types.ImageStateDeregistered}
		case !notFound(err):
			errs = append(errs, fmt.Errorf("DescribeImages %s: %w", id, err))
		}
	}
	changed := false
	for i := range cps {
		c := cps[i]
		if m.apply(&c, snaps, images) {
			changed = true
			if err := m.o.Cache.PutCheckpoint(&c); err != nil {
				errs = append(errs, err)
			}
			if c.State != api.CheckpointPending {
				m.o.Log.Info("checkpoint "+string(c.State), zap.String("checkpoint", c.ID))
			}
		}
	}
	return changed, errors.Join(errs...)
}

// apply folds what AWS said into c and reports whether it changed.
func (m *Manager) apply(c *api.Checkpoint, snaps map[string]types.Snapshot, images map[string]types.Image) bool {
	before := fmt.Sprintf("%s %s", c.State, c.Progress)
	for i := range c.Snapshots {
		s := &c.Snapshots[i]
		if got, ok := snaps[s.SnapshotID]; ok {
			s.State = api.CheckpointState(got.State)
			s.Progress = aws.ToString(got.Progress)
			if s.State == api.CheckpointCompleted && s.Progress == "" {
				s.Progress = "100%"
			}
		}
	}
	if c.Image != nil {
		if im, ok := images[c.Image.ImageID]; ok {
			switch im.State {
			case types.ImageStateAvailable:
				c.Image.State = api.CheckpointCompleted
			case types.ImageStateFailed, types.ImageStateError, types.ImageStateInvalid, types.ImageStateDeregistered:
				c.Image.State = api.CheckpointError
			}
			c.Image.SnapshotIDs = imageSnapshots(im)
		}
	}
	c.State, c.Progress = rollup(c)
	return before != fmt.Sprintf("%s %s", c.State, c.Progress)
}

// rollup: error if anything failed, pending while anything is, else
// completed; progress is the least advanced snapshot's.
func rollup(c *api.Checkpoint) (api.CheckpointState, string) {
	state := api.CheckpointCompleted
	least := 100
	for _, s := range c.Snapshots {
		switch s.State {
		case api.CheckpointError:
			return api.CheckpointError, s.Progress
		case api.CheckpointPending:
			state = api.CheckpointPending
		}
		if p, err := strconv.Atoi(strings.TrimSuffix(s.Progress, "%")); err == nil && p < least {
			least = p
		} else if err != nil && s.State == api.CheckpointPending {
			least = 0
		}
	}
	if c.Image != nil {
		switch c.Image.State {
		case api.CheckpointError:
			return api.CheckpointError, ""
		case api.CheckpointPending:
			state = api.CheckpointPending
		}
	}
	return state, strconv.Itoa(least) + "%"
}

func imageSnapshots(im types.Image) []string {
	var ids []string
	for _, b := range im.BlockDeviceMappings {
		if b.Ebs != nil && b.Ebs.SnapshotId != nil {
			ids = append(ids, *b.Ebs.SnapshotId)
		}
	}
	return ids
}

// notFoundGrace is how long after its creation a resource answering
// NotFound is taken for not visible yet rather than gone. The EC2 API
// guide, "Eventual consistency", advises retrying "up to a few minutes".
const notFoundGrace = 5 * time.Minute

func notFound(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && strings.HasSuffix(ae.ErrorCode(), ".NotFound")
}
