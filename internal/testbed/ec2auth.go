package testbed

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/rollback-agent/rollback-agent/internal/testbed/iamauth"
)

// The authorisations an EC2 request needs, as the EC2 API reference and
// the Service Authorization Reference describe them: the action on every
// resource the request carries (the instance, its volumes, a snapshot,
// the resources being created, named "…/*" before they have ids), each
// with its condition keys (aws:ResourceTag/… for existing resources,
// aws:RequestTag/… and aws:TagKeys for the tags given for new ones), and
// ec2:CreateTags on each resource created with tags, with ec2:CreateAction
// set to the creating action (EC2 User Guide, "Grant permission to tag
// resources during creation"). Global keys: aws:RequestedRegion,
// ec2:Region, and ec2:SourceInstanceARN for instance-profile credentials.
//
// Only the actions rollback-agent makes are modelled; any other EC2 action
// by a principal of the bed is refused with an error naming it, so a new
// call in the agent cannot pass unchecked.

// ec2Auth builds the authorisations of one request.
type ec2Auth struct {
	e       *enforcer
	p       *Principal
	ctx     context.Context
	action  string
	account string
	out     []iamauth.Request
}

func (e *enforcer) ec2Requests(ctx context.Context, p *Principal, action string, f url.Values) ([]iamauth.Request, error) {
	a := &ec2Auth{e: e, p: p, ctx: ctx, action: "ec2:" + action, account: p.Account}
	if strings.HasPrefix(action, "Describe") {
		// The Describe actions support no resource-level permissions.
		a.add(a.action, "*", nil)
		return a.out, nil
	}
	specs := tagSpecs(f)
	var err error
	switch action {
	case "CreateSnapshots":
		err = a.createSnapshots(f, specs)
	case "CreateImage":
		err = a.instance(f.Get("InstanceId"))
		a.created("image", specs["image"])
		a.created("snapshot", specs["snapshot"])
	case "CreateReplaceRootVolumeTask":
		err = a.replaceRoot(f, specs)
	case "CreateVolume":
		a.created("volume", specs["volume"])
		if s := f.Get("SnapshotId"); s != "" {
			err = a.existing(a.action, s, nil)
		}
	case "AttachVolume":
		err = a.attach(f.Get("InstanceId"), f.Get("VolumeId"))
	case "DetachVolume":
		err = a.attach(f.Get("InstanceId"), f.Get("VolumeId"))
	case "CreateTags", "DeleteTags":
		err = a.tags(f)
	case "DeleteSnapshot":
		err = a.existing(a.action, f.Get("SnapshotId"), nil)
	case "DeleteVolume":
		err = a.existing(a.action, f.Get("VolumeId"), nil)
	case "DeregisterImage":
		err = a.deregister(f)
	default:
		return nil, fmt.Errorf("the test bed has no authorisation model for ec2:%s (add it to ec2auth.go)", action)
	}
	if err != nil {
		return nil, err
	}
	// Tags given at creation are authorised as ec2:CreateTags.
	for rt, tags := range specs {
		if len(tags) == 0 {
			continue
		}
		ctx := a.requestTags(tags)
		ctx["ec2:CreateAction"] = []string{action}
		a.add("ec2:CreateTags", a.newARN(rt), ctx)
	}
	return a.out, nil
}

// add appends one authorisation with the global keys.
func (a *ec2Auth) add(action, resource string, ctx map[string][]string) {
	c := map[string][]string{"aws:RequestedRegion": {Region}, "ec2:Region": {Region}}
	if a.p.SourceInstance != "" {
		c["ec2:SourceInstanceARN"] = []string{a.p.SourceInstance}
	}
	for k, v := range ctx {
		c[k] = v
	}
	a.out = append(a.out, iamauth.Request{Action: action, Resource: resource, Context: c})
}

