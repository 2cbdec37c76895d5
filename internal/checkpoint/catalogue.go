package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// ErrNotFound is an unknown checkpoint id.
var ErrNotFound = errors.New("no such checkpoint")

// ownFilters select the resources of this agent, instance and app.
func (m *Manager) ownFilters() []types.Filter {
	return []types.Filter{
		{Name: aws.String("tag:" + TagManaged), Values: []string{"true"}},
		{Name: aws.String("tag:" + TagInstance), Values: []string{m.o.Identity().InstanceID}},
		{Name: aws.String("tag:" + TagApp), Values: []string{m.o.Config().Application}},
	}
}

// Catalogue rebuilds the list of checkpoints from AWS (tagged snapshots
// and images of this instance and app, paginated), refreshes the cache
// with it, and lists the volumes kept after restores. A resource whose
// tags claim it but which the agent's ledger does not know is left out
// (and logged): tags are not proof (ledger.go).
func (m *Manager) Catalogue(ctx context.Context) (*api.CheckpointList, error) {
	started := time.Now().UTC()
	ident := m.o.Identity()
	led, err := m.ledger.read(m.o.Cache, ident.Volumes)
	if err != nil {
		return nil, err
	}
	var ignored []string
	byID := map[string]*api.Checkpoint{}
	get := func(tags map[string]string) *api.Checkpoint {
		id := tags[TagCheckpoint]
		c, ok := byID[id]
		if !ok {
			created, _ := time.Parse(time.RFC3339Nano, tags[TagCreated])
			c = &api.Checkpoint{ID: id, CreatedAt: created, Reason: tags[TagReason], Label: tags[TagLabel],
				Revision: tags[TagRevision], Deployment: tags[TagDeployment]}
			byID[id] = c
		}
		if tags[TagPinned] == "true" {
			c.Pinned = true
		}
		return c
	}
	volByID := map[string]api.Volume{}
	for _, v := range ident.Volumes {
		volByID[v.VolumeID] = v
	}
	sp := ec2.NewDescribeSnapshotsPaginator(m.o.EC2, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: m.ownFilters()})
	for sp.HasMorePages() {
		out, err := sp.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: catalogue: DescribeSnapshots: %w", err)
		}
		for _, s := range out.Snapshots {
			tags := tagMap(s.Tags)
			if api.CheckpointKind(tags[TagKind]) != api.KindEBS || tags[TagCheckpoint] == "" {
				continue // an AMI's snapshots belong to the image
			}
			snapID, volID := aws.ToString(s.SnapshotId), aws.ToString(s.VolumeId)
			if ok, why := led.trustSnapshot(tags[TagCheckpoint], snapID, volID, ident.Volumes); !ok {
				ignored = append(ignored, fmt.Sprintf("snapshot %s tagged as checkpoint %s: %s", snapID, tags[TagCheckpoint], why))
				continue
			}
			c := get(tags)
			v := volByID[volID]
			dev := v.DeviceName
			if e := led.Checkpoints[c.ID]; e != nil && e.Devices[snapID] != "" {
				dev = e.Devices[snapID] // the agent's record, should the tag be missing
			}
			if d := tags[TagDevice]; d != "" {
				dev = d
			}
			c.Snapshots = append(c.Snapshots, api.CheckpointVolume{
				SnapshotID: aws.ToString(s.SnapshotId), VolumeID: aws.ToString(s.VolumeId), DeviceName: dev, Root: v.Root || (dev != "" && dev == ident.RootDeviceName),
				SizeGiB: aws.ToInt32(s.VolumeSize), State: api.CheckpointState(s.State), Progress: aws.ToString(s.Progress),
			})
			if c.CreatedAt.IsZero() && s.StartTime != nil {
				c.CreatedAt = *s.StartTime
			}
		}
	}
	ip := ec2.NewDescribeImagesPaginator(m.o.EC2, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: m.ownFilters()})
	for ip.HasMorePages() {
		out, err := ip.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: catalogue: DescribeImages: %w", err)
		}
		for _, im := range out.Images {
			tags := tagMap(im.Tags)
			if tags[TagCheckpoint] == "" {
				continue
			}
			if ok, why := led.trustImage(tags[TagCheckpoint], aws.ToString(im.ImageId)); !ok {
				ignored = append(ignored, fmt.Sprintf("image %s tagged as checkpoint %s: %s", aws.ToString(im.ImageId), tags[TagCheckpoint], why))
				continue
			}
			c := get(tags)
			state := api.CheckpointPending
			switch im.State {
			case types.ImageStateAvailable:
				state = api.CheckpointCompleted
			case types.ImageStateFailed, types.ImageStateError, types.ImageStateInvalid:
				state = api.CheckpointError
			}
			c.Image = &api.CheckpointImage{ImageID: aws.ToString(im.ImageId), Name: aws.ToString(im.Name), State: state, SnapshotIDs: imageSnapshots(im)}
		}
	}
	list := &api.CheckpointList{SchemaVersion: api.SchemaVersion, Checkpoints: []api.Checkpoint{}}
	protected := m.o.Protected()
	for _, c := range byID {
		if len(c.Snapshots) > 0 {
			c.Kinds = append(c.Kinds, api.KindEBS)
		}
		if c.Image != nil {
			c.Kinds = append(c.Kinds, api.KindAMI)
		}
		sort.Slice(c.Snapshots, func(a, b int) bool { return c.Snapshots[a].DeviceName < c.Snapshots[b].DeviceName })
		c.State, c.Progress = rollup(c)
		c.Protected = protection(c, protected)
		list.Checkpoints = append(list.Checkpoints, *c)
	}
	sort.Slice(list.Checkpoints, func(a, b int) bool { return list.Checkpoints[a].CreatedAt.After(list.Checkpoints[b].CreatedAt) })
	replaced, skipped, err := m.replacedVolumes(ctx, led)
	if err != nil {
		return nil, err
	}
	list.ReplacedVolumes = replaced
	if ignored = append(ignored, skipped...); len(ignored) > 0 {
		m.o.Log.Warn("resources tagged as this host's checkpoints that the agent did not make: ignored, never pruned", zap.Strings("ignored", ignored))
	}
	if err := m.o.Cache.ReplaceCheckpoints(list.Checkpoints, started.Add(-time.Second)); err != nil {
		m.o.Log.Warn("refresh the checkpoint cache", zap.Error(err))
	}
	m.kick()
	return list, nil
}

