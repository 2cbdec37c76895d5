package testbed

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Root-volume replacement, which moto lacks: the proxy runs the task the
// way EC2 describes it (pending while the replacement volume is made,
// in-progress while the instance reboots onto it, then succeeded), on
// moto's control plane and, for data-plane instances, on loop devices.

// Task states the proxy reports.
const (
	rootPending        = "pending"
	rootInProgress     = "in-progress"
	rootSucceeded      = "succeeded"
	rootFailed         = "failed"
	rootFailedDetached = "failed-detached"
	// A failing task passes through these before it ends (EC2 User
	// Guide, replace-root.html, "Root volume replacement task states").
	rootFailing         = "failing"
	rootFailingDetached = "failing-detached"
)

// RootReplacement tells an OnRootReplace callback what is being replaced.
type RootReplacement struct {
	TaskID, InstanceID, SnapshotID, ImageID, OldVolumeID, NewVolumeID string
	// State is the state the task ends in once the callback returns:
	// succeeded (the new volume is the root now, and for a data-plane
	// instance the root by-id link points to its loop device), failed
	// (the old root stays) or failed-detached (no root is attached).
	State string
}

// rootTask is one replacement; its fields change under sim.mu.
type rootTask struct {
	id, instanceID, snapshotID, imageID string
	// source is the snapshot the new volume is made from (the image's
	// root snapshot for an image).
	source              string
	deleteOld           bool
	tags                [][2]string
	rootDevice          string
	oldVol, newVol      string
	deleteOnTermination bool
	outcome             string // what the task will end in
	params              string // the call's parameters, for its ClientToken
	state               string
	start, complete     time.Time
	err                 error
}

// OnRootReplace installs the callback run while a replacement task is
// in-progress, after the root was swapped (in moto and, for data-plane
// instances, the by-id link) and before the task reaches its final
// state: the test simulates the reboot there. nil removes it.
func (b *Bed) OnRootReplace(fn func(RootReplacement)) {
	b.sim.mu.Lock()
	b.sim.onRoot = fn
	b.sim.mu.Unlock()
}

// FailNextRootReplace makes the next CreateReplaceRootVolumeTask end in
// state ("failed": the old root stays attached; "failed-detached": the
// instance is left without a root volume).
func (b *Bed) FailNextRootReplace(state string) {
	if state != rootFailed && state != rootFailedDetached {
		panic("testbed: FailNextRootReplace: state must be failed or failed-detached, not " + strconv.Quote(state))
	}
	b.sim.mu.Lock()
	b.sim.failNext = state
	b.sim.mu.Unlock()
}

// RootReplaceError is what went wrong in task taskID's background work
// (the proxy's own calls to moto, the data plane, a callback that
// panicked), nil when nothing did or the task is unknown.
func (b *Bed) RootReplaceError(taskID string) error {
	b.sim.mu.Lock()
	defer b.sim.mu.Unlock()
	if t := b.sim.tasks[taskID]; t != nil {
		return t.err
	}
	return nil
}

func (s *sim) createReplaceRootVolumeTask(c *call) *reply {
	if rep := dryRun(c); rep != nil {
		return rep
	}
	// One creation at a time: ClientToken idempotency must hold for
	// concurrent retries too.
	s.createMu.Lock()
	defer s.createMu.Unlock()
	token := c.param("ClientToken")
	s.mu.Lock()
	if t := s.tasks[s.tokens[token]]; token != "" && t != nil {
		if t.params != tokenParams(c) {
			// Ensuring idempotency in Amazon EC2 API requests
			// (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html).
			s.mu.Unlock()
			return ec2Error(http.StatusBadRequest, "IdempotentParameterMismatch",
				fmt.Sprintf("The client token %q was used for a replacement task with other parameters (%s).", token, t.id))
		}
		doc := ec2Doc("CreateReplaceRootVolumeTask", taskXML("replaceRootVolumeTask", t))
		s.mu.Unlock()
		return xmlReply(doc)
	}
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return internalError("CreateReplaceRootVolumeTask", errors.New("the test bed is closing"))
	}
	t, rep := s.prepareTask(c)
	if rep != nil {
		return rep
	}
	t.params = tokenParams(c)
	s.mu.Lock()
	t.outcome, s.failNext = cmp.Or(s.failNext, rootSucceeded), ""
	s.tasks[t.id] = t
	if token != "" {
		s.tokens[token] = t.id
	}
	doc := ec2Doc("CreateReplaceRootVolumeTask", taskXML("replaceRootVolumeTask", t))
	delay := s.delay()
	s.wg.Add(1)
	s.mu.Unlock()
	go s.runTask(t, delay)
	return xmlReply(doc)
}

