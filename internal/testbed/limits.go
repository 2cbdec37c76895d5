package testbed

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// EC2's limits that moto does not keep (or keeps differently), enforced
// on every call through the proxy.

// Tag restrictions. EC2 User Guide, "Tag your Amazon EC2 resources", Tag
// restrictions (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions):
// at most 50 tags per resource, keys of at most 128 and values of at most
// 256 Unicode characters in UTF-8; tags with the aws: prefix do not count
// against the limit. moto counts tags (TagLimitExceeded) but accepts
// values of any length.
const (
	maxTags        = 50
	maxTagKeyRunes = 128
	maxTagValRunes = 256
	// maxDescription: CreateImage API reference, Description
	// "Constraints: Up to 255 characters"; the EC2 console and API refuse
	// longer snapshot descriptions the same way.
	maxDescription = 255
)

// maxPendingPerVolume is EBS's limit of concurrent (pending) snapshots
// of one volume. EBS User Guide, "Create Amazon EBS snapshots"
// (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-creating-snapshot.html)
// and the EC2 error codes reference, ConcurrentSnapshotLimitExceeded:
// five for a volume, one for st1 and sc1; snapshots of an AMI being made
// and of other tools (AWS Backup, DLM) count, and so do snapshots deleted
// while pending. moto completes every snapshot at once.
func bedMaxPending(volumeType string) int {
	if volumeType == "st1" || volumeType == "sc1" {
		return 1
	}
	return 5
}

// idemRec is a ClientToken already used: the parameters it came with and
// the answer.
type idemRec struct {
	params string
	answer *reply
}

// ghostSnap is a pending snapshot that was deleted: it counts against its
// volume until it would have completed.
type ghostSnap struct {
	volumeID string
	until    time.Time
}

// limits is the rule's hooks for an EC2 action.
func (s *sim) limits(op Op) *hooks {
	h := &hooks{Before: s.checkTagsAndText}
	switch op.Action {
	case "CreateSnapshots", "CreateSnapshot", "CreateImage":
		h.Before = chain(h.Before, s.checkPendingLimit)
	case "DeleteSnapshot":
		h.Before = chain(h.Before, s.notePendingDelete)
		h.After = s.keepGhost
	case "CreateVolume", "RunInstances":
		// Ensuring idempotency in Amazon EC2 API requests
		// (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html):
		// a repeated ClientToken returns the first result; the same token
		// with other parameters answers IdempotentParameterMismatch. moto
		// ignores the token and creates again.
		h.Answer = s.idempotentAnswer
		h.After = s.rememberToken
	}
	return h
}

// chain runs a, then b unless a answered.
func chain(a, b func(*call) *reply) func(*call) *reply {
	return func(c *call) *reply {
		if r := a(c); r != nil {
			return r
		}
		return b(c)
	}
}

func invalidValue(msg string) *reply {
	return ec2Error(http.StatusBadRequest, "InvalidParameterValue", msg)
}

// checkTagsAndText refuses tags and descriptions EC2 would refuse.
func (s *sim) checkTagsAndText(c *call) *reply {
	if d := c.param("Description"); d != "" && c.Op.Action != "CreateVolume" {
		if n := utf8.RuneCountInString(d); n > maxDescription || !utf8.ValidString(d) {
			return invalidValue(fmt.Sprintf("Value for parameter Description is invalid: %d characters, at most %d of valid UTF-8", n, maxDescription))
		}
	}
	var sets [][][2]string
	for _, m := range structList(c.Form, "TagSpecification") {
		var set [][2]string
		for _, t := range structList(m, "Tag") {
			set = append(set, [2]string{t.Get("Key"), t.Get("Value")})
		}
		sets = append(sets, set)
	}
	var added [][2]string
	if c.Op.Action == "CreateTags" {
		for _, t := range structList(c.Form, "Tag") {
			added = append(added, [2]string{t.Get("Key"), t.Get("Value")})
		}
		sets = append(sets, added)
	}
	for _, set := range sets {
		if r := checkTagSet(set); r != nil {
			return r
		}
		if n := countTags(set, nil); n > maxTags {
			return tagLimit(n)
		}
	}
	if c.Op.Action == "CreateTags" {
		for _, res := range listParam(c.Form, "ResourceId") {
			have, err := s.tagsOf(c.Ctx, res)
			if err != nil {
				return errorReply("DescribeTags "+res, err)
			}
			if n := countTags(added, have); n > maxTags {
				return tagLimit(n)
			}
		}
	}
	return nil
}

