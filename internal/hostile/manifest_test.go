package hostile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"aead.dev/minisign"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/source"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// manifestSpec builds manifest.json and manifest.json.minisig: a manifest
// as uploaded, signed (or not) by a key, then tampered with.
type manifestSpec struct {
	// JSON is manifest.json before tampering, byte for byte.
	JSON string `yaml:"json"`
	// PadTo pads JSON with spaces before its last "}" to this many bytes.
	PadTo int `yaml:"pad_to"`
	// Sign names the key: trusted (default), other (nobody trusts it), none.
	Sign string `yaml:"sign"`
	// Comment is the signature's trusted comment; default: the one
	// agentctl push writes for this manifest.
	Comment string `yaml:"comment"`
	// Tamper edits manifest.json after it was signed.
	Tamper []struct {
		Find    string `yaml:"find"`
		Replace string `yaml:"replace"`
	} `yaml:"tamper"`
	// SignatureTruncate cuts the .minisig to this many bytes.
	SignatureTruncate int `yaml:"signature_truncate"`
}

// hostileKey derives a key pair from its name, so committed signatures
// stay valid and the corpus can be rebuilt byte for byte.
func hostileKey(name string) (minisign.PublicKey, minisign.PrivateKey) {
	seed := sha256.Sum256([]byte("rollback-agent hostile corpus key " + name))
	pub, priv, err := minisign.GenerateKey(bytes.NewReader(seed[:]))
	if err != nil {
		panic(err) // ed25519 from 32 bytes of seed cannot fail
	}
	return pub, priv
}

func (m *manifestSpec) build(c *hostileCase) (map[string][]byte, error) {
	doc := []byte(m.JSON)
	if m.PadTo > len(doc) {
		i := bytes.LastIndexByte(doc, '}')
		if i < 0 {
			return nil, fmt.Errorf("pad_to: no closing brace")
		}
		pad := bytes.Repeat([]byte(" "), m.PadTo-len(doc))
		doc = append(append(append([]byte{}, doc[:i]...), pad...), doc[i:]...)
	}
	out := map[string][]byte{}
	if m.Sign != "none" {
		name := m.Sign
		if name == "" {
			name = "trusted"
		}
		_, key := hostileKey(name)
		comment := m.Comment
		if comment == "" {
			mf, err := release.ParseManifest(doc)
			if err != nil {
				comment = "rollback-agent manifest"
			} else {
				comment = mf.TrustedComment()
			}
		}
		sig := release.SignDoc(key, doc, comment)
		if m.SignatureTruncate > 0 && m.SignatureTruncate < len(sig) {
			sig = sig[:m.SignatureTruncate]
		}
		out[c.Input+release.SignatureSuffix] = sig
	}
	for _, t := range m.Tamper {
		if !bytes.Contains(doc, []byte(t.Find)) {
			return nil, fmt.Errorf("tamper: %q not in the manifest", t.Find)
		}
		doc = bytes.Replace(doc, []byte(t.Find), []byte(t.Replace), 1)
	}
	out[c.Input] = doc
	return out, nil
}

// hostileBundle is what every manifest case uploads as the bundle; the
// positive control's manifest carries its size and sha256.
const hostileBundle = "hostile corpus bundle bytes\n"

