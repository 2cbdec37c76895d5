package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap/zaptest"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/awsconf"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// fakeEngine records what the watcher queues, with the bytes of the
// bundle file at that moment.
type fakeEngine struct {
	mu   sync.Mutex
	reqs []engine.Request
	data [][]byte
	deps []api.Deployment
}

func (f *fakeEngine) Submit(r engine.Request) (*api.Deployment, error) {
	b, err := os.ReadFile(r.Source.Location)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d := api.Deployment{ID: fmt.Sprintf("d-%d", len(f.reqs)+1), Revision: r.Revision, Source: r.Source, Status: api.StatusSucceeded, Trigger: r.Trigger}
	f.reqs = append(f.reqs, r)
	f.data = append(f.data, b)
	f.deps = append(f.deps, d)
	return &d, nil
}

func (f *fakeEngine) submitted() []engine.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]engine.Request(nil), f.reqs...)
}

// fakeJournal is the meta bucket and the deployment list.
type fakeJournal struct {
	eng  *fakeEngine
	mu   sync.Mutex
	meta map[string]string
}

func (j *fakeJournal) GetMeta(k string) (string, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.meta[k], nil
}

func (j *fakeJournal) SetMeta(k, v string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.meta[k] = v
	return nil
}

func (j *fakeJournal) Deployments(int) ([]api.Deployment, error) {
	j.eng.mu.Lock()
	defer j.eng.mu.Unlock()
	return append([]api.Deployment(nil), j.eng.deps...), nil
}

// wire records what the watcher's S3 client saw on the wire.
type wire struct {
	mu       sync.Mutex
	statuses []int
	bodies   []int64
}

func (w *wire) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	w.mu.Lock()
	w.statuses = append(w.statuses, resp.StatusCode)
	w.bodies = append(w.bodies, int64(len(b)))
	w.mu.Unlock()
	return resp, nil
}

func (w *wire) reset() {
	w.mu.Lock()
	w.statuses, w.bodies = nil, nil
	w.mu.Unlock()
}

func (w *wire) seen() ([]int, []int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int(nil), w.statuses...), append([]int64(nil), w.bodies...)
}

// rig is a bucket in moto, a publisher writing releases into it directly
// (not through the proxy, so the proxy counts only the watcher), and the
// watcher's client through the proxy.
type rig struct {
	t      *testing.T
	bed    *testbed.Bed
	setup  *s3.Client
	agent  *s3.Client
	wire   *wire
	layout release.Layout
	key    minisign.PrivateKey
	pub    minisign.PublicKey
	eng    *fakeEngine
	jrn    *fakeJournal
	dir    string

	mu     sync.Mutex
	states []api.SourceState
}

func newRig(t *testing.T, bucket string) *rig {
	t.Helper()
	bed := peers.Get(t)
	setup := awsconf.S3(bed.AWSConfig())
	if _, err := setup.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	cfg := bed.AWSConfig()
	cfg.BaseEndpoint = aws.String(bed.AWS.URL)
	w := &wire{}
	cfg.HTTPClient = &http.Client{Transport: w}
	pub, priv := newKey(t)
	eng := &fakeEngine{}
	return &rig{t: t, bed: bed, setup: setup, agent: awsconf.S3(cfg), wire: w, layout: release.NewLayout(bucket, "rel", "demo"),
		key: priv, pub: pub, eng: eng, jrn: &fakeJournal{eng: eng, meta: map[string]string{}}, dir: t.TempDir()}
}

func (r *rig) put(key string, body []byte) {
	r.t.Helper()
	_, err := r.setup.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(r.layout.Bucket), Key: aws.String(key), Body: bytes.NewReader(body)})
	if err != nil {
		r.t.Fatalf("put %s: %v", key, err)
	}
}