// arn is the ARN of an existing resource, by its id's prefix; snapshots
// and images have no account in their ARN.
func (a *ec2Auth) arn(id string) (arn, idKey string, err error) {
	kind, _, _ := strings.Cut(id, "-")
	switch kind {
	case "i":
		return fmt.Sprintf("arn:aws:ec2:%s:%s:instance/%s", Region, a.account, id), "ec2:InstanceID", nil
	case "vol":
		return fmt.Sprintf("arn:aws:ec2:%s:%s:volume/%s", Region, a.account, id), "ec2:VolumeID", nil
	case "snap":
		return fmt.Sprintf("arn:aws:ec2:%s::snapshot/%s", Region, id), "ec2:SnapshotID", nil
	case "ami":
		return fmt.Sprintf("arn:aws:ec2:%s::image/%s", Region, id), "ec2:ImageID", nil
	}
	return "", "", fmt.Errorf("the test bed has no authorisation model for resource %q", id)
}

// newARN names a resource being created.
func (a *ec2Auth) newARN(resourceType string) string {
	switch resourceType {
	case "snapshot", "image":
		return fmt.Sprintf("arn:aws:ec2:%s::%s/*", Region, resourceType)
	}
	return fmt.Sprintf("arn:aws:ec2:%s:%s:%s/*", Region, a.account, resourceType)
}

// existing authorises action on an existing resource, with its tags and
// id as condition keys, plus extra keys.
func (a *ec2Auth) existing(action, id string, extra map[string][]string) error {
	if id == "" {
		return fmt.Errorf("%s without a resource id", action)
	}
	arn, idKey, err := a.arn(id)
	if err != nil {
		return err
	}
	tags, err := a.resourceTags(id)
	if err != nil {
		return err
	}
	ctx := map[string][]string{idKey: {id}}
	for k, v := range tags {
		ctx["aws:ResourceTag/"+k] = []string{v}
		ctx["ec2:ResourceTag/"+k] = []string{v}
	}
	for k, v := range extra {
		ctx[k] = v
	}
	a.add(action, arn, ctx)
	return nil
}

// created authorises the action on a resource it creates, with the tags
// given for it.
func (a *ec2Auth) created(resourceType string, tags [][2]string) {
	a.add(a.action, a.newARN(resourceType), a.requestTags(tags))
}

func (a *ec2Auth) requestTags(tags [][2]string) map[string][]string {
	ctx := map[string][]string{}
	for _, t := range tags {
		ctx["aws:RequestTag/"+t[0]] = []string{t[1]}
		ctx["aws:TagKeys"] = append(ctx["aws:TagKeys"], t[0])
	}
	return ctx
}

// resourceTags asks moto (as the administrator) for a resource's tags.
func (a *ec2Auth) resourceTags(id string) (map[string]string, error) {
	out, err := a.e.b.sim.moto.DescribeTags(a.ctx, &ec2.DescribeTagsInput{Filters: []types.Filter{{Name: aws.String("resource-id"), Values: []string{id}}}})
	if err != nil {
		return nil, fmt.Errorf("DescribeTags of %s: %w", id, err)
	}
	m := map[string]string{}
	for _, t := range out.Tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m, nil
}

// describe asks moto for an instance.
func (a *ec2Auth) describe(id string) (types.Instance, error) {
	return a.e.b.sim.describeInstance(a.ctx, id)
}

func (a *ec2Auth) instance(id string) error { return a.existing(a.action, id, nil) }

// createSnapshots: the instance, each volume the specification takes, and
// the new snapshots.
func (a *ec2Auth) createSnapshots(f url.Values, specs map[string][][2]string) error {
	id := f.Get("InstanceSpecification.InstanceId")
	if err := a.instance(id); err != nil {
		return err
	}
	inst, err := a.describe(id)
	if err != nil {
		return err
	}
	excludeRoot := strings.EqualFold(f.Get("InstanceSpecification.ExcludeBootVolume"), "true")
	excluded := listParam(f, "InstanceSpecification.ExcludeDataVolumeId")
	for _, m := range inst.BlockDeviceMappings {
		if m.Ebs == nil {
			continue
		}
		vol := aws.ToString(m.Ebs.VolumeId)
		root := aws.ToString(m.DeviceName) == aws.ToString(inst.RootDeviceName)
		if (root && excludeRoot) || (!root && slices.Contains(excluded, vol)) {
			continue
		}
		if err := a.existing(a.action, vol, nil); err != nil {
			return err
		}
	}
	a.created("snapshot", specs["snapshot"])
	return nil
}

