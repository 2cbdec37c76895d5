package testbed

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// route is one EC2 action the proxy changes. Gap says what moto 5.2.1
// does wrong or lacks (checked against moto_server, and pinned by the
// tests in motogaps_test.go); empty when the row only adds what moto
// cannot have (held-back completion, the data plane).
type route struct {
	Action string
	Gap    string
	Patch  string
	Hooks  *hooks
}

// routes is the table of everything the proxy patches in moto's EC2
// answers; awsRules (awsrules.go) is the table of the AWS behaviours the
// bed plays on top (eventual consistency, busy detaches, limits, ...),
// each with its AWS source.
//
// Checked and found fine in moto 5.2.1, so not patched: CreateVolume from
// a snapshot (AZ, type, size, iops, throughput, encryption with the
// default KMS key, volume tag specs all honoured, state available at
// once); DetachVolume and AttachVolume of data volumes (available and
// in-use at once, instance mappings follow); DescribeVolumes states.
// Root replacement changes moto's own mappings (DetachVolume, AttachVolume,
// ModifyInstanceAttribute to moto directly), so DescribeInstances and
// DescribeVolumes are right without a rewrite. Found and left alone, as
// the flows here do not need them: moto lets DetachVolume detach the root
// volume of a running instance. (moto also lets AttachVolume take a
// device that is in use: awsRules, "attachment point in use".) moto
// answers HTTP 500 to a DetachVolume without InstanceId, which EC2 takes:
// busy.go fills it in from the attachment.
func (s *sim) routes() []route {
	return []route{
		{"CreateReplaceRootVolumeTask",
			"answers HTTP 500 (NotImplementedError)",
			"the proxy runs the task itself: replacement volume in moto, pending → in-progress → succeeded, root swapped in moto and in the data plane (rootreplace.go)",
			&hooks{Answer: s.createReplaceRootVolumeTask}},
		{"DescribeReplaceRootVolumeTasks",
			"answers HTTP 500 (NotImplementedError)",
			"answered from the proxy's tasks (rootreplace.go)",
			&hooks{Answer: s.describeReplaceRootVolumeTasks}},
		{"CreateImage",
			"a TagSpecification of ResourceType snapshot answers HTTP 500; and the image is a placeholder: one snapshot of a throwaway 15 GiB volume at /dev/sda1, not snapshots of the instance's volumes",
			"forward without the snapshot tag spec, then snapshot each instance volume in moto (tagged with the snapshot tags) before answering; DescribeImages then shows those mappings and DescribeSnapshots hides the placeholder",
			&hooks{Before: s.beforeCreateImage, After: s.afterCreateImage}},
		{"DescribeImages",
			"images are available at once; images made through the proxy are described by moto as placeholders",
			"held images are pending (hold.go); faithful block device mappings and root device; the state filter is applied to the rewritten state",
			&hooks{Before: s.beforeDescribeImages, After: s.afterDescribeImages}},
		{"CreateSnapshots",
			"the answer has no State for the snapshots; InstanceSpecification.ExcludeDataVolumeIds is ignored (the excluded volumes are snapshotted too)",
			"add State (and Progress) as DescribeSnapshots would report them; delete the snapshots of excluded volumes in moto and leave them out of the answer; record the snapshots for holds and copy their data-plane images",
			&hooks{After: s.afterCreateSnapshots}},
		{"CreateSnapshot", "",
			"report a held snapshot as pending; record it for holds and copy its data-plane image",
			&hooks{After: s.afterCreateSnapshot}},
		{"DescribeSnapshots",
			"snapshots are completed at once",
			"held snapshots are pending with a growing progress (hold.go); placeholder snapshots of images are hidden; the status filter is applied to the rewritten state",
			&hooks{Before: s.beforeDescribeSnapshots, After: s.afterDescribeSnapshots}},
		{"DeregisterImage",
			"DeleteAssociatedSnapshots=true is ignored: the snapshots stay and no DeleteSnapshotResults come back",
			"delete the image's snapshots after moto deregistered it and answer their DeleteSnapshotResults; remove moto's placeholder snapshot",
			&hooks{Before: s.beforeDeregisterImage, After: s.afterDeregisterImage}},
		{"DeleteSnapshot",
			"moto refuses to delete an image's snapshot (InvalidSnapshot.InUse) only for its placeholder, so not for the snapshots the proxy made for an image",
			"refuse InvalidSnapshot.InUse for a snapshot of a registered image made through the proxy; drop a deleted snapshot's data-plane image",
			&hooks{Before: s.beforeDeleteSnapshot, After: s.afterDeleteSnapshot}},
		{"CreateVolume", "", "data plane: the new volume's image is a copy of the snapshot's, or an empty sparse image", &hooks{After: s.afterCreateVolume}},
		{"AttachVolume", "", "data plane: loop device on a data-plane instance, its by-id link after Rules.UdevDelay (none while the guest holds the name)", &hooks{After: s.afterAttachVolume}},
		{"DetachVolume", "", "data plane: free the loop device; the by-id link goes after Rules.UdevDelay (a volume in use never gets here: busy.go)", &hooks{After: s.afterDetachVolume}},
		{"DeleteVolume", "", "data plane: drop the volume's image", &hooks{After: s.afterDeleteVolume}},
		{"RunInstances",
			"from a launch template, its IamInstanceProfile and MetadataOptions are dropped (the image, type, key, security groups, user data, mappings and instance tags are applied)",
			"the proxy adds those two to the request from the template's version, where the request does not set them (as EC2 merges a template with the request)",
			&hooks{Before: s.beforeRunInstances}},
	}
}