func checkTagSet(set [][2]string) *reply {
	for _, kv := range set {
		switch {
		case !utf8.ValidString(kv[0]) || !utf8.ValidString(kv[1]):
			return invalidValue(fmt.Sprintf("Tag %q: keys and values must be valid UTF-8", kv[0]))
		case utf8.RuneCountInString(kv[0]) > maxTagKeyRunes:
			return invalidValue(fmt.Sprintf("Tag key exceeds the maximum length of %d characters: %q", maxTagKeyRunes, kv[0]))
		case utf8.RuneCountInString(kv[1]) > maxTagValRunes:
			return invalidValue(fmt.Sprintf("Tag value exceeds the maximum length of %d characters (tag %q has %d)", maxTagValRunes, kv[0], utf8.RuneCountInString(kv[1])))
		}
	}
	return nil
}

func tagLimit(n int) *reply {
	return ec2Error(http.StatusBadRequest, "TagLimitExceeded",
		fmt.Sprintf("The maximum number of Tags for a resource has been reached: %d would exceed %d (test bed)", n, maxTags))
}

// countTags is how many tags a resource with have would have after set
// is added, not counting aws: tags.
func countTags(set [][2]string, have map[string]string) int {
	keys := map[string]bool{}
	for k := range have {
		keys[k] = true
	}
	for _, kv := range set {
		keys[kv[0]] = true
	}
	n := 0
	for k := range keys {
		if !strings.HasPrefix(strings.ToLower(k), "aws:") {
			n++
		}
	}
	return n
}

func (s *sim) tagsOf(ctx context.Context, id string) (map[string]string, error) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	out, err := s.moto.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []types.Filter{{Name: aws.String("resource-id"), Values: []string{id}}}})
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, t := range out.Tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m, nil
}

// checkPendingLimit refuses a snapshot of a volume that has its maximum
// of pending snapshots.
func (s *sim) checkPendingLimit(c *call) *reply {
	vols, err := s.volumesOfCall(c)
	if err != nil {
		return errorReply("volumes of "+c.Op.Action, err)
	}
	if len(vols) == 0 {
		return nil
	}
	ctx, cancel := opCtx(c.Ctx)
	defer cancel()
	desc, err := s.describeVolumes(ctx, vols)
	if err != nil {
		return errorReply("DescribeVolumes", err)
	}
	pending := s.pendingByVolume(time.Now())
	for _, v := range vols {
		limit := bedMaxPending(string(desc[v].VolumeType))
		if pending[v] >= limit {
			return ec2Error(http.StatusBadRequest, "ConcurrentSnapshotLimitExceeded",
				fmt.Sprintf("Maximum number of active snapshots (%d) reached for volume %s: %d are pending", limit, v, pending[v]))
		}
	}
	return nil
}

// volumesOfCall are the volumes a snapshot call would snapshot.
func (s *sim) volumesOfCall(c *call) ([]string, error) {
	if c.Op.Action == "CreateSnapshot" {
		return []string{c.param("VolumeId")}, nil
	}
	id := c.param("InstanceId")
	if c.Op.Action == "CreateSnapshots" {
		id = c.param("InstanceSpecification.InstanceId")
	}
	inst, err := s.describeInstance(c.Ctx, id)
	if err != nil {
		return nil, err
	}
	skip := map[string]bool{}
	for _, v := range listParam(c.Form, "InstanceSpecification.ExcludeDataVolumeId") {
		skip[v] = true
	}
	noDevice := map[string]bool{}
	for _, m := range structList(c.Form, "BlockDeviceMapping") {
		if _, ok := m["NoDevice"]; ok {
			noDevice[m.Get("DeviceName")] = true
		}
	}
	excludeRoot := strings.EqualFold(c.param("InstanceSpecification.ExcludeBootVolume"), "true")
	var out []string
	for _, m := range inst.BlockDeviceMappings {
		dev := aws.ToString(m.DeviceName)
		if m.Ebs == nil || noDevice[dev] || skip[aws.ToString(m.Ebs.VolumeId)] || (excludeRoot && dev == aws.ToString(inst.RootDeviceName)) {
			continue
		}
		out = append(out, aws.ToString(m.Ebs.VolumeId))
	}
	return out, nil
}