// replaceRoot: the instance, its root volume, the snapshot or image it is
// restored from, and the new task.
func (a *ec2Auth) replaceRoot(f url.Values, specs map[string][][2]string) error {
	id := f.Get("InstanceId")
	if err := a.instance(id); err != nil {
		return err
	}
	inst, err := a.describe(id)
	if err != nil {
		return err
	}
	for _, m := range inst.BlockDeviceMappings {
		if m.Ebs != nil && aws.ToString(m.DeviceName) == aws.ToString(inst.RootDeviceName) {
			if err := a.existing(a.action, aws.ToString(m.Ebs.VolumeId), nil); err != nil {
				return err
			}
		}
	}
	for _, src := range []string{f.Get("SnapshotId"), f.Get("ImageId")} {
		if src != "" {
			if err := a.existing(a.action, src, nil); err != nil {
				return err
			}
		}
	}
	a.created("replace-root-volume-task", specs["replace-root-volume-task"])
	return nil
}

// attach covers AttachVolume and DetachVolume: the instance and the
// volume (DetachVolume may leave the instance out: it is the one the
// volume is attached to).
func (a *ec2Auth) attach(instance, volume string) error {
	if instance == "" && volume != "" {
		out, err := a.e.b.sim.moto.DescribeVolumes(a.ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{volume}})
		if err != nil {
			return fmt.Errorf("DescribeVolumes %s: %w", volume, err)
		}
		for _, v := range out.Volumes {
			for _, at := range v.Attachments {
				instance = aws.ToString(at.InstanceId)
			}
		}
	}
	if err := a.instance(instance); err != nil {
		return err
	}
	return a.existing(a.action, volume, nil)
}

// tags covers CreateTags and DeleteTags: each resource, with the tag keys
// (and values, where given) of the request.
func (a *ec2Auth) tags(f url.Values) error {
	var tags [][2]string
	for _, t := range structList(f, "Tag") {
		tags = append(tags, [2]string{t.Get("Key"), t.Get("Value")})
	}
	ctx := map[string][]string{}
	for _, t := range tags {
		ctx["aws:TagKeys"] = append(ctx["aws:TagKeys"], t[0])
		if a.action == "ec2:CreateTags" || t[1] != "" {
			ctx["aws:RequestTag/"+t[0]] = []string{t[1]}
		}
	}
	for _, id := range listParam(f, "ResourceId") {
		if err := a.existing(a.action, id, ctx); err != nil {
			return err
		}
	}
	return nil
}

// deregister: the image, and with DeleteAssociatedSnapshots its snapshots
// under ec2:DeleteSnapshot.
func (a *ec2Auth) deregister(f url.Values) error {
	id := f.Get("ImageId")
	if err := a.existing(a.action, id, nil); err != nil {
		return err
	}
	if !strings.EqualFold(f.Get("DeleteAssociatedSnapshots"), "true") {
		return nil
	}
	for _, snap := range a.e.b.sim.imageSnapshots(a.ctx, id) {
		if err := a.existing("ec2:DeleteSnapshot", snap, nil); err != nil {
			return err
		}
	}
	return nil
}

// imageSnapshots lists an image's snapshots: the faithful mappings of an
// image made through the proxy, else moto's description.
func (s *sim) imageSnapshots(ctx context.Context, imageID string) []string {
	s.mu.Lock()
	rec := s.images[imageID]
	s.mu.Unlock()
	var out []string
	if rec != nil {
		for _, m := range rec.mappings {
			out = append(out, m.SnapshotID)
		}
		return out
	}
	d, err := s.moto.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{imageID}})
	if err != nil {
		return nil
	}
	for _, img := range d.Images {
		for _, m := range img.BlockDeviceMappings {
			if m.Ebs != nil && m.Ebs.SnapshotId != nil {
				out = append(out, aws.ToString(m.Ebs.SnapshotId))
			}
		}
	}
	return out
}