// runManifest releases the case's manifest on an S3 channel (moto) and
// runs the product's channel watcher on it in-process, with the trusted
// key and signatures required: the watcher must refuse, with the
// expected reason in its state, and must not queue a deployment.
func runManifest(t *testing.T, bed *testbed.Bed, c *hostileCase, n int) result {
	r := result{name: c.name, expected: c.expected(), ok: true}
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
		r.ok = false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := bed.AWSConfig()
	client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	bucket := fmt.Sprintf("hostile-manifest-%d-%d", time.Now().UnixNano()%1e9, n)
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	version := c.Version
	if version == "" {
		version = "v1"
	}
	layout := release.NewLayout(bucket, "releases", "demo")
	put := func(key string, body []byte) {
		t.Helper()
		if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(body)}); err != nil {
			t.Fatal(err)
		}
	}
	manifestPath := c.inputPath(t, t.TempDir())
	doc, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	if sig, err := os.ReadFile(filepath.Join(c.dir, c.Input+release.SignatureSuffix)); err == nil {
		put(layout.ManifestKey(version)+release.SignatureSuffix, sig)
	}
	put(layout.ManifestKey(version), doc)
	put(layout.BundleKey(version), []byte(hostileBundle))
	sum := sha256.Sum256(doc)
	ch := &release.ChannelDoc{SchemaVersion: release.ChannelSchema, App: "demo", Channel: "live", Sequence: 1, Version: version,
		Manifest: release.ManifestRel(version), ManifestSHA256: hex.EncodeToString(sum[:]),
		UpdatedAt: fixedTime, UpdatedBy: "hostile corpus"}
	chDoc := ch.Encode()
	if c.SignChannel == nil || *c.SignChannel {
		_, key := hostileKey("trusted")
		put(layout.ChannelKey("live")+release.SignatureSuffix, release.SignDoc(key, chDoc, ch.TrustedComment()))
	}
	put(layout.ChannelKey("live"), chDoc)

	pub, _ := hostileKey("trusted")
	keys, err := release.NewKeyring([]string{pub.String()}, true)
	if err != nil {
		t.Fatal(err)
	}
	eng := &fakeEngine{}
	watcher, err := source.NewChannel(source.ChannelOptions{
		URL: layout.URL(layout.ChannelKey("live")), App: "demo", Interval: 50 * time.Millisecond, Keys: keys,
		S3:     func(context.Context) (*s3.Client, error) { return client, nil },
		Engine: eng, Journal: &fakeJournal{}, Dir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- watcher.Run(runCtx) }()
	// The outcome: a refusal in the state (not an outage), or a queued
	// deployment. Without either in time, the checks below say so.
	var st api.SourceState
	deadline, _ := ctx.Deadline()
	waited := testutil.Poll(time.Until(deadline), func() error {
		st = watcher.State()
		if st.LastError != "" && !strings.Contains(st.Detail, "unreachable") || eng.submitted() > 0 {
			return nil
		}
		return fmt.Errorf("state %+v", st)
	})
	stop()
	if err := <-done; err != nil {
		fail("%s: the watcher stopped: %v", c.name, err)
	}
	switch {
	case c.Expect.Accepted:
		r.got = fmt.Sprintf("queued %d deployment(s); %s", eng.submitted(), st.Detail)
		if eng.submitted() != 1 {
			fail("%s: the valid release was not queued: %+v", c.name, st)
		}
	case eng.submitted() > 0:
		r.got = "QUEUED A DEPLOYMENT"
		fail("%s: the tampered release was queued for deployment", c.name)
	default:
		r.got = "refused: " + st.LastError
		if st.LastError == "" {
			fail("%s: no refusal within the time: %v", c.name, waited)
		}
		for _, m := range c.Expect.checkText(st.LastError, "") {
			fail("%s: refusal %s: %s", c.name, m, st.LastError)
		}
	}
	return r
}

// fakeEngine records what the watcher queues: queuing is the line a
// tampered release must never cross.
type fakeEngine struct {
	mu   sync.Mutex
	reqs []engine.Request
}

func (e *fakeEngine) Submit(req engine.Request) (*api.Deployment, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reqs = append(e.reqs, req)
	return &api.Deployment{ID: fmt.Sprintf("d-hostile%d", len(e.reqs)), Status: api.StatusQueued}, nil
}

func (e *fakeEngine) submitted() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.reqs)
}

// fakeJournal keeps the watcher's meta records in memory.
type fakeJournal struct {
	mu   sync.Mutex
	meta map[string]string
}

func (j *fakeJournal) GetMeta(key string) (string, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.meta[key], nil
}

func (j *fakeJournal) SetMeta(key, value string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.meta == nil {
		j.meta = map[string]string{}
	}
	j.meta[key] = value
	return nil
}

func (j *fakeJournal) Deployments(int) ([]api.Deployment, error) { return nil, nil }
