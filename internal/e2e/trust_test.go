package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/source/release"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// signer is a release key made with agentctl keygen, as a release
// engineer makes one, and the config lines that trust it.
type signer struct {
	t        *testing.T
	key, pub string
}

func newSigner(t *testing.T, h *host) *signer {
	t.Helper()
	dir := t.TempDir()
	s := &signer{t: t, key: filepath.Join(dir, "release.key"), pub: filepath.Join(dir, "release.pub")}
	mustWork(t, workstation(t, h.bed, h.bins, "keygen", "--secret-key", s.key, "--public-key", s.pub), "keygen")
	return s
}

// trustConfig requires signatures by this key.
func (s *signer) trustConfig() string {
	return fmt.Sprintf("trust: {public_keys: [%q], require_signature: true}\n", s.pub)
}

// sign writes, beside nothing in particular, a manifest for the bundle
// bytes data (named bundleName, of version) and its signature into dir as
// manifestName and manifestName.minisig.
func (s *signer) sign(dir, manifestName, bundleName, version string, data []byte) {
	s.t.Helper()
	sum := sha256.Sum256(data)
	m := &release.Manifest{SchemaVersion: release.ManifestSchema, App: "demo", Version: version, Bundle: bundleName,
		SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Format: release.FormatTarGz, CreatedAt: time.Now().UTC(), CreatedBy: "test"}
	key, err := release.LoadPrivateKey(s.key, "")
	if err != nil {
		s.t.Fatal(err)
	}
	doc := m.Encode()
	if err := os.WriteFile(filepath.Join(dir, manifestName+release.SignatureSuffix), release.SignDoc(key, doc, m.TrustedComment()), 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, manifestName), doc, 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// Issue 17 item 3: with trust.require_signature, every source must meet
// the policy. An S3 object replaced in the bucket, an unsigned object, a
// local file or directory: refused at Fetch, and not one hook runs. A
// signed release (from S3, or downloaded beside its manifest) deploys,
// and root may deploy unsigned with --allow-unsigned.
func TestEverySourceMeetsTheTrustPolicy(t *testing.T) {
	h := newHost(t, "")
	s := newSigner(t, h)
	h.writeConfig("checkpoint: {before_deploy: [], required: false}\nboot: {assess: false}\n" + s.trustConfig())
	h.start()
	dest := filepath.Join(h.dir, "srv", "app")
	marker := filepath.Join(h.dir, "evil-hook-ran")
	installed := func() string {
		b, _ := os.ReadFile(filepath.Join(dest, "v"))
		return string(b)
	}
	good := filepath.Join(t.TempDir(), "v1")
	if err := (testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: "signed"}}}).WriteDir(good); err != nil {
		t.Fatal(err)
	}
	bucket := fmt.Sprintf("trust-%d", time.Now().UnixNano())
	awscli(t, h.bed, nil, "s3api", "create-bucket", "--bucket", bucket)
	mustWork(t, workstation(t, h.bed, h.bins, "push", good, "--bucket", bucket, "--app", "demo", "--version", "v1", "--sign-key", s.key), "push v1")
	signedURL := "s3://" + bucket + "/demo/revisions/v1/bundle.tar.gz"

	// The control: the signed release deploys from its S3 URL.
	r, d := h.deployJSON(signedURL)
	if r.code != 0 || installed() != "signed" || d.Source.Signer == "" || d.Source.SHA256 != d.Digest {
		t.Fatalf("signed S3 release: exit %d, installed %q, source %+v\n%s", r.code, installed(), d.Source, r.stderr)
	}

	evil := h.bundle("evil", testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: "evil"}},
		Hooks: map[string]string{"BeforeInstall": "touch " + marker}})
	refused := func(what, want string, args ...string) {
		t.Helper()
		r, d := h.deployJSON(args...)
		s := d.FailedStep()
		if r.code != 1 || s == nil || s.Name != "Fetch" || !strings.Contains(s.Error, want) {
			t.Errorf("%s: exit %d, failed step %+v, want Fetch refusing with %q\n%s%s", what, r.code, s, want, r.stdout, r.stderr)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("%s: the unsigned bundle's hook ran as root", what)
		}
		if got := installed(); got != "signed" {
			t.Errorf("%s: installed %q", what, got)
		}
	}
	// The attack: the object replaced in the bucket, the signed manifest
	// left beside it.
	awscli(t, h.bed, nil, "s3api", "put-object", "--bucket", bucket, "--key", "demo/revisions/v1/bundle.tar.gz", "--body", evil)
	refused("object replaced in the bucket", "tampered or replaced", signedURL)
	// Variants: an object with no manifest, a local file, a directory.
	awscli(t, h.bed, nil, "s3api", "put-object", "--bucket", bucket, "--key", "loose/evil.tgz", "--body", evil)
	refused("unsigned S3 object", "has no signed manifest beside it", "s3://"+bucket+"/loose/evil.tgz")
	refused("unsigned local file", "has no signed manifest beside it", evil)
	evilDir := filepath.Join(t.TempDir(), "evil")
	(testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: "evil"}}, Hooks: map[string]string{"BeforeInstall": "touch " + marker}}).WriteDir(evilDir)
	refused("directory", "is a directory, which carries no signature", evilDir)
	// A manifest signed for other bytes beside a local file.
	s.sign(h.dir, "evil.tgz.manifest.json", "evil.tgz", "v9", []byte("other bytes"))
	refused("local file beside a manifest of other bytes", "tampered or replaced", evil)

	// A release downloaded as its three objects deploys signed.
	rel := filepath.Join(t.TempDir(), "release")
	os.Mkdir(rel, 0o755)
	data, err := os.ReadFile(h.bundle("v2", testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: "downloaded"}}}))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(rel, "bundle.tar.gz"), data, 0o644)
	s.sign(rel, "manifest.json", "bundle.tar.gz", "v2", data)
	if r, d := h.deployJSON(filepath.Join(rel, "bundle.tar.gz")); r.code != 0 || installed() != "downloaded" || d.Source.Signer == "" {
		t.Errorf("downloaded signed release: exit %d, installed %q, source %+v\n%s", r.code, installed(), d.Source, r.stderr)
	}
	// Root's explicit choice.
	plain := h.bundle("plain", testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: "unsigned by choice"}}})
	if r, d := h.deployJSON(plain, "--allow-unsigned"); r.code != 0 || installed() != "unsigned by choice" || !d.Source.AllowUnsigned {
		t.Errorf("--allow-unsigned: exit %d, installed %q\n%s", r.code, installed(), r.stderr)
	}
}
