package release

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
)

func testManifest() *Manifest {
	return &Manifest{SchemaVersion: 1, App: "demo", Version: "v1", Bundle: BundleName,
		SHA256: strings.Repeat("ab", 32), Size: 10, Format: FormatTarGz, CreatedAt: time.Unix(1700000000, 0).UTC(), CreatedBy: "t"}
}

func TestManifestRoundTripAndChecks(t *testing.T) {
	m := testManifest()
	got, err := ParseManifest(m.Encode())
	if err != nil || *got != *m {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for name, edit := range map[string]func(*Manifest){
		"schema":      func(m *Manifest) { m.SchemaVersion = 2 },
		"app":         func(m *Manifest) { m.App = "../x" },
		"version":     func(m *Manifest) { m.Version = ".." },
		"bundle path": func(m *Manifest) { m.Bundle = "../../etc/passwd" },
		"sha":         func(m *Manifest) { m.SHA256 = "XYZ" },
		"size":        func(m *Manifest) { m.Size = 0 },
		"format":      func(m *Manifest) { m.Format = "zip" },
	} {
		bad := *testManifest()
		edit(&bad)
		if _, err := ParseManifest(bad.Encode()); err == nil {
			t.Errorf("%s: a bad manifest was accepted", name)
		}
	}
}

func TestChannelURLAndLayout(t *testing.T) {
	l, app, name, err := ParseChannelURL("s3://rel/team/x/demo/channels/prod.json")
	if err != nil || app != "demo" || name != "prod" || l.Bucket != "rel" || l.Prefix != "team/x/demo/" {
		t.Fatalf("%+v %s %s %v", l, app, name, err)
	}
	if want := NewLayout("rel", "/team/x/", "demo"); want != l {
		t.Errorf("NewLayout %+v, parsed %+v", want, l)
	}
	if k := l.BundleKey("v1"); k != "team/x/demo/revisions/v1/bundle.tar.gz" {
		t.Errorf("bundle key %s", k)
	}
	if _, app, _, err := ParseChannelURL("s3://rel/demo/channels/prod.json"); err != nil || app != "demo" {
		t.Errorf("no prefix: %s %v", app, err)
	}
	for _, bad := range []string{"s3://rel/channels/prod.json", "s3://rel/demo/prod.json", "s3://rel/demo/channels/prod.yaml", "https://rel/demo/channels/p.json", "s3:///demo/channels/p.json"} {
		if _, _, _, err := ParseChannelURL(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
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

func TestKeyringVerify(t *testing.T) {
	pub, priv := newKey(t)
	_, other := newKey(t)
	dir := t.TempDir()
	pubFile := filepath.Join(dir, "k.pub")
	text, _ := pub.MarshalText()
	os.WriteFile(pubFile, text, 0o644)
	// Both forms of trust.public_keys: the base64 line and a .pub path.
	for _, entry := range []string{pub.String(), pubFile} {
		kr, err := NewKeyring([]string{entry}, true)
		if err != nil || kr.Len() != 1 {
			t.Fatalf("keyring from %q: %v", entry, err)
		}
		m := testManifest()
		doc := m.Encode()
		sig := SignDoc(priv, doc, m.TrustedComment())
		comment, err := kr.Verify(doc, sig)
		if err != nil || comment != m.TrustedComment() {
			t.Errorf("good signature: %q %v", comment, err)
		}
		if err := CheckComment(comment, "manifest", map[string]string{"app": "demo", "version": "v1"}); err != nil {
			t.Errorf("comment: %v", err)
		}
		if err := CheckComment(comment, "manifest", map[string]string{"version": "v2"}); err == nil {
			t.Errorf("a comment for v1 passed for v2")
		}
		if err := CheckComment(comment, "channel", nil); err == nil {
			t.Errorf("a manifest's signature passed for a channel")
		}
		tampered := append([]byte(nil), doc...)
		tampered[len(tampered)-3] ^= 1
		if _, err := kr.Verify(tampered, sig); err == nil || !strings.Contains(err.Error(), "does not match") {
			t.Errorf("tampered document: %v", err)
		}
		if _, err := kr.Verify(doc, SignDoc(other, doc, "x")); err == nil || !strings.Contains(err.Error(), "not in trust.public_keys") {
			t.Errorf("unknown key: %v", err)
		}
		if _, err := kr.Verify(doc, nil); err == nil || !strings.Contains(err.Error(), "require_signature") {
			t.Errorf("missing signature with require: %v", err)
		}
		if _, err := kr.Verify(doc, []byte("garbage")); err == nil {
			t.Errorf("garbage signature accepted")
		}
	}
	optional, _ := NewKeyring([]string{pub.String()}, false)
	if _, err := optional.Verify([]byte("x"), nil); err != ErrUnsigned {
		t.Errorf("unsigned, optional: %v", err)
	}
	if _, err := optional.Verify([]byte("x"), SignDoc(other, []byte("x"), "")); err == nil {
		t.Errorf("a bad signature must be refused even when signatures are optional")
	}
	if _, err := NewKeyring([]string{"not a key", "/nonexistent/k.pub"}, false); err == nil || !strings.Contains(err.Error(), "[1]") {
		t.Errorf("bad entries: %v", err)
	}
	if _, err := NewKeyring(nil, true); err == nil {
		t.Errorf("require without keys accepted")
	}
}

// Signatures made by the minisign tool itself (0.11: prehashed by
// default, and -l legacy) verify, and its comment form is not ours, so
// there is nothing in it to check. testdata/minisign was made with:
// minisign -G -W; minisign -S -m manifest.json -t ...; minisign -S -l -m legacy.json.
func TestMinisignToolCompatibility(t *testing.T) {
	kr, err := NewKeyring([]string{filepath.Join(mustAbs(t, "testdata/minisign"), "tool.pub")}, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"manifest.json", "legacy.json"} {
		doc, _ := os.ReadFile(filepath.Join("testdata/minisign", name))
		sig, _ := os.ReadFile(filepath.Join("testdata/minisign", name+".minisig"))
		comment, err := kr.Verify(doc, sig)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if err := CheckComment(comment, "manifest", map[string]string{"app": "other"}); err != nil {
			t.Errorf("%s: the tool's comment %q was read as ours: %v", name, comment, err)
		}
		if _, err := ParseManifest(doc); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The tool's unencrypted secret key signs here too.
	key, err := LoadPrivateKey("testdata/minisign/tool.key", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Verify([]byte("doc"), SignDoc(key, []byte("doc"), "c")); err != nil {
		t.Errorf("signed with the tool's key: %v", err)
	}
}

// An encrypted secret key (the minisign tool's default) needs its
// password. minisign's own parameters cost a 1 GiB scrypt per use, so
// testdata/minisign/cheap.key is encrypted the same way with small scrypt
// parameters (password "s3cret"), which the format records in the file.
func TestEncryptedKeyNeedsItsPassword(t *testing.T) {
	const p = "testdata/minisign/cheap.key"
	if _, err := LoadPrivateKey(p, ""); err == nil || !strings.Contains(err.Error(), "signing key testdata/minisign/cheap.key is encrypted") {
		t.Errorf("no password: %v", err)
	}
	if _, err := LoadPrivateKey(p, "wrong"); err == nil || !strings.Contains(err.Error(), "decrypt signing key") {
		t.Errorf("wrong password: %v", err)
	}
	k, err := LoadPrivateKey(p, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	kr, err := NewKeyring([]string{mustAbs(t, "testdata/minisign/cheap.pub")}, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kr.Verify([]byte("doc"), SignDoc(k, []byte("doc"), "")); err != nil {
		t.Errorf("signature with the decrypted key: %v", err)
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