// beforeCreateImage takes the snapshot tags out of the call (moto answers
// 500 for them) so After can put them on the snapshots.
func (s *sim) beforeCreateImage(c *call) *reply {
	var kept []url.Values
	var snapTags [][2]string
	for _, m := range structList(c.Form, "TagSpecification") {
		if m.Get("ResourceType") == "snapshot" {
			for _, t := range structList(m, "Tag") {
				snapTags = append(snapTags, [2]string{t.Get("Key"), t.Get("Value")})
			}
			continue
		}
		kept = append(kept, m)
	}
	if len(snapTags) > 0 {
		setStructList(c.Form, "TagSpecification", kept)
		c.edit()
	}
	noDevice := map[string]bool{}
	for _, m := range structList(c.Form, "BlockDeviceMapping") {
		if _, ok := m["NoDevice"]; ok {
			noDevice[m.Get("DeviceName")] = true
		}
	}
	c.stash["snapshotTags"] = snapTags
	c.stash["noDevice"] = noDevice
	return nil
}

// afterCreateImage replaces moto's placeholder image by what EC2 makes:
// one snapshot per EBS volume of the instance, carrying the snapshot
// tags, before the caller gets the image id (so it sees the tags
// atomically, as with EC2).
func (s *sim) afterCreateImage(c *call, r *reply) *reply {
	if !r.ok() {
		return r
	}
	doc, err := parseXML(r.Body)
	if err != nil {
		return internalError("read CreateImage answer", err)
	}
	imageID := doc.get("imageId")
	snapTags, _ := c.stash["snapshotTags"].([][2]string)
	noDevice, _ := c.stash["noDevice"].(map[string]bool)
	if err := s.faithfulImage(c.Ctx, imageID, c.param("InstanceId"), snapTags, noDevice); err != nil {
		return internalError("CreateImage "+imageID+": snapshot the instance's volumes", err)
	}
	return r
}

func (s *sim) faithfulImage(ctx context.Context, imageID, instanceID string, snapTags [][2]string, noDevice map[string]bool) error {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	img, err := s.moto.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{imageID}})
	if err != nil || len(img.Images) != 1 {
		return fmt.Errorf("DescribeImages %s: %d images, %v", imageID, lenImages(img), err)
	}
	var placeholders []string
	for _, m := range img.Images[0].BlockDeviceMappings {
		if m.Ebs != nil && m.Ebs.SnapshotId != nil {
			placeholders = append(placeholders, *m.Ebs.SnapshotId)
		}
	}
	inst, err := s.describeInstance(ctx, instanceID)
	if err != nil {
		return fmt.Errorf("DescribeInstances %s: %w", instanceID, err)
	}
	var ids []string
	for _, m := range inst.BlockDeviceMappings {
		if m.Ebs != nil && !noDevice[aws.ToString(m.DeviceName)] {
			ids = append(ids, aws.ToString(m.Ebs.VolumeId))
		}
	}
	vols, err := s.describeVolumes(ctx, ids)
	if err != nil {
		return fmt.Errorf("DescribeVolumes %v: %w", ids, err)
	}
	var tags []types.Tag
	for _, t := range snapTags {
		tags = append(tags, types.Tag{Key: aws.String(t[0]), Value: aws.String(t[1])})
	}
	rec := &imageRec{id: imageID, instanceID: instanceID, rootDevice: aws.ToString(inst.RootDeviceName), placeholders: placeholders}
	for _, m := range inst.BlockDeviceMappings {
		if m.Ebs == nil || noDevice[aws.ToString(m.DeviceName)] {
			continue
		}
		volID := aws.ToString(m.Ebs.VolumeId)
		in := &ec2.CreateSnapshotInput{
			VolumeId:    aws.String(volID),
			Description: aws.String(fmt.Sprintf("Created by CreateImage(%s) for %s", instanceID, imageID)),
		}
		if len(tags) > 0 {
			in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: tags}}
		}
		out, err := s.moto.CreateSnapshot(ctx, in)
		if err != nil {
			return fmt.Errorf("CreateSnapshot of %s: %w", volID, err)
		}
		v := vols[volID]
		rec.mappings = append(rec.mappings, imageMapping{
			Device: aws.ToString(m.DeviceName), SnapshotID: aws.ToString(out.SnapshotId), VolumeID: volID,
			VolumeType: string(v.VolumeType), KmsKeyID: aws.ToString(v.KmsKeyId),
			Size: aws.ToInt32(v.Size), Iops: aws.ToInt32(v.Iops), Throughput: aws.ToInt32(v.Throughput),
			DeleteOnTermination: aws.ToBool(m.Ebs.DeleteOnTermination), Encrypted: aws.ToBool(v.Encrypted),
		})
	}
	s.inheritFlags(imageID, aws.ToString(inst.ImageId))
	s.mu.Lock()
	rec.created, rec.hold = time.Now(), s.imageHold
	s.images[imageID] = rec
	for _, p := range placeholders {
		s.hidden[p] = true
	}
	s.mu.Unlock()
	for _, m := range rec.mappings {
		if err := s.snapshotCreated(m.SnapshotID, m.VolumeID); err != nil {
			return err
		}
	}
	return nil
}

