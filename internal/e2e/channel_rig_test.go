package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/awsconf"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
)

// workstation runs agentctl as a release engineer would: against AWS (moto
// behind the bed's proxy here), not against an agent.
func workstation(t *testing.T, bed *testbed.Bed, bins testbed.Binaries, args ...string) result {
	t.Helper()
	cmd := exec.Command(bins.Agentctl, args...)
	cmd.Env = append(bed.BaseEnv(), "AWS_REGION="+testbed.Region)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run agentctl %v: %v", args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

func mustWork(t *testing.T, r result, what string) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\n%s\n%s", what, r.code, r.stdout, r.stderr)
	}
}

// s3Wire sits in front of the bed's proxy for one agent and records the
// S3 requests it makes, with the status and body size of each answer.
type s3Wire struct {
	URL  string
	srv  *http.Server
	mu   sync.Mutex
	seen []s3Seen
}

type s3Seen struct {
	method, path string
	status       int
	body         int
}

func startS3Wire(t *testing.T, upstream string) *s3Wire {
	t.Helper()
	u, _ := url.Parse(upstream)
	w := &s3Wire{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = pr.In.Host },
		ModifyResponse: func(resp *http.Response) error {
			if !strings.Contains(resp.Request.Header.Get("Authorization"), "/s3/aws4_request") {
				return nil
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(b))
			w.mu.Lock()
			w.seen = append(w.seen, s3Seen{resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, len(b)})
			w.mu.Unlock()
			return err
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.URL = "http://" + ln.Addr().String()
	w.srv = &http.Server{Handler: rp, ReadHeaderTimeout: 5 * time.Second}
	go w.srv.Serve(ln)
	t.Cleanup(func() { w.srv.Close() })
	return w
}

// snapshot is what was recorded since the last reset.
func (w *s3Wire) snapshot() []s3Seen {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.seen)
}

func (w *s3Wire) reset() []s3Seen {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.seen
	w.seen = nil
	return s
}

// releaseRig is a bucket of releases, a signing key, and an agent
// watching the bucket's "prod" channel of app demo.
type releaseRig struct {
	t       *testing.T
	h       *host
	bed     *testbed.Bed
	bucket  string
	key     string
	wire    *s3Wire
	app     testbed.WebApp
	s3      *s3.Client
	channel string
}

func newReleaseRig(t *testing.T, bucket string, extraConfig ...string) *releaseRig {
	t.Helper()
	bed := peers.Get(t)
	bins := peers.Binaries(t)
	awscli(t, bed, nil, "s3api", "create-bucket", "--bucket", bucket)
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "release.key"), filepath.Join(dir, "release.pub")
	mustWork(t, workstation(t, bed, bins, "keygen", "--secret-key", key, "--public-key", pub), "keygen")
	channel := "s3://" + bucket + "/demo/channels/prod.json"
	h := newHost(t, fmt.Sprintf("sources: {channel: %q, poll_interval: 1s}\ntrust: {public_keys: [%q], require_signature: true}\n", channel, pub)+strings.Join(extraConfig, ""))
	port, _ := testbed.FreePort()
	app := testbed.WebApp{Dir: filepath.Join(h.dir, "srv", "web"), Run: filepath.Join(h.dir, "run"), Port: port}
	t.Cleanup(app.Stop)
	// The agent's S3 calls go through the recorder, then the bed's proxy.
	wire := startS3Wire(t, bed.AWS.URL)
	h.start("AWS_ENDPOINT_URL=" + wire.URL)
	return &releaseRig{t: t, h: h, bed: bed, bucket: bucket, key: key, wire: wire, app: app, s3: awsconf.S3(bed.AWSConfig()), channel: channel}
}

func (r *releaseRig) ctl(args ...string) result {
	r.t.Helper()
	return workstation(r.t, r.bed, r.h.bins, args...)
}

// generatedDir is a web app directory without an appspec: push writes
// one that installs it to the app's directory, with the conventional
// scripts as hooks.
func (r *releaseRig) generatedDir(version string) string {
	dir := filepath.Join(r.t.TempDir(), version)
	rev := r.app.Revision(version, "")
	names := map[string]string{"ApplicationStop": "application_stop.sh", "ApplicationStart": "application_start.sh", "ValidateService": "validate_service.sh"}
	files := map[string]revision.File{"version.txt": {Content: version + "\n"}}
	for ev, body := range rev.Hooks {
		files["scripts/"+names[ev]] = revision.File{Content: "#!/bin/sh\nset -e\n" + body + "\n", Mode: 0o755}
	}
	for rel, f := range files {
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(f.Content), max(f.Mode, 0o644)); err != nil {
			r.t.Fatal(err)
		}
	}
	return dir
}

// ownDir is a revision with its own appspec.
func (r *releaseRig) ownDir(version string) string {
	dir := filepath.Join(r.t.TempDir(), version)
	if err := r.app.Revision(version, "").WriteDir(dir); err != nil {
		r.t.Fatal(err)
	}
	return dir
}

// waitServing waits until the agent's current revision is version and the
// app answers it.
func (r *releaseRig) waitServing(version string) api.Status {
	r.t.Helper()
	var st api.Status
	r.h.waitFor(120*time.Second, "revision "+version+" to serve", func() error {
		st = r.h.status()
		if st.Current == nil || st.Current.Revision != version || st.Operation != nil {
			return fmt.Errorf("current %+v, operation %+v", st.Current, st.Operation)
		}
		if got := httpGet(r.app.URL()); got != version {
			return fmt.Errorf("the app answers %q", got)
		}
		return nil
	})
	return st
}

// waitWarning waits for a status warning of the channel containing sub.
func (r *releaseRig) waitWarning(sub string) string {
	r.t.Helper()
	var found string
	r.h.waitFor(60*time.Second, "a channel warning containing "+strconv.Quote(sub), func() error {
		ws := r.h.status().Warnings
		for _, w := range ws {
			if strings.HasPrefix(w, "source channel: ") && strings.Contains(w, sub) {
				found = w
				return nil
			}
		}
		return fmt.Errorf("warnings %q", ws)
	})
	return found
}

func (r *releaseRig) history() []api.Deployment {
	r.t.Helper()
	return r.h.history()
}

func (r *releaseRig) get(key string) []byte {
	out, err := r.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(r.bucket), Key: aws.String(key)})
	if err != nil {
		r.t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, _ := io.ReadAll(out.Body)
	return b
}

func (r *releaseRig) put(key string, body []byte) {
	if _, err := r.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(r.bucket), Key: aws.String(key), Body: bytes.NewReader(body)}); err != nil {
		r.t.Fatalf("put %s: %v", key, err)
	}
}

// pointAt writes a channel document naming version's manifest, signed
// with the release key, as a compromised writer with the key could.
func (r *releaseRig) pointAt(seq int64, version string) {
	r.t.Helper()
	manifest := r.get("demo/revisions/" + version + "/manifest.json")
	sum := sha256.Sum256(manifest)
	doc := &release.ChannelDoc{SchemaVersion: 1, App: "demo", Channel: "prod", Sequence: seq, Version: version,
		Manifest: release.ManifestRel(version), ManifestSHA256: hex.EncodeToString(sum[:]), UpdatedAt: time.Now().UTC(), UpdatedBy: "test"}
	key, err := release.LoadPrivateKey(r.key, "")
	if err != nil {
		r.t.Fatal(err)
	}
	body := doc.Encode()
	r.put("demo/channels/prod.json.minisig", release.SignDoc(key, body, doc.TrustedComment()))
	r.put("demo/channels/prod.json", body)
}