func protection(c *api.Checkpoint, protected map[string]string) string {
	switch {
	case c.Pinned:
		return "pinned"
	case protected[c.ID] != "":
		return protected[c.ID]
	case c.State == api.CheckpointPending:
		return "pending"
	}
	return ""
}

// replacedVolumes lists the volumes restores swapped out, as the ledger
// records them: a replaced-by tag alone would make prune delete any
// volume it is put on. skipped names the volumes such a tag claims
// wrongly, for the log.
func (m *Manager) replacedVolumes(ctx context.Context, led *ledger) (out []api.ReplacedVolume, skipped []string, err error) {
	filters := append(m.ownFilters(), types.Filter{Name: aws.String("tag-key"), Values: []string{TagReplacedBy}})
	p := ec2.NewDescribeVolumesPaginator(m.o.EC2, &ec2.DescribeVolumesInput{Filters: filters})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("checkpoint: catalogue: DescribeVolumes (replaced): %w", err)
		}
		for _, v := range page.Volumes {
			if led.Replaced[aws.ToString(v.VolumeId)] == nil {
				skipped = append(skipped, fmt.Sprintf("volume %s tagged %s: the agent never replaced it", aws.ToString(v.VolumeId), TagReplacedBy))
			}
		}
	}
	if len(led.Replaced) == 0 {
		return nil, skipped, nil
	}
	ids := make([]string, 0, len(led.Replaced))
	for id := range led.Replaced {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	p = ec2.NewDescribeVolumesPaginator(m.o.EC2, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("volume-id"), Values: ids}}})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("checkpoint: catalogue: DescribeVolumes (replaced): %w", err)
		}
		for _, v := range page.Volumes {
			id := aws.ToString(v.VolumeId)
			if r := led.Replaced[id]; r != nil && v.State != types.VolumeStateDeleting && v.State != types.VolumeStateDeleted {
				out = append(out, api.ReplacedVolume{VolumeID: id, ReplacedBy: r.By, Checkpoint: r.Checkpoint, DeviceName: r.Device, ReplacedAt: r.At})
			}
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ReplacedAt.After(out[b].ReplacedAt) })
	return out, skipped, nil
}

// Get returns one checkpoint from a fresh catalogue.
func (m *Manager) Get(ctx context.Context, id string) (*api.Checkpoint, error) {
	list, err := m.Catalogue(ctx)
	if err != nil {
		return nil, err
	}
	for i := range list.Checkpoints {
		if list.Checkpoints[i].ID == id {
			return &list.Checkpoints[i], nil
		}
	}
	return nil, fmt.Errorf("checkpoint %s: %w", id, ErrNotFound)
}

// Cached returns a checkpoint from the cache (no AWS call).
func (m *Manager) Cached(id string) (*api.Checkpoint, error) {
	cps, err := m.o.Cache.Checkpoints()
	if err != nil {
		return nil, err
	}
	for i := range cps {
		if cps[i].ID == id {
			return &cps[i], nil
		}
	}
	return nil, fmt.Errorf("checkpoint %s: %w", id, ErrNotFound)
}

// Summary is the checkpoint part of the status, from the cache.
func (m *Manager) Summary() api.CheckpointSummary {
	cps, err := m.o.Cache.Checkpoints()
	if err != nil {
		return api.CheckpointSummary{}
	}
	s := api.CheckpointSummary{Total: len(cps)}
	for i := range cps {
		if cps[i].State == api.CheckpointPending {
			s.Pending++
		}
	}
	if len(cps) > 0 {
		s.Newest = &cps[0]
	}
	return s
}

// SetPinned pins or unpins every resource of a checkpoint (a pinned one,
// such as a release AMI kept for good, is never pruned).
func (m *Manager) SetPinned(ctx context.Context, id string, pin bool) (*api.Checkpoint, error) {
	c, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	ids := resourceIDs(c)
	if pin {
		_, err = m.o.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: ids, Tags: toTags(map[string]string{TagPinned: "true"})})
	} else {
		_, err = m.o.EC2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: ids, Tags: []types.Tag{{Key: aws.String(TagPinned)}}})
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: tag %v: %w", id, ids, err)
	}
	c.Pinned = pin
	if err := m.o.Cache.PutCheckpoint(c); err != nil {
		m.o.Log.Warn("cache checkpoint", zap.Error(err))
	}
	return c, nil
}

func resourceIDs(c *api.Checkpoint) []string {
	var ids []string
	for _, s := range c.Snapshots {
		ids = append(ids, s.SnapshotID)
	}
	if c.Image != nil {
		ids = append(ids, c.Image.ImageID)
		ids = append(ids, c.Image.SnapshotIDs...)
	}
	return ids
}
