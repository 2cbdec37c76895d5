package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// b8Foreign is how many snapshots other tools (AWS Backup, DLM, an
// operator's scripts) hold in the account while the agent lists and
// prunes its own.
const b8Foreign = 5000

// ec2Window is what the proxy saw of EC2 while one command ran.
type ec2Window struct {
	calls int
	ops   map[string]int
	took  time.Duration
}

func (w ec2Window) String() string {
	var parts []string
	for op, n := range w.ops {
		parts = append(parts, fmt.Sprintf("%s %d", op, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// measureEC2 runs fn from a quiet proxy (the agent's background work of
// earlier commands is not fn's) and counts the EC2 calls made meanwhile.
func (b *bench) measureEC2(fn func() error) (ec2Window, error) {
	for quiet := 0; quiet < 5; {
		b.bed.AWS.ResetCounts()
		time.Sleep(200 * time.Millisecond)
		if len(b.bed.AWS.Calls()) == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	b.bed.AWS.ResetCounts()
	start := time.Now()
	err := fn()
	w := ec2Window{took: time.Since(start), ops: map[string]int{}}
	for _, c := range b.bed.AWS.Calls() {
		if c.Op.Service == "ec2" {
			w.calls++
			w.ops[c.Op.Action]++
		}
	}
	return w, err
}

// b8 measures `agentctl checkpoint list` (the catalogue, rebuilt from
// AWS) and retention (`agentctl checkpoint prune`) with 5,000 snapshots of
// other tools in the account. Baselines in the same run: the same list
// before the other tools' snapshots exist, and listing the account's
// snapshots without the agent's server-side tag filters.
func (b *bench) b8(ctx context.Context) (row, error) {
	r := row{id: "B8", what: fmt.Sprintf("`agentctl checkpoint list` and retention (`checkpoint prune`, keep_checkpoints 1) with %d snapshots of other tools in the account (EC2 calls counted by the proxy)", b8Foreign),
		bar: "EC2 calls of list and prune independent of the other tools' snapshots (server-side tag filters); none of theirs touched"}
	rg, err := b.newRig(ctx, "retention: {keep_checkpoints: 1}\n")
	if err != nil {
		return r, err
	}
	defer rg.close()
	create := func() error {
		_, err := rg.ctl(ctx, "--timeout", "10m", "checkpoint", "create", "--wait")
		return err
	}
	list := func() error {
		out, err := rg.ctl(ctx, "--timeout", "10m", "checkpoint", "list", "-o", "json")
		if err != nil {
			return err
		}
		var l api.CheckpointList
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			return fmt.Errorf("checkpoint list: %w: %s", err, out)
		}
		if len(l.Checkpoints) == 0 {
			return fmt.Errorf("checkpoint list shows none of the agent's checkpoints: %s", out)
		}
		return nil
	}
	prune := func() error {
		out, err := rg.ctl(ctx, "--timeout", "10m", "checkpoint", "prune", "-o", "json")
		if err != nil {
			return err
		}
		var rep api.PruneReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			return fmt.Errorf("checkpoint prune: %w: %s", err, out)
		}
		if len(rep.Deleted) != 1 {
			return fmt.Errorf("checkpoint prune deleted %v, want the older of two checkpoints", rep.Deleted)
		}
		return nil
	}
	// measure runs list b.runs times, then prune b.runs times (each after
	// a new checkpoint: two, of which retention keeps one).
	measure := func() (lists, prunes []ec2Window, err error) {
		for range b.runs {
			w, err := b.measureEC2(list)
			if err != nil {
				return nil, nil, err
			}
			lists = append(lists, w)
		}
		for range b.runs {
			if err := create(); err != nil {
				return nil, nil, err
			}
			w, err := b.measureEC2(prune)
			if err != nil {
				return nil, nil, err
			}
			prunes = append(prunes, w)
		}
		return lists, prunes, nil
	}
	if err := create(); err != nil {
		return r, err
	}
	before, prunesBefore, err := measure()
	if err != nil {
		return r, err
	}

	// The other tools' snapshots, straight in moto, of volumes of their
	// own and of the agent's data volume.
	moto := ec2.NewFromConfig(b.bed.AWSConfig())
	vols := []string{rg.inst.DataVolumeID}
	for range 3 {
		v, err := moto.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(rg.inst.Doc.AvailabilityZone), Size: aws.Int32(8)})
		if err != nil {
			return r, fmt.Errorf("CreateVolume for the other tools' snapshots: %w", err)
		}
		vols = append(vols, aws.ToString(v.VolumeId))
	}
	var wg sync.WaitGroup
	errs := make([]error, len(vols))
	for i, v := range vols {
		wg.Go(func() {
			_, errs[i] = b.bed.ForeignSnapshots(ctx, v, b8Foreign/len(vols), 0, map[string]string{"Name": "nightly-backup", "aws:backup:source-resource": v})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return r, err
		}
	}

	after, prunes, err := measure()
	if err != nil {
		return r, err
	}
	// What moto itself takes to apply a tag filter over the account's
	// snapshots (Python, a scan of every snapshot; AWS's cost is AWS's):
	// most of the agent's wall time above.
	var motoFilter stats
	for range b.runs {
		t0 := time.Now()
		if _, err := moto.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
			Filters: []types.Filter{{Name: aws.String("tag:rollback-agent:instance"), Values: []string{rg.inst.Doc.InstanceID}}}}); err != nil {
			return r, err
		}
		motoFilter = append(motoFilter, time.Since(t0))
	}
	theirs := 0
	sp := ec2.NewDescribeSnapshotsPaginator(moto, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
		Filters: []types.Filter{{Name: aws.String("tag:Name"), Values: []string{"nightly-backup"}}}})
	for sp.HasMorePages() {
		out, err := sp.NextPage(ctx)
		if err != nil {
			return r, err
		}
		theirs += len(out.Snapshots)
	}

	// The naive listing: every snapshot the account owns, paged through
	// (1,000 a page, DescribeSnapshots' maximum), sorted out client-side.
	w := &wire{next: http.DefaultTransport, status: map[int]int{}}
	cfg := b.bed.AWSConfig()
	cfg.BaseEndpoint = aws.String(b.bed.AWS.URL)
	cfg.HTTPClient = &http.Client{Transport: w}
	naiveClient := ec2.NewFromConfig(cfg)
	var naive []ec2Window
	var naiveBytes int64
	for range b.runs {
		w.reset()
		nw, err := b.measureEC2(func() error {
			p := ec2.NewDescribeSnapshotsPaginator(naiveClient, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, MaxResults: aws.Int32(1000)})
			for p.HasMorePages() {
				if _, err := p.NextPage(ctx); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return r, fmt.Errorf("naive listing: %w", err)
		}
		naive = append(naive, nw)
		naiveBytes = w.bodies.Load()
	}

	took := func(ws []ec2Window) stats {
		var s stats
		for _, w := range ws {
			s = append(s, w.took)
		}
		return s
	}
	most := func(ws []ec2Window) (int, string) {
		n, ops := 0, ""
		for _, w := range ws {
			if w.calls >= n {
				n, ops = w.calls, w.String()
			}
		}
		return n, ops
	}
	n0, ops0 := most(before)
	n1, ops1 := most(after)
	np, opsP := most(prunes)
	np0, opsP0 := most(prunesBefore)
	nn, _ := most(naive)
	r.baseline = fmt.Sprintf("before the other tools' snapshots existed: list %d EC2 calls at most (%s), %s; prune %d (%s), %s. "+
		"Every snapshot of the account without tag filters: %d DescribeSnapshots pages, %s of XML, %s",
		n0, ops0, took(before), np0, opsP0, took(prunesBefore), nn, kib(naiveBytes), took(naive))
	r.measured = fmt.Sprintf("list: %d EC2 calls at most (%s), %s (%.2f× the time without them); prune deleting one checkpoint: %d at most (%s), %s; %d of the %d other tools' snapshots left; moto alone takes %s for one tag-filtered DescribeSnapshots over them",
		n1, ops1, took(after), float64(took(after).median())/float64(took(before).median()), np, opsP, took(prunes), theirs, b8Foreign, motoFilter)
	ok := n1 == n0 && np == np0 && theirs == b8Foreign
	r.verdict = verdict(ok, fmt.Sprintf("list made %d calls with them, %d without; prune %d and %d; %d of theirs left", n1, n0, np, np0, theirs))
	return r, nil
}