// pendingByVolume counts the pending snapshots of each volume, those
// deleted while pending included.
func (s *sim) pendingByVolume(now time.Time) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, r := range s.snaps {
		if _, pending := heldState(r.hold, r.created, now); pending {
			out[r.volumeID]++
		}
	}
	kept := s.ghosts[:0]
	for _, g := range s.ghosts {
		if now.Before(g.until) {
			out[g.volumeID]++
			kept = append(kept, g)
		}
	}
	s.ghosts = kept
	return out
}

func (s *sim) notePendingDelete(c *call) *reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.snaps[c.param("SnapshotId")]; r != nil {
		if _, pending := heldState(r.hold, r.created, time.Now()); pending {
			c.stash["ghost"] = ghostSnap{volumeID: r.volumeID, until: r.created.Add(r.hold.d)}
		}
	}
	return nil
}

func (s *sim) keepGhost(c *call, r *reply) *reply {
	if g, ok := c.stash["ghost"].(ghostSnap); ok && r.ok() {
		s.mu.Lock()
		s.ghosts = append(s.ghosts, g)
		s.mu.Unlock()
	}
	return r
}

// tokenKey and tokenParams identify a ClientToken's request.
func tokenKey(c *call) string { return c.Op.Action + " " + c.param("ClientToken") }

func tokenParams(c *call) string {
	f := url.Values{}
	for k, v := range c.Form {
		if k != "ClientToken" {
			f[k] = v
		}
	}
	return f.Encode() // sorted by key
}

func (s *sim) idempotentAnswer(c *call) *reply {
	if c.param("ClientToken") == "" {
		return nil
	}
	s.mu.Lock()
	rec := s.idem[tokenKey(c)]
	s.mu.Unlock()
	switch {
	case rec == nil:
		return nil
	case rec.params != tokenParams(c):
		return ec2Error(http.StatusBadRequest, "IdempotentParameterMismatch",
			"The client token you have provided is associated with a resource that is already deleted or has different parameters. Please use a different client token.")
	}
	return &reply{Status: rec.answer.Status, Header: rec.answer.Header.Clone(), Body: append([]byte(nil), rec.answer.Body...)}
}

func (s *sim) rememberToken(c *call, r *reply) *reply {
	if r.ok() && c.param("ClientToken") != "" {
		s.mu.Lock()
		if s.idem[tokenKey(c)] == nil {
			s.idem[tokenKey(c)] = &idemRec{params: tokenParams(c), answer: &reply{Status: r.Status, Header: r.Header.Clone(), Body: append([]byte(nil), r.Body...)}}
		}
		s.mu.Unlock()
	}
	return r
}

// ForeignSnapshots makes n snapshots of volumeID as another tool would
// (AWS Backup, DLM, an operator), straight in moto with tags, pending for
// pendingFor: they count against the volume's limit of pending snapshots, and
// the agent must leave them alone.
func (b *Bed) ForeignSnapshots(ctx context.Context, volumeID string, n int, pendingFor time.Duration, tags map[string]string) ([]string, error) {
	var tt []types.Tag
	for k, v := range tags {
		tt = append(tt, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	var ids []string
	h := &hold{d: pendingFor}
	for range n {
		in := &ec2.CreateSnapshotInput{VolumeId: aws.String(volumeID), Description: aws.String("made by another tool (test bed)")}
		if len(tt) > 0 {
			in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: tt}}
		}
		out, err := b.sim.moto.CreateSnapshot(ctx, in)
		if err != nil {
			return ids, wrap("CreateSnapshot of "+volumeID, err)
		}
		id := aws.ToString(out.SnapshotId)
		b.sim.mu.Lock()
		b.sim.snaps[id] = &snapRec{id: id, volumeID: volumeID, created: time.Now(), hold: h}
		b.sim.mu.Unlock()
		ids = append(ids, id)
	}
	return ids, nil
}
