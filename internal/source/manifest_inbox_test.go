package source

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
	"go.uber.org/zap/zaptest"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/bundle"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// inboxEngine is fakeEngine plus the event stream the inbox subscribes to.
type inboxEngine struct{ fakeEngine }

func (e *inboxEngine) Subscribe(string) (<-chan api.Event, func()) {
	return make(chan api.Event), func() {}
}

func (e *inboxEngine) Deployments(int) ([]api.Deployment, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]api.Deployment(nil), e.deps...), nil
}

func tgz(t *testing.T, content string) []byte {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "appspec.yml"), []byte("version: 0.0\nos: linux\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "file.txt"), []byte(content), 0o644)
	var b bytes.Buffer
	if err := bundle.WriteTarGz(context.Background(), dir, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func manifestFor(app, version, name string, data []byte) *release.Manifest {
	sum := sha256.Sum256(data)
	return &release.Manifest{SchemaVersion: 1, App: app, Version: version, Bundle: name, SHA256: hex.EncodeToString(sum[:]),
		Size: int64(len(data)), Format: release.FormatTarGz, CreatedAt: time.Now().UTC(), CreatedBy: "test"}
}

// Item 5: manifests and signatures beside inbox bundles are verified the
// same way as the channel's; without them a bundle is accepted only when
// signatures are not required.
func TestInboxVerifiesManifestsBesideBundles(t *testing.T) {
	pub, priv := newKey(t)
	_, stranger := newKey(t)
	type drop struct {
		name, want, reason string // want: revision queued; reason: rejection text
		require            bool
		write              func(dir string)
	}
	sign := func(dir, mname string, m *release.Manifest, key minisign.PrivateKey) {
		doc := m.Encode()
		os.WriteFile(filepath.Join(dir, mname+release.SignatureSuffix), release.SignDoc(key, doc, m.TrustedComment()), 0o644)
		os.WriteFile(filepath.Join(dir, mname), doc, 0o644)
	}
	good := tgz(t, "good")
	cases := []drop{
		{name: "app-7.tgz", want: "v7", require: true, write: func(dir string) {
			sign(dir, "app-7.tgz.manifest.json", manifestFor("demo", "v7", "app-7.tgz", good), priv)
		}},
		{name: "bundle.tar.gz", want: "v8", require: true, write: func(dir string) {
			// As downloaded from the bucket: manifest.json names the bundle.
			sign(dir, "manifest.json", manifestFor("demo", "v8", "bundle.tar.gz", good), priv)
		}},
		{name: "bare.tgz", reason: "trust.require_signature is true", require: true},
		{name: "bare-ok.tgz", want: "bare-ok", require: false},
		{name: "stranger.tgz", reason: "not in trust.public_keys", require: false, write: func(dir string) {
			sign(dir, "stranger.tgz.manifest.json", manifestFor("demo", "v9", "stranger.tgz", good), stranger)
		}},
		{name: "tampered.tgz", reason: "(tampered or replaced)", require: true, write: func(dir string) {
			m := manifestFor("demo", "v10", "tampered.tgz", good)
			m.SHA256 = strings.Repeat("0", 64)
			sign(dir, "tampered.tgz.manifest.json", m, priv)
		}},
		{name: "billing.tgz", reason: `is for app "billing"`, require: true, write: func(dir string) {
			sign(dir, "billing.tgz.manifest.json", manifestFor("billing", "v1", "billing.tgz", good), priv)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			kr, err := release.NewKeyring([]string{pub.String()}, tc.require)
			if err != nil {
				t.Fatal(err)
			}
			eng := &inboxEngine{}
			in := &Inbox{Dir: dir, Engine: eng, Journal: eng, Log: zaptest.NewLogger(t), Quiet: 50 * time.Millisecond, Keys: kr, App: "demo"}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- in.Run(ctx) }()
			defer func() {
				cancel()
				<-done
			}()
			// Sidecars first, then the bundle (written aside and renamed,
			// as a careful copy does).
			if tc.write != nil {
				tc.write(dir)
			}
			os.WriteFile(filepath.Join(dir, tc.name+".part"), good, 0o644)
			os.Rename(filepath.Join(dir, tc.name+".part"), filepath.Join(dir, tc.name))
			// Wait for the outcome: queued, or rejected with its reason.
			testutil.WaitFor(t, 10*time.Second, tc.name+" to be queued or rejected", func() error {
				if len(eng.submitted()) > 0 {
					return nil
				}
				_, err := os.Stat(filepath.Join(dir, dirRejected, tc.name+".reason"))
				return err
			})
			reqs := eng.submitted()
			if tc.want != "" {
				if len(reqs) != 1 || reqs[0].Revision != tc.want {
					t.Fatalf("queued %+v, want revision %s", reqs, tc.want)
				}
				if _, err := os.Stat(filepath.Join(dir, dirProcessing, tc.name)); err != nil {
					t.Errorf("bundle not in processing/: %v", err)
				}
				if tc.write != nil {
					// They follow the bundle, under its name, so that it can
					// be checked again from processing/ after a restart.
					for _, f := range []string{tc.name + ".manifest.json", tc.name + ".manifest.json.minisig"} {
						if _, err := os.Stat(filepath.Join(dir, dirProcessing, f)); err != nil {
							t.Errorf("manifest and signature not kept beside the bundle: %v", err)
						}
					}
					if reqs[0].Source.SHA256 == "" || reqs[0].Source.Signer == "" {
						t.Errorf("the queued source does not pin the verified digest and signer: %+v", reqs[0].Source)
					}
				}
				return
			}
			if len(reqs) != 0 {
				t.Fatalf("queued %+v, want a rejection", reqs)
			}
			reason, err := os.ReadFile(filepath.Join(dir, dirRejected, tc.name+".reason"))
			if err != nil || !strings.Contains(string(reason), tc.reason) {
				t.Errorf("rejection reason %q (%v), want %q", reason, err, tc.reason)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "*.json*")); len(left) != 0 {
				t.Errorf("sidecars left in the inbox: %v", left)
			}
		})
	}
}

func newKey(t *testing.T) (minisign.PublicKey, minisign.PrivateKey) {
	t.Helper()
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}