// prepareTask validates the call against moto and makes the replacement
// volume, as EC2 does while the task is pending.
func (s *sim) prepareTask(c *call) (*rootTask, *reply) {
	ctx, cancel := opCtx(c.Ctx)
	defer cancel()
	t := &rootTask{
		id: newID("replacevol-"), instanceID: c.param("InstanceId"),
		snapshotID: c.param("SnapshotId"), imageID: c.param("ImageId"),
		deleteOld: strings.EqualFold(c.param("DeleteReplacedRootVolume"), "true"),
		tags:      tagSpecs(c.Form)["replace-root-volume-task"],
		state:     rootPending, start: time.Now().UTC(),
	}
	switch {
	case t.instanceID == "":
		return nil, ec2Error(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter InstanceId")
	case t.snapshotID != "" && t.imageID != "":
		return nil, ec2Error(http.StatusBadRequest, "InvalidParameterCombination", "Specify either SnapshotId or ImageId, not both")
	case c.param("VolumeId") != "":
		return nil, ec2Error(http.StatusBadRequest, "InvalidParameterValue", "VolumeId is not supported by the test bed's proxy")
	}
	inst, err := s.describeInstance(ctx, t.instanceID)
	if err != nil {
		return nil, errorReply("DescribeInstances "+t.instanceID, err)
	}
	if inst.State == nil || inst.State.Name != types.InstanceStateNameRunning {
		return nil, ec2Error(http.StatusBadRequest, "IncorrectInstanceState",
			fmt.Sprintf("The instance '%s' is not in a valid state for this operation (it must be running).", t.instanceID))
	}
	t.rootDevice = aws.ToString(inst.RootDeviceName)
	for _, m := range inst.BlockDeviceMappings {
		if aws.ToString(m.DeviceName) == t.rootDevice && m.Ebs != nil {
			t.oldVol, t.deleteOnTermination = aws.ToString(m.Ebs.VolumeId), aws.ToBool(m.Ebs.DeleteOnTermination)
		}
	}
	if t.oldVol == "" {
		return nil, ec2Error(http.StatusBadRequest, "IncorrectInstanceState", fmt.Sprintf("The instance '%s' has no EBS root volume at %s.", t.instanceID, t.rootDevice))
	}
	switch {
	case t.snapshotID != "":
		t.source = t.snapshotID
	case t.imageID != "":
		t.source, err = s.rootSnapshotOf(ctx, t.imageID)
	default: // the launch state: the root snapshot of the instance's image
		t.source, err = s.rootSnapshotOf(ctx, aws.ToString(inst.ImageId))
	}
	if err != nil {
		return nil, errorReply("find the root snapshot", err)
	}
	snaps, err := s.moto.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{t.source}})
	if err != nil {
		return nil, errorReply("DescribeSnapshots "+t.source, err)
	}
	vols, err := s.describeVolumes(ctx, []string{t.oldVol})
	if err != nil {
		return nil, errorReply("DescribeVolumes "+t.oldVol, err)
	}
	old := vols[t.oldVol]
	if rep := s.rootReplaceRefusal(ctx, t, inst, old); rep != nil {
		return nil, rep
	}
	// EC2 keeps the original's type and size (a bigger snapshot wins).
	size := aws.ToInt32(old.Size)
	if len(snaps.Snapshots) == 1 {
		size = max(size, aws.ToInt32(snaps.Snapshots[0].VolumeSize))
	}
	in := &ec2.CreateVolumeInput{
		AvailabilityZone: inst.Placement.AvailabilityZone, SnapshotId: aws.String(t.source),
		VolumeType: old.VolumeType, Size: aws.Int32(size),
	}
	switch old.VolumeType {
	case types.VolumeTypeGp3:
		in.Iops, in.Throughput = old.Iops, old.Throughput
	case types.VolumeTypeIo1, types.VolumeTypeIo2:
		in.Iops = old.Iops
	}
	nv, err := s.moto.CreateVolume(ctx, in)
	if err != nil {
		return nil, errorReply("CreateVolume from "+t.source, err)
	}
	t.newVol = aws.ToString(nv.VolumeId)
	if err := s.dp.volumeCreated(t.newVol, t.source, int64(size)); err != nil {
		return nil, internalError("data plane: image of "+t.newVol, err)
	}
	return t, nil
}

