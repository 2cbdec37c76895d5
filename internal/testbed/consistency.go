package testbed

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Eventual consistency. EC2 API guide, "Eventual consistency in the
// Amazon EC2 API" (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html):
// "if you run a command to modify or describe the resource that you just
// created, its ID might not have propagated throughout the system, and
// you will get an error responding that the resource does not exist".
// moto is read-after-write consistent. The bed keeps what was created
// through the proxy out of sight for Rules.ConsistencyWindow: a call
// naming it answers its *.NotFound, and lists leave it out.

// youngKinds maps an id prefix to its NotFound error.
var youngKinds = []struct{ prefix, code, format string }{
	{"snap-", "InvalidSnapshot.NotFound", "The snapshot '%s' does not exist."},
	{"vol-", "InvalidVolume.NotFound", "The volume '%s' does not exist."},
	{"ami-", "InvalidAMIID.NotFound", "The image id '[%s]' does not exist"},
	{"i-", "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist"},
}

// idParams are the parameters (last component of a query key, list
// indexes dropped) that name an existing resource.
var idParams = map[string]bool{
	"SnapshotId": true, "SourceSnapshotId": true, "ImageId": true, "SourceImageId": true,
	"VolumeId": true, "InstanceId": true, "ResourceId": true,
}

// consistency is the rule's hooks for an EC2 action.
func (s *sim) consistency(op Op) *hooks {
	h := &hooks{Before: s.refuseYoung}
	switch op.Action {
	case "CreateSnapshots", "CreateSnapshot", "CreateImage", "CreateVolume", "RunInstances", "CopySnapshot", "CopyImage", "RegisterImage":
		h.After = s.recordYoung
	case "DescribeSnapshots", "DescribeImages", "DescribeVolumes", "DescribeTags", "DescribeInstances":
		h.After = s.hideYoung
	}
	return h
}

// youngIDs are the ids still inside their window (expired ones go).
func (s *sim) youngIDs(now time.Time) map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.young) == 0 {
		return nil
	}
	out := map[string]bool{}
	for id, until := range s.young {
		if now.Before(until) {
			out[id] = true
		} else {
			delete(s.young, id)
		}
	}
	return out
}

// refuseYoung answers NotFound for a call naming a resource still inside
// its window.
func (s *sim) refuseYoung(c *call) *reply {
	young := s.youngIDs(time.Now())
	if len(young) == 0 {
		return nil
	}
	for key, vs := range c.Form {
		if !idParams[paramName(key)] || strings.HasPrefix(key, "Filter.") {
			continue
		}
		for _, v := range vs {
			if young[v] {
				return notFound(v)
			}
		}
	}
	return nil
}

// paramName is the last part of a query key that is not a list index:
// ResourceId.1 → ResourceId, BlockDeviceMapping.1.Ebs.SnapshotId →
// SnapshotId.
func paramName(key string) string {
	parts := strings.Split(key, ".")
	for i := len(parts) - 1; i >= 0; i-- {
		if !isIndex(parts[i]) {
			return parts[i]
		}
	}
	return ""
}

func isIndex(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func notFound(id string) *reply {
	for _, k := range youngKinds {
		if strings.HasPrefix(id, k.prefix) {
			return ec2Error(http.StatusBadRequest, k.code, fmt.Sprintf(k.format, id)+" (eventual consistency: created moments ago, test bed)")
		}
	}
	return ec2Error(http.StatusBadRequest, "InvalidID", fmt.Sprintf("The ID '%s' is not valid (test bed)", id))
}

// recordYoung starts the window of what a create call made.
func (s *sim) recordYoung(c *call, r *reply) *reply {
	if !r.ok() {
		return r
	}
	w := s.currentRules().ConsistencyWindow
	if w <= 0 {
		return r
	}
	doc, err := parseXML(r.Body)
	if err != nil {
		return r
	}
	var ids []string
	for _, name := range []string{"snapshotId", "volumeId", "imageId"} {
		if c.Op.Action == "CreateVolume" && name != "volumeId" || c.Op.Action != "CreateVolume" && name == "volumeId" {
			continue // a volume's answer names its snapshot; a snapshot's its volume
		}
		if id := doc.get(name); id != "" {
			ids = append(ids, id)
		}
	}
	for _, it := range doc.child("snapshotSet").items() {
		ids = append(ids, it.get("snapshotId"))
	}
	for _, it := range doc.child("instancesSet").items() {
		ids = append(ids, it.get("instanceId"))
	}
	until := time.Now().Add(w)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.Op.Action == "CreateImage" {
		if rec := s.images[doc.get("imageId")]; rec != nil {
			for _, m := range rec.mappings {
				ids = append(ids, m.SnapshotID)
			}
		}
	}
	for _, id := range ids {
		if id != "" {
			s.young[id] = until
		}
	}
	return r
}

// hideYoung leaves what is inside its window out of a list.
func (s *sim) hideYoung(c *call, r *reply) *reply {
	if !r.ok() {
		return r
	}
	young := s.youngIDs(time.Now())
	if len(young) == 0 {
		return r
	}
	hit := false
	for id := range young {
		if bytes.Contains(r.Body, []byte(id)) {
			hit = true
			break
		}
	}
	if !hit {
		return r
	}
	doc, err := parseXML(r.Body)
	if err != nil {
		return internalError("hide young resources in "+c.Op.Action, err)
	}
	keep := func(field string) func(*xnode) bool {
		return func(it *xnode) bool { return !young[it.get(field)] }
	}
	switch c.Op.Action {
	case "DescribeSnapshots":
		doc.child("snapshotSet").filter(keep("snapshotId"))
	case "DescribeImages":
		doc.child("imagesSet").filter(keep("imageId"))
	case "DescribeVolumes":
		doc.child("volumeSet").filter(keep("volumeId"))
	case "DescribeTags":
		doc.child("tagSet").filter(keep("resourceId"))
	case "DescribeInstances":
		set := doc.child("reservationSet")
		set.filter(func(res *xnode) bool {
			insts := res.child("instancesSet")
			insts.filter(keep("instanceId"))
			return len(insts.items()) > 0
		})
	}
	return xmlReply(doc)
}
