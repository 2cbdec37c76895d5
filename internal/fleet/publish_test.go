package fleet

import (
	"bytes"
	"context"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rollback-agent/rollback-agent/internal/awsconf"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

var peers testbed.Lazy

func TestMain(m *testing.M) {
	code := m.Run()
	peers.Close()
	os.Exit(code)
}

// pubRig is a publisher against the bed's S3 (through the proxy, which
// counts the PUTs), with a clock and a state the test moves.
type pubRig struct {
	t      *testing.T
	bed    *testbed.Bed
	s3     *s3.Client
	layout release.Layout
	mu     sync.Mutex
	now    time.Time
	state  *HostDoc
	passes chan pass
	cancel context.CancelFunc
	done   chan struct{}
	beats  int
}

type pass struct {
	wrote bool
	err   error
}

func newPubRig(t *testing.T, bucket string) *pubRig {
	t.Helper()
	bed := peers.Get(t)
	cfg := bed.AWSConfig()
	cfg.BaseEndpoint = aws.String(bed.AWS.URL)
	r := &pubRig{t: t, bed: bed, s3: awsconf.S3(cfg), layout: release.NewLayout(bucket, "releases", "shop"), now: t0,
		state: host("i-0abc", "canary", "v1", t0, time.Time{})}
	if _, err := r.s3.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *pubRig) clock() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.now
}

func (r *pubRig) advance(d time.Duration) {
	r.mu.Lock()
	r.now = r.now.Add(d)
	r.mu.Unlock()
}

func (r *pubRig) set(f func(*HostDoc)) {
	r.mu.Lock()
	f(r.state)
	r.mu.Unlock()
}

// start runs a publisher; the first pass (at start) is waited for.
func (r *pubRig) start() *Publisher {
	r.t.Helper()
	r.passes = make(chan pass, 16)
	p, err := NewPublisher(PublisherOptions{
		Layout: r.layout, Heartbeat: 10 * time.Minute, Retry: time.Hour, Now: r.clock,
		Name: func(context.Context) (string, error) { return Name("AROAEXAMPLE:i-0abc", "i-0abc"), nil },
		S3:   func(context.Context) (WriterAPI, error) { return r.s3, nil },
		Build: func(context.Context) *HostDoc {
			r.mu.Lock()
			defer r.mu.Unlock()
			c := *r.state
			return &c
		},
		BeforeHeartbeat: func(context.Context) { r.mu.Lock(); r.beats++; r.mu.Unlock() },
		OnPass:          func(wrote bool, err error) { r.passes <- pass{wrote, err} },
	})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go func() { defer close(r.done); p.Run(ctx) }()
	r.t.Cleanup(r.stop)
	return p
}

func (r *pubRig) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
}

// next waits for the publisher's next pass.
func (r *pubRig) next() pass {
	r.t.Helper()
	select {
	case p := <-r.passes:
		if p.err != nil {
			r.t.Fatalf("pass failed: %v", p.err)
		}
		return p
	case <-time.After(30 * time.Second):
		r.t.Fatal("the publisher made no pass")
	}
	return pass{}
}

func (r *pubRig) heartbeats() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.beats
}

func (r *pubRig) puts() int { return r.bed.AWS.Count("s3", "PUT object") }

func (r *pubRig) read() *HostDoc {
	r.t.Helper()
	out, err := r.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(r.layout.Bucket), Key: aws.String(Key(r.layout, "AROAEXAMPLE:i-0abc"))})
	if err != nil {
		r.t.Fatal(err)
	}
	defer out.Body.Close()
	b, _ := io.ReadAll(out.Body)
	d, err := Parse(b)
	if err != nil {
		r.t.Fatal(err)
	}
	return d
}

