package testbed

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// Attachments as EC2 keeps them, for the data-plane instances.
//
// Busy detaches. DetachVolume API reference
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DetachVolume.html):
// "Make sure to unmount any file systems on the device within your
// operating system before detaching the volume. Failure to do so can
// result in the volume becoming stuck in the busy state while detaching.
// If this happens, detachment can be delayed indefinitely until you
// unmount the volume, force detachment, reboot the instance, or all
// three." moto detaches at once. The bed accepts the call and keeps the
// attachment busy while anything on the host uses the device: a mount in
// any mount namespace, of the device or of one of its partitions, or a
// holder (device-mapper, md).
//
// Device names in use. EC2 refuses an attachment point another volume
// holds: "InvalidParameterValue: Invalid value '/dev/sdf' for unixDevice.
// Attachment point /dev/sdf is already in use" (as reported in
// kubernetes/kubernetes#31891, kubermatic/kubeone#2859); moto silently
// replaces the mapping. A name the guest's driver still holds (after a
// force detach, or a detach while mounted) leaves the new attachment
// stuck "attaching" until the instance reboots (AWS Knowledge Center,
// "Why is my EBS volume stuck in the attaching state?",
// https://repost.aws/knowledge-center/ebs-stuck-attaching, the reason the
// Kubernetes AWS provider stopped reusing names: kubernetes#38818).
//
// Asynchronous devices. The volume is "attaching" until the guest sees
// it; its /dev/disk/by-id link is made by udev some time after, and a
// detached volume's link can linger (aws-ebs-csi-driver#1224: stale
// by-id links made a pod mount the wrong volume). See Rules.UdevDelay.

// busyDetach is a DetachVolume EC2 accepted of a volume still in use.
type busyDetach struct {
	instanceID, device string
	since              time.Time
}

// attachments is the rule's hooks for an EC2 action.
func (s *sim) attachments(op Op) *hooks {
	switch op.Action {
	case "DetachVolume":
		return &hooks{Before: s.detachMaybeBusy, After: s.afterForceDetach}
	case "AttachVolume":
		return &hooks{Before: s.attachPoint}
	case "DescribeVolumes":
		return &hooks{Before: s.settleBeforeCall, After: s.attachmentStates}
	case "DescribeInstances":
		return &hooks{Before: s.settleBeforeCall}
	}
	return nil
}

func (s *sim) settleBeforeCall(c *call) *reply {
	if err := s.settleBusy(c.Ctx, ""); err != nil {
		return internalError("complete busy detaches", err)
	}
	return nil
}

// detachMaybeBusy accepts the detach of a volume in use without doing
// it: the attachment stays busy until settleBusy sees it free.
func (s *sim) detachMaybeBusy(c *call) *reply {
	if strings.EqualFold(c.param("DryRun"), "true") {
		// DryRun only asks about permissions: EC2 answers it without
		// looking at the volume's use (agentctl doctor asks it).
		return nil
	}
	vol := c.param("VolumeId")
	force := strings.EqualFold(c.param("Force"), "true")
	if err := s.settleBusy(c.Ctx, ""); err != nil {
		return internalError("complete busy detaches", err)
	}
	if c.param("InstanceId") == "" {
		// InstanceId is optional for EC2; moto 5.2.1 answers HTTP 500
		// without it. Fill it in from the attachment.
		if inst, _, err := s.attachmentOf(c.Ctx, vol); err == nil && inst != "" {
			c.Form.Set("InstanceId", inst)
			c.edit()
		}
	}
	s.mu.Lock()
	b := s.busy[vol]
	if b != nil && force {
		delete(s.busy, vol) // forced: moto detaches it now
	}
	s.mu.Unlock()
	if b != nil && !force {
		return detachReply(vol, b.instanceID, b.device, "busy")
	}
	users, err := s.dp.usersOf(vol)
	if err != nil {
		return internalError("data plane: who uses "+vol, err)
	}
	if len(users) == 0 {
		return nil
	}
	if force {
		// The guest keeps the device (and its name) until it reboots.
		c.stash["forcedInUse"] = true
		return nil
	}
	inst, dev, err := s.attachmentOf(c.Ctx, vol)
	if err != nil {
		return errorReply("DescribeVolumes "+vol, err)
	}
	if inst == "" {
		return nil // not attached: moto answers IncorrectState
	}
	s.mu.Lock()
	s.busy[vol] = &busyDetach{instanceID: inst, device: dev, since: time.Now()}
	s.mu.Unlock()
	return detachReply(vol, inst, dev, "detaching")
}

// afterForceDetach keeps the device name of a volume force-detached while
// in use held by the guest.
func (s *sim) afterForceDetach(c *call, r *reply) *reply {
	if !r.ok() || c.stash["forcedInUse"] == nil {
		return r
	}
	doc, err := parseXML(r.Body)
	if err == nil {
		s.holdName(doc.get("instanceId"), doc.get("device"))
	}
	return r
}

func detachReply(vol, inst, dev, status string) *reply {
	return xmlReply(ec2Doc("DetachVolume",
		leaf("volumeId", vol), leaf("instanceId", inst), leaf("device", dev), leaf("status", status),
		leaf("attachTime", time.Now().UTC().Format(awsTime)), leaf("deleteOnTermination", "false")))
}