// rootSnapshotOf is the snapshot of an image's root device.
func (s *sim) rootSnapshotOf(ctx context.Context, imageID string) (string, error) {
	root, err := s.imageRoot(ctx, imageID)
	if err != nil {
		return "", err
	}
	if root.SnapshotID == "" {
		return "", &apiError{code: "InvalidAMIID.NotFound", msg: fmt.Sprintf("The image id '[%s]' has no EBS root snapshot", imageID)}
	}
	return root.SnapshotID, nil
}

// runTask is the task's life after CreateReplaceRootVolumeTask answered.
func (s *sim) runTask(t *rootTask, delay time.Duration) {
	defer s.wg.Done()
	select {
	case <-time.After(delay):
	case <-s.closing:
		s.settle(t, rootFailed, errors.New("the test bed closed before the task ran"))
		return
	}
	s.mu.Lock()
	t.state = rootInProgress
	outcome, fn := t.outcome, s.onRoot
	s.mu.Unlock()
	// Detaching and attaching take a while too.
	select {
	case <-time.After(delay / 2):
	case <-s.closing:
	}
	var err error
	switch outcome {
	case rootSucceeded:
		if err = s.swapRoot(t); err != nil {
			outcome = rootFailed
		}
	case rootFailedDetached:
		err = s.detachRoot(t)
	}
	if outcome != rootSucceeded {
		s.mu.Lock()
		t.state = rootFailing
		if outcome == rootFailedDetached {
			t.state = rootFailingDetached
		}
		s.mu.Unlock()
		select {
		case <-time.After(delay / 2):
		case <-s.closing:
		}
	}
	// The callback may end this goroutine (t.FailNow) or panic: the task
	// still settles, so pollers never wait forever.
	returned := false
	defer func() {
		if !returned {
			err = errors.Join(err, errors.New("OnRootReplace callback did not return (runtime.Goexit, e.g. t.FailNow)"))
		}
		s.settle(t, outcome, err)
	}()
	if fn != nil {
		err = errors.Join(err, callRoot(fn, RootReplacement{
			TaskID: t.id, InstanceID: t.instanceID, SnapshotID: t.snapshotID, ImageID: t.imageID,
			OldVolumeID: t.oldVol, NewVolumeID: t.newVol, State: outcome,
		}))
	}
	returned = true
}

func callRoot(fn func(RootReplacement), r RootReplacement) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("OnRootReplace callback panicked: %v", p)
		}
	}()
	fn(r)
	return nil
}

// swapRoot puts the new volume in the old one's place, in moto and in the
// data plane. On failure it puts the old one back (EC2: a failed task
// leaves the original root attached).
func (s *sim) swapRoot(t *rootTask) error {
	ctx, cancel := opCtx(context.Background())
	defer cancel()
	if _, err := s.moto.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(t.oldVol), InstanceId: aws.String(t.instanceID)}); err != nil {
		return fmt.Errorf("detach old root %s: %w", t.oldVol, err)
	}
	attach := func(vol string) error {
		if _, err := s.moto.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(t.instanceID), Device: aws.String(t.rootDevice)}); err != nil {
			return fmt.Errorf("attach %s at %s: %w", vol, t.rootDevice, err)
		}
		// A root keeps its DeleteOnTermination; AttachVolume would reset it.
		_, err := s.moto.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{
			InstanceId: aws.String(t.instanceID),
			BlockDeviceMappings: []types.InstanceBlockDeviceMappingSpecification{{
				DeviceName: aws.String(t.rootDevice),
				Ebs:        &types.EbsInstanceBlockDeviceSpecification{VolumeId: aws.String(vol), DeleteOnTermination: aws.Bool(t.deleteOnTermination)},
			}},
		})
		if err != nil {
			return fmt.Errorf("keep DeleteOnTermination of %s: %w", vol, err)
		}
		return nil
	}
	if err := attach(t.newVol); err != nil {
		return errors.Join(err, attach(t.oldVol))
	}
	if err := s.dp.replaceRoot(t.instanceID, t.oldVol, t.newVol); err != nil {
		return fmt.Errorf("data plane: %w", err)
	}
	// The instance reboots onto the new root: the guest lets go of the
	// device names it held, and busy detaches complete.
	return s.rebooted(ctx, t.instanceID)
}