// The document is written at start, on a change, and at a heartbeat; a
// kick with nothing changed writes nothing, and neither does a restart
// that finds the document as it would write it.
func TestPublisherWritesOnlyWhatChanged(t *testing.T) {
	r := newPubRig(t, "fleet-publish")
	before := r.puts()
	p := r.start()
	if !r.next().wrote || r.puts() != before+1 {
		t.Fatalf("no write at start (%d PUTs)", r.puts()-before)
	}
	if got := r.read(); got.Current.Revision != "v1" || !got.UpdatedAt.Equal(t0) {
		t.Errorf("written %+v", got)
	}
	for range 3 {
		p.Kick()
		if r.next().wrote {
			t.Error("a kick with nothing changed wrote the document")
		}
	}
	r.advance(time.Minute)
	r.set(func(d *HostDoc) { d.Current.Revision, d.State = "v2", "busy" })
	p.Kick()
	if !r.next().wrote || r.read().Current.Revision != "v2" {
		t.Error("a change was not written")
	}
	r.advance(10 * time.Minute)
	p.Kick()
	// The start was a heartbeat too (nothing written yet).
	if !r.next().wrote || !r.read().UpdatedAt.Equal(t0.Add(11*time.Minute)) || r.heartbeats() != 2 {
		t.Errorf("no heartbeat write after 10 minutes (heartbeats %d)", r.heartbeats())
	}
	if n := r.puts() - before; n != 3 {
		t.Errorf("%d PUTs, want 3", n)
	}
	// A restart finds its document in S3 as it would write it: no write.
	r.stop()
	r.start()
	if r.next().wrote {
		t.Error("a restart rewrote an unchanged document")
	}
	if n := r.puts() - before; n != 3 {
		t.Errorf("%d PUTs after the restart, want 3", n)
	}
}

// Writes are conditional on the ETag last written: a document changed by
// someone else is read back and written over, never blindly raced.
func TestPublisherNoticesAnotherWriter(t *testing.T) {
	r := newPubRig(t, "fleet-conflict")
	p := r.start()
	r.next()
	other := host("i-0abc", "canary", "v9", t0, t0.Add(time.Minute))
	other.AgentVersion = "someone-else"
	key := Key(r.layout, "AROAEXAMPLE:i-0abc")
	if _, err := r.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(r.layout.Bucket), Key: aws.String(key), Body: bytes.NewReader(other.Encode())}); err != nil {
		t.Fatal(err)
	}
	before := r.bed.AWS.Count("s3", "GET object")
	r.set(func(d *HostDoc) { d.State = "busy" })
	p.Kick()
	if !r.next().wrote {
		t.Fatal("not written after a conflict")
	}
	if got := r.read(); got.State != "busy" || got.Current.Revision != "v1" {
		t.Errorf("after the conflict S3 holds %+v", got)
	}
	if r.bed.AWS.Count("s3", "GET object") == before {
		t.Error("the conflicting document was not read back before writing over it")
	}
}

// A write that fails (here: the bucket is gone) is tried again after the
// retry wait, not at every kick: an outage during a deployment costs one
// attempt, not one per transition.
func TestPublisherBacksOffAfterAFailure(t *testing.T) {
	r := newPubRig(t, "fleet-backoff")
	r.layout = release.NewLayout("fleet-no-such-bucket", "releases", "shop")
	p := r.start()
	select {
	case first := <-r.passes:
		if first.err == nil {
			t.Fatal("a write to a missing bucket succeeded")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no first pass")
	}
	before := r.puts()
	for range 5 {
		r.set(func(d *HostDoc) { d.State += "!" })
		p.Kick()
	}
	// Past the retry wait (an hour on the rig's clock), the next kick
	// tries again: one more PUT, not five.
	r.advance(time.Hour)
	p.Kick()
	select {
	case again := <-r.passes:
		if again.err == nil {
			t.Fatal("the retry succeeded")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no retry after the wait")
	}
	if n := r.puts() - before; n != 1 {
		t.Errorf("%d PUTs during the back-off and its retry, want 1", n)
	}
}