// release uploads a bundle and its manifest for version, signed with
// key (nil: unsigned), and returns the manifest bytes.
func (r *rig) release(app, version string, bundle []byte, key *minisign.PrivateKey) []byte {
	sum := sha256.Sum256(bundle)
	m := &release.Manifest{SchemaVersion: 1, App: app, Version: version, Bundle: release.BundleName, SHA256: hex.EncodeToString(sum[:]),
		Size: int64(len(bundle)), Format: release.FormatTarGz, CreatedAt: time.Now().UTC(), CreatedBy: "test"}
	doc := m.Encode()
	r.put(r.layout.BundleKey(version), bundle)
	if key != nil {
		r.put(r.layout.ManifestKey(version)+release.SignatureSuffix, release.SignDoc(*key, doc, m.TrustedComment()))
	}
	r.put(r.layout.ManifestKey(version), doc)
	return doc
}

// point writes the channel document (signed with the rig's key) and
// returns its bytes, so a test can replay them later.
func (r *rig) point(seq int64, version string, manifest []byte) (doc, sig []byte) {
	sum := sha256.Sum256(manifest)
	c := &release.ChannelDoc{SchemaVersion: 1, App: "demo", Channel: "prod", Sequence: seq, Version: version,
		Manifest: release.ManifestRel(version), ManifestSHA256: hex.EncodeToString(sum[:]), UpdatedAt: time.Now().UTC(), UpdatedBy: "test"}
	doc = c.Encode()
	sig = release.SignDoc(r.key, doc, c.TrustedComment())
	r.put(r.layout.ChannelKey("prod")+release.SignatureSuffix, sig)
	r.put(r.layout.ChannelKey("prod"), doc)
	return doc, sig
}

func (r *rig) channel(require bool, journal ChannelJournal) *Channel {
	r.t.Helper()
	kr, err := release.NewKeyring([]string{r.pub.String()}, require)
	if err != nil {
		r.t.Fatal(err)
	}
	c, err := NewChannel(ChannelOptions{
		URL: r.layout.URL(r.layout.ChannelKey("prod")), App: "demo", Interval: 100 * time.Millisecond, Keys: kr,
		S3:     func(context.Context) (*s3.Client, error) { return r.agent, nil },
		Engine: r.eng, Journal: journal, Dir: r.dir, Log: zaptest.NewLogger(r.t),
		OnState: func(s api.SourceState) {
			r.mu.Lock()
			r.states = append(r.states, s)
			r.mu.Unlock()
		},
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// run starts the watcher until the test ends.
func (r *rig) run(c *Channel) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	r.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			r.t.Errorf("channel Run: %v", err)
		}
	})
}

func (r *rig) polls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.states)
}

func (r *rig) snapshot() []api.SourceState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]api.SourceState(nil), r.states...)
}

// waitState waits for a reported state that satisfies ok.
func (r *rig) waitState(what string, ok func(api.SourceState) bool) api.SourceState {
	r.t.Helper()
	var got api.SourceState
	testutil.WaitFor(r.t, 30*time.Second, "a channel state "+what, func() error {
		states := r.snapshot()
		for i := len(states) - 1; i >= 0; i-- {
			if ok(states[i]) {
				got = states[i]
				return nil
			}
		}
		return fmt.Errorf("last states: %+v", states[max(0, len(states)-3):])
	})
	return got
}

func (r *rig) waitSubmits(n int) []engine.Request {
	r.t.Helper()
	var s []engine.Request
	testutil.WaitFor(r.t, 30*time.Second, fmt.Sprintf("%d deployments queued", n), func() error {
		if s = r.eng.submitted(); len(s) < n {
			return fmt.Errorf("%d queued; states %+v", len(s), r.snapshot())
		}
		return nil
	})
	return s
}

// settle waits for n more polls.
func (r *rig) settle(n int) {
	r.t.Helper()
	want := r.polls() + n
	testutil.WaitFor(r.t, 30*time.Second, fmt.Sprintf("%d more polls", n), func() error {
		if got := r.polls(); got < want {
			return fmt.Errorf("the watcher stopped polling at %d, want %d", got, want)
		}
		return nil
	})
}

func hasErr(sub string) func(api.SourceState) bool {
	return func(s api.SourceState) bool { return strings.Contains(s.LastError, sub) }
}

func deleteInput(bucket, key string) *s3.DeleteObjectInput {
	return &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
}