func lenImages(o *ec2.DescribeImagesOutput) int {
	if o == nil {
		return 0
	}
	return len(o.Images)
}

// describeFaithfully puts a proxy-made image's real block devices into
// moto's description of it (an <item> of imagesSet).
func (s *sim) describeFaithfully(it *xnode, imageID string) {
	s.mu.Lock()
	rec := s.images[imageID]
	s.mu.Unlock()
	if rec == nil {
		return
	}
	bdm := elem("blockDeviceMapping")
	for _, m := range rec.mappings {
		ebs := elem("ebs",
			leaf("deleteOnTermination", strconv.FormatBool(m.DeleteOnTermination)),
			leaf("snapshotId", m.SnapshotID),
			leaf("volumeSize", strconv.Itoa(int(m.Size))),
			leaf("volumeType", m.VolumeType),
			leaf("encrypted", strconv.FormatBool(m.Encrypted)))
		if m.Iops > 0 {
			ebs.kids = append(ebs.kids, leaf("iops", strconv.Itoa(int(m.Iops))))
		}
		if m.Throughput > 0 {
			ebs.kids = append(ebs.kids, leaf("throughput", strconv.Itoa(int(m.Throughput))))
		}
		if m.KmsKeyID != "" {
			ebs.kids = append(ebs.kids, leaf("kmsKeyId", m.KmsKeyID))
		}
		bdm.kids = append(bdm.kids, elem("item", leaf("deviceName", m.Device), ebs))
	}
	it.replace(bdm)
	it.set("rootDeviceName", rec.rootDevice)
	it.set("rootDeviceType", "ebs")
}

// afterCreateSnapshots adds the State moto leaves out and records the
// snapshots.
func (s *sim) afterCreateSnapshots(c *call, r *reply) *reply {
	if !r.ok() {
		return r
	}
	doc, err := parseXML(r.Body)
	if err != nil {
		return internalError("read CreateSnapshots answer", err)
	}
	excluded := map[string]bool{}
	for _, v := range listParam(c.Form, "InstanceSpecification.ExcludeDataVolumeId") {
		excluded[v] = true
	}
	if len(excluded) > 0 {
		ctx, cancel := opCtx(c.Ctx)
		defer cancel()
		var failed error
		doc.child("snapshotSet").filter(func(it *xnode) bool {
			if !excluded[it.get("volumeId")] {
				return true
			}
			if _, err := s.moto.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(it.get("snapshotId"))}); err != nil {
				failed = err
			}
			return false
		})
		if failed != nil {
			return internalError("CreateSnapshots: delete the snapshot of an excluded volume", failed)
		}
	}
	now := time.Now()
	for _, it := range doc.child("snapshotSet").items() {
		id := it.get("snapshotId")
		if err := s.snapshotCreated(id, it.get("volumeId")); err != nil {
			return internalError("CreateSnapshots", err)
		}
		st, pr := s.snapshotView(id, "completed", "100%", now)
		it.set("state", st)
		it.set("progress", pr)
	}
	return xmlReply(doc)
}

// afterCreateSnapshot records the snapshot and reports a held one as
// pending.
func (s *sim) afterCreateSnapshot(c *call, r *reply) *reply {
	if !r.ok() {
		return r
	}
	doc, err := parseXML(r.Body)
	if err != nil {
		return internalError("read CreateSnapshot answer", err)
	}
	id := doc.get("snapshotId")
	if err := s.snapshotCreated(id, doc.get("volumeId")); err != nil {
		return internalError("CreateSnapshot", err)
	}
	st, pr := s.snapshotView(id, doc.get("status"), doc.get("progress"), time.Now())
	doc.set("status", st)
	doc.set("progress", pr)
	return xmlReply(doc)
}

