package testbed

import (
	"bytes"
	"fmt"
	"time"
)

// hold keeps the snapshots (or images) created while it is active in
// pending for d after their creation. moto completes everything at once,
// which would hide every bug of an agent that must not wait for
// completion on its critical path, or that tracks completion later.
type hold struct {
	d        time.Duration
	released bool
}

// HoldSnapshots makes DescribeSnapshots report the snapshots created
// through the proxy from now on (CreateSnapshot, CreateSnapshots and the
// snapshots of CreateImage) as pending, with a progress growing from 0%
// toward 99%, until d after their creation; then they pass through as
// moto says (completed, 100%). release ends the hold for future snapshots
// and completes the held ones at once. A later HoldSnapshots replaces
// this one for future snapshots.
func (b *Bed) HoldSnapshots(d time.Duration) (release func()) {
	return b.sim.startHold(&b.sim.snapHold, d)
}

// HoldImages is HoldSnapshots for the images created through the proxy:
// DescribeImages reports them pending until d after their creation.
func (b *Bed) HoldImages(d time.Duration) (release func()) {
	return b.sim.startHold(&b.sim.imageHold, d)
}

func (s *sim) startHold(slot **hold, d time.Duration) func() {
	h := &hold{d: d}
	s.mu.Lock()
	*slot = h
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		h.released = true
		if *slot == h {
			*slot = nil
		}
	}
}

// heldState is what EC2 would say now of something created at created
// under h: pending with a progress below 100, or done (pending=false).
func heldState(h *hold, created, now time.Time) (progress int, pending bool) {
	if h == nil || h.released {
		return 100, false
	}
	el := now.Sub(created)
	if el >= h.d {
		return 100, false
	}
	if el < 0 {
		el = 0
	}
	return int(99 * el / h.d), true
}

// snapshotView is the state and progress DescribeSnapshots reports for
// snapID, given moto's own.
func (s *sim) snapshotView(snapID, motoState, motoProgress string, now time.Time) (state, progress string) {
	s.mu.Lock()
	rec := s.snaps[snapID]
	var h *hold
	var created time.Time
	if rec != nil {
		h, created = rec.hold, rec.created
	}
	pct, pending := heldState(h, created, now)
	s.mu.Unlock()
	if !pending {
		return motoState, motoProgress
	}
	return "pending", fmt.Sprintf("%d%%", pct)
}

// imageView is the state DescribeImages reports for imageID.
func (s *sim) imageView(imageID, motoState string, now time.Time) string {
	s.mu.Lock()
	rec := s.images[imageID]
	var h *hold
	var created time.Time
	if rec != nil {
		h, created = rec.hold, rec.created
	}
	_, pending := heldState(h, created, now)
	s.mu.Unlock()
	if pending {
		return "pending"
	}
	return motoState
}

// mayRewriteSnapshots tells whether a DescribeSnapshots answer can differ
// from moto's: something is held, or a hidden placeholder is in it.
func (s *sim) mayRewriteSnapshots(body []byte, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.snaps {
		if _, pending := heldState(r.hold, r.created, now); pending && bytes.Contains(body, []byte(r.id)) {
			return true
		}
	}
	for id := range s.hidden {
		if bytes.Contains(body, []byte(id)) {
			return true
		}
	}
	return false
}

// beforeDescribeSnapshots takes the status filter away from moto, which
// would apply it to its own (always completed) view.
func (s *sim) beforeDescribeSnapshots(c *call) *reply {
	c.stash["filters"] = takeFilters(c, "status")
	return nil
}

// afterDescribeSnapshots rewrites the held snapshots, hides moto's
// placeholder snapshots of images, and applies the status filter to the
// rewritten states.
func (s *sim) afterDescribeSnapshots(c *call, r *reply) *reply {
	if !r.ok() {
		return r
	}
	fs, _ := c.stash["filters"].([]filterSpec)
	now := time.Now()
	if len(fs) == 0 && !s.mayRewriteSnapshots(r.Body, now) {
		return r
	}
	doc, err := parseXML(r.Body)
	if err != nil {
		return internalError("rewrite DescribeSnapshots", err)
	}
	set := doc.child("snapshotSet")
	if set == nil {
		return r
	}
	set.filter(func(it *xnode) bool {
		id := it.get("snapshotId")
		if s.isHidden(id) {
			return false
		}
		st, pr := s.snapshotView(id, it.get("status"), it.get("progress"), now)
		it.set("status", st)
		it.set("progress", pr)
		return matchFilters(fs, func(string) string { return st })
	})
	return xmlReply(doc)
}

// beforeDescribeImages takes the state filter away from moto, for the
// same reason as the snapshots' status filter.
func (s *sim) beforeDescribeImages(c *call) *reply {
	c.stash["filters"] = takeFilters(c, "state")
	return nil
}

// afterDescribeImages describes the images created through the proxy as
// EC2 would (their block devices, see motogaps.go) and held images as
// pending, then applies the state filter.
func (s *sim) afterDescribeImages(c *call, r *reply) *reply {
	if !r.ok() {
		return r
	}
	fs, _ := c.stash["filters"].([]filterSpec)
	if len(fs) == 0 && !s.knowsAnyImage(r.Body) {
		return r
	}
	doc, err := parseXML(r.Body)
	if err != nil {
		return internalError("rewrite DescribeImages", err)
	}
	set := doc.child("imagesSet")
	if set == nil {
		return r
	}
	now := time.Now()
	set.filter(func(it *xnode) bool {
		id := it.get("imageId")
		s.describeFaithfully(it, id)
		s.describeProductCodes(it, id)
		st := s.imageView(id, it.get("imageState"), now)
		it.set("imageState", st)
		return matchFilters(fs, func(string) string { return st })
	})
	return xmlReply(doc)
}

func (s *sim) knowsAnyImage(body []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.images {
		if bytes.Contains(body, []byte(id)) {
			return true
		}
	}
	for id := range s.imageFlags {
		if bytes.Contains(body, []byte(id)) {
			return true
		}
	}
	return false
}

func (s *sim) isHidden(snapID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hidden[snapID]
}