// attachmentOf is where moto says vol is attached ("" when it is not).
func (s *sim) attachmentOf(ctx context.Context, vol string) (instance, device string, err error) {
	vols, err := s.describeVolumes(ctx, []string{vol})
	if err != nil {
		return "", "", err
	}
	for _, a := range vols[vol].Attachments {
		return aws.ToString(a.InstanceId), aws.ToString(a.Device), nil
	}
	return "", "", nil
}

// settleBusy completes the busy detaches whose volume nothing uses any
// more (or all of instanceID's: the instance rebooted).
func (s *sim) settleBusy(ctx context.Context, rebooted string) error {
	s.mu.Lock()
	pending := map[string]*busyDetach{}
	for v, b := range s.busy {
		pending[v] = b
	}
	s.mu.Unlock()
	for vol, b := range pending {
		if b.instanceID != rebooted {
			users, err := s.dp.usersOf(vol)
			if err != nil {
				return err
			}
			if len(users) > 0 {
				continue
			}
		}
		cctx, cancel := opCtx(ctx)
		_, err := s.moto.DetachVolume(cctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(b.instanceID)})
		cancel()
		if err != nil && !isCode(err, "IncorrectState") && !isCode(err, "InvalidVolume.NotFound") {
			return fmt.Errorf("detach %s: %w", vol, err)
		}
		s.detachStarted(vol)
		if err := s.dp.detach(vol, s.currentRules().UdevDelay); err != nil {
			return err
		}
		s.mu.Lock()
		delete(s.busy, vol)
		s.mu.Unlock()
	}
	return nil
}

// attachPoint refuses an attachment point in use, and marks an attach at
// a name the guest still holds as stuck.
func (s *sim) attachPoint(c *call) *reply {
	if strings.EqualFold(c.param("DryRun"), "true") {
		return nil // permissions only, as for DetachVolume
	}
	if err := s.settleBusy(c.Ctx, ""); err != nil {
		return internalError("complete busy detaches", err)
	}
	inst, dev := c.param("InstanceId"), c.param("Device")
	i, err := s.describeInstance(c.Ctx, inst)
	if err != nil {
		return errorReply("DescribeInstances "+inst, err)
	}
	for _, m := range i.BlockDeviceMappings {
		if aws.ToString(m.DeviceName) == dev {
			return ec2Error(http.StatusBadRequest, "InvalidParameterValue",
				fmt.Sprintf("Invalid value '%s' for unixDevice. Attachment point %s is already in use", dev, dev))
		}
	}
	s.mu.Lock()
	held := s.heldNames[inst][dev]
	s.mu.Unlock()
	if held {
		c.stash["stuck"] = true
	}
	return nil
}

// holdName marks dev as still held by instanceID's guest.
func (s *sim) holdName(instanceID, dev string) {
	if instanceID == "" || dev == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.heldNames[instanceID] == nil {
		s.heldNames[instanceID] = map[string]bool{}
	}
	s.heldNames[instanceID][dev] = true
}

// HoldDeviceName makes the guest of i hold dev, as after a force detach
// or a volume detached while the kernel still used it: the next volume
// attached there stays "attaching" (no block device appears) until the
// instance reboots (a root replacement) or the volume is detached again.
func (i *Instance) HoldDeviceName(dev string) {
	i.bed.sim.holdName(i.Doc.InstanceID, dev)
}

// rebooted forgets what a reboot of instanceID releases: held names and
// busy detaches.
func (s *sim) rebooted(ctx context.Context, instanceID string) error {
	s.mu.Lock()
	delete(s.heldNames, instanceID)
	s.mu.Unlock()
	return s.settleBusy(ctx, instanceID)
}

// attachmentStates shows busy detaches as busy and attachments whose
// device has not appeared as attaching.
func (s *sim) attachmentStates(c *call, r *reply) *reply {
	if !r.ok() {
		return r
	}
	now := time.Now()
	s.mu.Lock()
	states := map[string]string{}
	for v := range s.busy {
		states[v] = "busy"
	}
	for v, until := range s.attaching {
		if until.IsZero() || now.Before(until) {
			states[v] = "attaching"
		} else {
			delete(s.attaching, v)
		}
	}
	s.mu.Unlock()
	if len(states) == 0 {
		return r
	}
	doc, err := parseXML(r.Body)
	if err != nil {
		return internalError("rewrite DescribeVolumes attachments", err)
	}
	for _, it := range doc.child("volumeSet").items() {
		st := states[it.get("volumeId")]
		if st == "" {
			continue
		}
		for _, a := range it.child("attachmentSet").items() {
			a.set("status", st)
		}
	}
	return xmlReply(doc)
}

// attachStarted records that vol's device shows up only after d (0:
// never, stuck).
func (s *sim) attachStarted(vol string, d time.Duration, stuck bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case stuck:
		s.attaching[vol] = time.Time{}
	case d > 0:
		s.attaching[vol] = time.Now().Add(d)
	}
}

// detachStarted forgets an attachment that never completed.
func (s *sim) detachStarted(vol string) {
	s.mu.Lock()
	delete(s.attaching, vol)
	s.mu.Unlock()
}