// beforeDeregisterImage learns the image's snapshots while it still
// exists, and takes DeleteAssociatedSnapshots away from moto so that only
// the proxy acts on it (should a later moto implement it).
func (s *sim) beforeDeregisterImage(c *call) *reply {
	if !strings.EqualFold(c.param("DeleteAssociatedSnapshots"), "true") {
		return nil
	}
	imageID := c.param("ImageId")
	var ids []string
	s.mu.Lock()
	rec := s.images[imageID]
	if rec != nil {
		for _, m := range rec.mappings {
			ids = append(ids, m.SnapshotID)
		}
	}
	s.mu.Unlock()
	if rec == nil {
		ctx, cancel := opCtx(c.Ctx)
		defer cancel()
		out, err := s.moto.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{imageID}})
		if err != nil {
			return errorReply("DescribeImages "+imageID, err)
		}
		for _, im := range out.Images {
			for _, m := range im.BlockDeviceMappings {
				if m.Ebs != nil && m.Ebs.SnapshotId != nil {
					ids = append(ids, *m.Ebs.SnapshotId)
				}
			}
		}
	}
	c.Form.Del("DeleteAssociatedSnapshots")
	c.edit()
	c.stash["deleteSnapshots"] = ids
	return nil
}

// afterDeregisterImage deletes the snapshots once moto deregistered the
// image (EC2 refuses to delete a snapshot a registered image uses).
func (s *sim) afterDeregisterImage(c *call, r *reply) *reply {
	if !r.ok() {
		return r
	}
	ctx, cancel := opCtx(c.Ctx)
	defer cancel()
	imageID := c.param("ImageId")
	s.mu.Lock()
	rec := s.images[imageID]
	delete(s.images, imageID)
	s.mu.Unlock()
	if rec != nil {
		for _, p := range rec.placeholders {
			if _, err := s.moto.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(p)}); err != nil && !isCode(err, "InvalidSnapshot.NotFound") {
				return internalError("DeregisterImage "+imageID+": delete moto's placeholder snapshot "+p, err)
			}
			s.mu.Lock()
			delete(s.hidden, p)
			s.mu.Unlock()
		}
	}
	ids, ok := c.stash["deleteSnapshots"].([]string)
	if !ok {
		return r
	}
	doc, err := parseXML(r.Body)
	if err != nil {
		return internalError("read DeregisterImage answer", err)
	}
	results := elem("deleteSnapshotResultSet")
	for _, id := range ids {
		code := "success"
		if _, err := s.moto.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)}); err != nil {
			code = "internal-error"
			var ae smithy.APIError
			if errors.As(err, &ae) && ae.ErrorFault() != smithy.FaultServer {
				code = "client-error"
			}
		} else {
			s.forgetSnapshot(id)
		}
		results.kids = append(results.kids, elem("item", leaf("snapshotId", id), leaf("returnCode", code)))
	}
	doc.replace(results)
	return xmlReply(doc)
}

// beforeDeleteSnapshot keeps EC2's rule that a snapshot a registered
// image uses cannot be deleted (DeregisterImage first).
func (s *sim) beforeDeleteSnapshot(c *call) *reply {
	id := c.param("SnapshotId")
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rec := range s.images {
		for _, m := range rec.mappings {
			if m.SnapshotID == id {
				return ec2Error(http.StatusBadRequest, "InvalidSnapshot.InUse", fmt.Sprintf("The snapshot %s is currently in use by %s", id, rec.id))
			}
		}
	}
	return nil
}

func isCode(err error, code string) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == code
}

// dryRun answers a DryRun=true call the proxy handles itself, as EC2
// does when the caller would have been allowed.
func dryRun(c *call) *reply {
	if strings.EqualFold(c.param("DryRun"), "true") {
		return ec2Error(http.StatusPreconditionFailed, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
	}
	return nil
}

// beforeRunInstances merges what moto leaves out of a launch template
// into the request (launchtemplate.go has the rest).
func (s *sim) beforeRunInstances(c *call) *reply {
	id, name := c.param("LaunchTemplate.LaunchTemplateId"), c.param("LaunchTemplate.LaunchTemplateName")
	if id == "" && name == "" {
		return nil
	}
	data, err := s.templateData(c.Ctx, id, name, c.param("LaunchTemplate.Version"))
	if err != nil {
		return errorReply("DescribeLaunchTemplateVersions", err)
	}
	if mergeTemplate(c.Form, data) {
		c.edit()
	}
	return nil
}