// detachRoot leaves the instance without a root (failed-detached).
func (s *sim) detachRoot(t *rootTask) error {
	ctx, cancel := opCtx(context.Background())
	defer cancel()
	if _, err := s.moto.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(t.oldVol), InstanceId: aws.String(t.instanceID)}); err != nil {
		return fmt.Errorf("detach old root %s: %w", t.oldVol, err)
	}
	if err := s.dp.detach(t.oldVol, 0); err != nil {
		return fmt.Errorf("data plane: %w", err)
	}
	return nil
}

// settle cleans up after the reboot and gives the task its final state:
// the old root goes if asked (only after a success), a replacement volume
// that did not become the root goes, and loop devices the test unmounted
// are freed.
func (s *sim) settle(t *rootTask, outcome string, err error) {
	ctx, cancel := opCtx(context.Background())
	defer cancel()
	drop := ""
	switch {
	case outcome == rootSucceeded && t.deleteOld:
		drop = t.oldVol
	case outcome != rootSucceeded:
		drop = t.newVol
	}
	if drop != "" {
		if _, derr := s.moto.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(drop)}); derr != nil {
			err = errors.Join(err, fmt.Errorf("delete %s: %w", drop, derr))
		}
		err = errors.Join(err, s.dp.deleteVolume(drop))
	}
	s.dp.reapInstance(t.instanceID)
	s.mu.Lock()
	t.state, t.complete, t.err = outcome, time.Now().UTC(), err
	s.mu.Unlock()
}

// describeReplaceRootVolumeTasks answers from the proxy's tasks, by id or
// with the instance-id filter.
func (s *sim) describeReplaceRootVolumeTasks(c *call) *reply {
	if rep := dryRun(c); rep != nil {
		return rep
	}
	ids := listParam(c.Form, "ReplaceRootVolumeTaskId")
	var fs []filterSpec
	for _, m := range structList(c.Form, "Filter") {
		if m.Get("Name") != "instance-id" {
			return ec2Error(http.StatusBadRequest, "InvalidParameterValue", fmt.Sprintf("The filter '%s' is invalid", m.Get("Name")))
		}
		fs = append(fs, filterSpec{Name: "instance-id", Values: listParam(m, "Value")})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var tasks []*rootTask
	if len(ids) > 0 {
		for _, id := range ids {
			t := s.tasks[id]
			if t == nil {
				// The code other EC2 emulators use; AWS documents none.
				return ec2Error(http.StatusBadRequest, "InvalidReplaceRootVolumeTaskId.NotFound", fmt.Sprintf("The replace root volume task ID '%s' does not exist", id))
			}
			tasks = append(tasks, t)
		}
	} else {
		for _, t := range s.tasks {
			tasks = append(tasks, t)
		}
	}
	sort.Slice(tasks, func(i, j int) bool { return tasks[i].start.Before(tasks[j].start) })
	set := elem("replaceRootVolumeTaskSet")
	for _, t := range tasks {
		if matchFilters(fs, func(string) string { return t.instanceID }) {
			x := taskXML("item", t)
			set.kids = append(set.kids, x)
		}
	}
	return xmlReply(ec2Doc("DescribeReplaceRootVolumeTasks", set))
}

// taskXML is a task as the SDK's deserializer expects it (call with
// sim.mu held).
func taskXML(name string, t *rootTask) *xnode {
	n := elem(name,
		leaf("replaceRootVolumeTaskId", t.id),
		leaf("instanceId", t.instanceID),
		leaf("taskState", t.state),
		leaf("startTime", t.start.Format(awsTime)),
		leaf("deleteReplacedRootVolume", strconv.FormatBool(t.deleteOld)))
	if !t.complete.IsZero() {
		n.kids = append(n.kids, leaf("completeTime", t.complete.Format(awsTime)))
	}
	if t.snapshotID != "" {
		n.kids = append(n.kids, leaf("snapshotId", t.snapshotID))
	}
	if t.imageID != "" {
		n.kids = append(n.kids, leaf("imageId", t.imageID))
	}
	tags := elem("tagSet")
	for _, kv := range t.tags {
		tags.kids = append(tags.kids, elem("item", leaf("key", kv[0]), leaf("value", kv[1])))
	}
	n.kids = append(n.kids, tags)
	return n
}

const awsTime = "2006-01-02T15:04:05.000Z"

// newID is an EC2-style id: prefix and 17 hex digits.
func newID(prefix string) string {
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)[:17]
}
