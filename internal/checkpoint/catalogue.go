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
// with it, and lists the volumes kept after restores.
func (m *Manager) Catalogue(ctx context.Context) (*api.CheckpointList, error) {
	started := time.Now().UTC()
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
	ident := m.o.Identity()
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
			c := get(tags)
			v := volByID[aws.ToString(s.VolumeId)]
			dev := v.DeviceName
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
	replaced, err := m.replacedVolumes(ctx)
	if err != nil {
		return nil, err
	}
	list.ReplacedVolumes = replaced
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

func (m *Manager) replacedVolumes(ctx context.Context) ([]api.ReplacedVolume, error) {
	filters := append(m.ownFilters(), types.Filter{Name: aws.String("tag-key"), Values: []string{TagReplacedBy}})
	p := ec2.NewDescribeVolumesPaginator(m.o.EC2, &ec2.DescribeVolumesInput{Filters: filters})
	var out []api.ReplacedVolume
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: catalogue: DescribeVolumes (replaced): %w", err)
		}
		for _, v := range page.Volumes {
			tags := tagMap(v.Tags)
			at, _ := time.Parse(time.RFC3339Nano, tags[TagCreated])
			out = append(out, api.ReplacedVolume{VolumeID: aws.ToString(v.VolumeId), ReplacedBy: tags[TagReplacedBy],
				Checkpoint: tags[TagCheckpoint], DeviceName: tags[TagDevice], ReplacedAt: at})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ReplacedAt.After(out[b].ReplacedAt) })
	return out, nil
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
