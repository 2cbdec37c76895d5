package release

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
)

// fuzzKey derives a minisign key pair from a name, so that seeds signed
// in one run still verify in the next (the corpus is kept on disk).
func fuzzKey(t testing.TB, name string) (minisign.PublicKey, minisign.PrivateKey) {
	t.Helper()
	seed := sha256.Sum256([]byte("rollback-agent fuzz key " + name))
	pub, priv, err := minisign.GenerateKey(bytes.NewReader(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// fuzzManifest is a valid manifest of app demo.
func fuzzManifest(version string) *Manifest {
	return &Manifest{SchemaVersion: ManifestSchema, App: "demo", Version: version, Bundle: BundleName,
		SHA256: strings.Repeat("ab", 32), Size: 1234, Format: FormatTarGz,
		CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), CreatedBy: "fuzz"}
}

// signedPair is a document and a trusted comment that the trusted key
// really signed: the only pairs Verify may ever accept.
type signedPair struct{ doc, comment string }

// FuzzVerifyManifest drives the manifest verifier the channel watcher
// runs on every release (Keyring.Verify, then ParseManifest, then
// CheckComment, as Channel.manifest does) with hostile documents and
// signatures. Beyond "no panic", it checks the property that matters:
// nothing but the exact bytes and trusted comment the trusted key signed
// is ever accepted as signed, whatever the fuzzer does to either file.
func FuzzVerifyManifest(f *testing.F) {
	pub, priv := fuzzKey(f, "trusted")
	_, otherPriv := fuzzKey(f, "other")
	signed := map[signedPair]bool{}
	sign := func(key minisign.PrivateKey, doc []byte, comment string) []byte {
		if key.ID() == priv.ID() {
			signed[signedPair{string(doc), comment}] = true
		}
		return SignDoc(key, doc, comment)
	}
	for _, v := range []string{"v1", "v2"} {
		m := fuzzManifest(v)
		doc := m.Encode()
		sig := sign(priv, doc, m.TrustedComment())
		f.Add(doc, sig)
		f.Add(bytes.Replace(doc, []byte(`"demo"`), []byte(`"evil"`), 1), sig) // tampered after signing
		f.Add(doc, sign(otherPriv, doc, m.TrustedComment()))                  // a key nobody trusts
		f.Add(doc, sig[:len(sig)/2])                                          // truncated signature
		f.Add(doc, bytes.Replace(sig, []byte("version="+v), []byte("version=v0"), 1))
		other := fuzzManifest("v3")
		f.Add(doc, sign(priv, doc, other.TrustedComment())) // signed, but the comment names another version
		f.Add(other.Encode(), sig)                          // a valid signature of another document
	}
	f.Add([]byte(`{"schema_version": 1, "app": "demo",`), []byte{})
	f.Add([]byte(`{"schema_version": 1, "app": "../x", "version": "..", "bundle": "../bundle", "sha256": "AB", "size": -1, "format": "zip"}`), []byte{})
	f.Add([]byte("null"), []byte("untrusted comment: x\nRWQ=\ntrusted comment: y\nAA==\n"))

	optional := &Keyring{keys: []minisign.PublicKey{pub}}
	required := &Keyring{keys: []minisign.PublicKey{pub}, Require: true}
	noKeys := &Keyring{Require: true}
	f.Fuzz(func(t *testing.T, doc, sig []byte) {
		comment, verr := optional.Verify(doc, sig)
		if verr == nil && !signed[signedPair{string(doc), comment}] {
			t.Fatalf("accepted a signature over bytes or a comment the trusted key never signed:\n%q\ncomment %q", doc, comment)
		}
		if verr != nil && (comment != "" || verr.Error() == "") {
			t.Fatalf("refusal %q came with comment %q", verr, comment)
		}
		if _, err := noKeys.Verify(doc, sig); err == nil {
			t.Fatal("a keyring without keys that requires signatures accepted a document")
		}
		if len(sig) == 0 {
			// No .minisig object at all: refused only when required.
			if _, err := required.Verify(doc, nil); err == nil {
				t.Fatal("unsigned document accepted with require_signature")
			}
			if _, err := optional.Verify(doc, nil); !errors.Is(err, ErrUnsigned) {
				t.Fatalf("unsigned document with optional signatures: %v, want ErrUnsigned", err)
			}
		}
		m, perr := ParseManifest(doc)
		if perr != nil {
			if m != nil {
				t.Fatalf("a manifest came back with an error: %v", perr)
			}
			return
		}
		checkManifest(t, m)
		if verr != nil {
			return
		}
		cerr := CheckComment(comment, "manifest", map[string]string{"app": m.App, "version": m.Version, "sha256": m.SHA256})
		if cerr == nil && strings.HasPrefix(comment, "rollback-agent manifest ") && comment != m.TrustedComment() {
			t.Fatalf("trusted comment %q accepted for a manifest whose own comment is %q", comment, m.TrustedComment())
		}
	})
}

// checkManifest asserts what ParseManifest promises about what it accepts:
// the fields the watcher turns into S3 keys and file names are safe.
func checkManifest(t *testing.T, m *Manifest) {
	t.Helper()
	for what, v := range map[string]string{"app": m.App, "version": m.Version} {
		if CheckName(what, v) != nil || v == "." || v == ".." {
			t.Fatalf("accepted %s %q", what, v)
		}
	}
	if strings.ContainsAny(m.Bundle, "/\\\x00") || strings.HasPrefix(m.Bundle, ".") || m.Bundle == "" {
		t.Fatalf("accepted bundle %q", m.Bundle)
	}
	if len(m.SHA256) != 64 || strings.Trim(m.SHA256, "0123456789abcdef") != "" {
		t.Fatalf("accepted sha256 %q", m.SHA256)
	}
	if m.Size <= 0 || m.Format != FormatTarGz || m.SchemaVersion != ManifestSchema {
		t.Fatalf("accepted %+v", m)
	}
	// What the agent accepted, it can write back and read again the same.
	again, err := ParseManifest(m.Encode())
	if err != nil {
		t.Fatalf("re-encoded manifest refused: %v", err)
	}
	if !bytes.Equal(again.Encode(), m.Encode()) {
		t.Fatalf("round trip changed the manifest: %+v -> %+v", m, again)
	}
}
