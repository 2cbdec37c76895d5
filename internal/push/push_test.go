package push

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

func write(t *testing.T, root, rel, content string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(root, rel)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// tarEntries lists a tar.gz: name → content.
func tarEntries(t *testing.T, b []byte) map[string]string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "root" {
			t.Errorf("%s: owner %d/%d %s, want root", h.Name, h.Uid, h.Gid, h.Uname)
		}
		c, _ := io.ReadAll(tr)
		out[h.Name] = string(c)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func signingKey(t *testing.T) (minisign.PublicKey, *minisign.PrivateKey) {
	t.Helper()
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, &priv
}

// A directory without an appspec: one is written (files to the
// destination, hooks from the conventional scripts), .rollbackignore is
// honoured, and the bundle, manifest and signature in the bucket are
// byte-for-byte what was built and signed (checked with awscli).
func TestPushWithoutAppSpec(t *testing.T) {
	c, bed := clients(t)
	bucket(t, c, "push-gen")
	dir := t.TempDir()
	write(t, dir, "index.html", "hello\n", 0o644)
	write(t, dir, "scripts/application_start.sh", "#!/bin/sh\necho start\n", 0o755)
	write(t, dir, "scripts/validate_service.sh", "#!/bin/sh\necho ok\n", 0o755)
	write(t, dir, "scripts/unrelated.sh", "#!/bin/sh\n", 0o755)
	write(t, dir, "logs/today.log", "noise", 0o644)
	write(t, dir, "secret.env", "TOKEN=1", 0o600)
	write(t, dir, ".git/HEAD", "ref", 0o644)
	write(t, dir, IgnoreFile, "logs/\n*.env\n", 0o644)
	pub, key := signingKey(t)
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	res, err := Push(context.Background(), c, Options{Dir: dir, Bucket: "push-gen", Prefix: "team", App: "demo", Version: "v1", Key: key, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Generated || res.BundleKey != "team/demo/revisions/v1/bundle.tar.gz" || res.ManifestKey != "team/demo/revisions/v1/manifest.json" {
		t.Errorf("result %+v", res)
	}
	bundle := download(t, bed, "push-gen", res.BundleKey)
	manifest := download(t, bed, "push-gen", res.ManifestKey)
	sig := download(t, bed, "push-gen", res.ManifestKey+release.SignatureSuffix)

	// The same directory bundles to the same bytes.
	again, err := Build(context.Background(), dir, "/opt/demo", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	local, _ := os.ReadFile(again.Path)
	if !bytes.Equal(bundle, local) {
		t.Errorf("uploaded bundle (%d bytes) differs from a rebuild (%d bytes)", len(bundle), len(local))
	}
	sum := sha256.Sum256(bundle)
	m, err := release.ParseManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if m.App != "demo" || m.Version != "v1" || m.SHA256 != hex.EncodeToString(sum[:]) || m.Size != int64(len(bundle)) ||
		m.Format != "tar.gz" || m.Bundle != "bundle.tar.gz" || !m.CreatedAt.Equal(now) || !strings.Contains(m.CreatedBy, "@") {
		t.Errorf("manifest %s", manifest)
	}
	if !bytes.Equal(manifest, res.Manifest.Encode()) {
		t.Errorf("the manifest in the bucket is not the one signed")
	}
	kr, _ := release.NewKeyring([]string{pub.String()}, true)
	comment, err := kr.Verify(manifest, sig)
	if err != nil || !strings.Contains(comment, "app=demo version=v1") {
		t.Errorf("signature: %q %v", comment, err)
	}

	entries := tarEntries(t, bundle)
	want := []string{".rollbackignore", "appspec.yml", "index.html", "scripts/", "scripts/application_start.sh", "scripts/unrelated.sh", "scripts/validate_service.sh"}
	if got := keys(entries); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("bundle entries %v, want %v", got, want)
	}
	spec, err := appspec.Parse("appspec.yml", []byte(entries["appspec.yml"]), appspec.Options{})
	if err != nil {
		t.Fatalf("generated appspec: %v\n%s", err, entries["appspec.yml"])
	}
	if len(spec.Files) != 1 || spec.Files[0].Destination != "/opt/demo" {
		t.Errorf("files %+v", spec.Files)
	}
	if len(spec.Hooks) != 2 || spec.Hooks[appspec.ApplicationStart][0].Location != "scripts/application_start.sh" ||
		spec.Hooks[appspec.ValidateService][0].Location != "scripts/validate_service.sh" {
		t.Errorf("hooks %+v", spec.Hooks)
	}

	// The version exists now: refused without --force, nothing changed.
	_, err = Push(context.Background(), c, Options{Dir: dir, Bucket: "push-gen", Prefix: "team", App: "demo", Version: "v1"})
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "s3://push-gen/team/demo/revisions/v1/manifest.json") {
		t.Errorf("second push: %v", err)
	}
	write(t, dir, "index.html", "hello again\n", 0o644)
	res, err = Push(context.Background(), c, Options{Dir: dir, Bucket: "push-gen", Prefix: "team", App: "demo", Version: "v1", Force: true})
	if err != nil || !res.Replaced {
		t.Fatalf("forced push: %+v %v", res, err)
	}
	if b := download(t, bed, "push-gen", res.BundleKey); !strings.Contains(tarEntries(t, b)["index.html"], "again") {
		t.Errorf("forced push did not replace the bundle")
	}
}

// An existing appspec is validated with the agent's parser: its errors,
// with their lines, stop the push before anything is uploaded.
func TestPushValidatesExistingAppSpec(t *testing.T) {
	c, bed := clients(t)
	bucket(t, c, "push-bad")
	dir := t.TempDir()
	write(t, dir, "appspec.yml", "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: scripts/missing.sh\n  NoSuchEvent:\n    - location: x\n", 0o644)
	_, err := Push(context.Background(), c, Options{Dir: dir, Bucket: "push-bad", App: "demo", Version: "v1"})
	if err == nil || !strings.Contains(err.Error(), "appspec.yml:5") || !strings.Contains(err.Error(), "nothing was uploaded") {
		t.Fatalf("push of a broken appspec: %v", err)
	}
	if out := awsCLI(t, bed, "s3api", "list-objects-v2", "--bucket", "push-bad"); strings.Contains(string(out), "Key") {
		t.Errorf("objects uploaded despite the broken appspec: %s", out)
	}
	// A valid one goes up unchanged.
	write(t, dir, "appspec.yml", "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: /srv/x\n", 0o644)
	write(t, dir, "app/a.txt", "a", 0o644)
	res, err := Push(context.Background(), c, Options{Dir: dir, Bucket: "push-bad", App: "demo", Version: "v1"})
	if err != nil || res.Generated {
		t.Fatalf("push: %+v %v", res, err)
	}
	entries := tarEntries(t, download(t, bed, "push-bad", res.BundleKey))
	if entries["appspec.yml"] != "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: /srv/x\n" {
		t.Errorf("appspec in the bundle: %q", entries["appspec.yml"])
	}
	// An appspec hook the bundle would leave out is refused.
	write(t, dir, "appspec.yml", "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: scripts/start.sh\n", 0o644)
	write(t, dir, "scripts/start.sh", "#!/bin/sh\n", 0o755)
	write(t, dir, IgnoreFile, "scripts/\n", 0o644)
	if _, err := Push(context.Background(), c, Options{Dir: dir, Bucket: "push-bad", App: "demo", Version: "v2"}); err == nil || !strings.Contains(err.Error(), "is listed in .rollbackignore") {
		t.Errorf("ignored hook script: %v", err)
	}
}

// A bundle above the threshold goes up in parts, in parallel, and arrives
// whole.
func TestPushLargeBundleIsMultipart(t *testing.T) {
	c, bed := clients(t)
	bucket(t, c, "push-big")
	dir := t.TempDir()
	big := make([]byte, 20<<20)
	rand.Read(big) // incompressible: the bundle stays above the threshold
	write(t, dir, "blob.bin", string(big), 0o644)
	bed.AWS.ResetCounts()
	var progress bytes.Buffer
	res, err := Push(context.Background(), c, Options{Dir: dir, Bucket: "push-big", App: "demo", Version: "v1", Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Multipart || bed.AWS.Count("s3", "PUT object") < 3 {
		t.Errorf("multipart %v, %d PUTs", res.Multipart, bed.AWS.Count("s3", "PUT object"))
	}
	b := download(t, bed, "push-big", res.BundleKey)
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != res.Manifest.SHA256 || int64(len(b)) != res.Manifest.Size {
		t.Errorf("downloaded %d bytes, sha256 %x; manifest %+v", len(b), sum, res.Manifest)
	}
	if !strings.Contains(progress.String(), "100%") {
		t.Errorf("progress output %q", progress.String())
	}
}
