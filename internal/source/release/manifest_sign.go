package release

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"aead.dev/minisign"
)

// Keyring holds the trusted minisign public keys (trust.public_keys).
// The daemon shares one Keyring with every source and replaces its
// contents on reload (Replace), so a key removed from the config is
// refused at once everywhere.
type Keyring struct {
	mu   sync.RWMutex
	keys []minisign.PublicKey
	// Require refuses documents without a valid signature
	// (trust.require_signature); read it with Required.
	Require bool
}

// Replace makes kr trust what next trusts, from now on.
func (kr *Keyring) Replace(next *Keyring) {
	next.mu.RLock()
	keys, req := next.keys, next.Require
	next.mu.RUnlock()
	kr.mu.Lock()
	kr.keys, kr.Require = keys, req
	kr.mu.Unlock()
}

// Required reports trust.require_signature.
func (kr *Keyring) Required() bool {
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	return kr.Require
}

// Trusts reports whether the key with this id (as KeyID prints it) is
// trusted now.
func (kr *Keyring) Trusts(id string) bool {
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	for _, k := range kr.keys {
		if keyID(k.ID()) == id {
			return true
		}
	}
	return false
}

// NewKeyring reads trust.public_keys. Each entry is either a minisign
// public key as its base64 line ("RWQ..."), or the absolute path of a
// minisign .pub file (the two-line file `minisign -G` or `agentctl keygen`
// writes).
func NewKeyring(entries []string, require bool) (*Keyring, error) {
	kr := &Keyring{Require: require}
	var errs []error
	for i, e := range entries {
		e = strings.TrimSpace(e)
		text := []byte(e)
		if filepath.IsAbs(e) {
			b, err := ReadKeyFile(e)
			if err != nil {
				errs = append(errs, fmt.Errorf("trust.public_keys[%d]: read %s: %w", i, e, err))
				continue
			}
			text = []byte(strings.TrimSpace(string(b)))
		}
		var k minisign.PublicKey
		if err := k.UnmarshalText(text); err != nil {
			errs = append(errs, fmt.Errorf("trust.public_keys[%d] %q: not a minisign public key: %w", i, e, err))
			continue
		}
		kr.keys = append(kr.keys, k)
	}
	if require && len(kr.keys) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("trust.require_signature is true but trust.public_keys is empty"))
	}
	return kr, errors.Join(errs...)
}

// MaxKeyFileBytes bounds what is read of a key file: a minisign key file
// is two short lines, and a key named /dev/zero must not fill memory.
const MaxKeyFileBytes = 4 << 10

// ReadKeyFile reads a minisign key file, at most MaxKeyFileBytes of it.
func ReadKeyFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxKeyFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxKeyFileBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a minisign key file (reading stopped there)", path, MaxKeyFileBytes)
	}
	return b, nil
}

// Len is the number of trusted keys.
func (kr *Keyring) Len() int {
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	return len(kr.keys)
}

// ErrUnsigned means a document has no signature and none is required.
var ErrUnsigned = errors.New("not signed")

// Verify checks sig (a .minisig file's bytes; nil when there is none)
// over doc. It returns the trusted comment of a valid signature, or
// ErrUnsigned when there is no signature and none is required. A
// signature that is present is always checked: a bad one is refused even
// when signatures are optional, and without trusted keys it cannot be
// checked, which is refused only when signatures are required.
func (kr *Keyring) Verify(doc, sig []byte) (string, error) {
	v, err := kr.Check(doc, sig)
	return v.Comment, err
}

// Verified is what a valid signature says: its trusted comment and the
// id of the key that made it (as KeyID prints it).
type Verified struct {
	Comment string
	KeyID   string
}

// Check is Verify that also names the signing key.
func (kr *Keyring) Check(doc, sig []byte) (Verified, error) {
	kr.mu.RLock()
	keys, require := kr.keys, kr.Require
	kr.mu.RUnlock()
	if sig == nil {
		if require {
			return Verified{}, errors.New("no signature, and trust.require_signature is true")
		}
		return Verified{}, ErrUnsigned
	}
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		return Verified{}, fmt.Errorf("signature is not a minisign signature: %w", err)
	}
	if len(keys) == 0 {
		if require {
			return Verified{}, errors.New("no trusted public keys to check the signature with")
		}
		return Verified{}, ErrUnsigned
	}
	for _, k := range keys {
		if k.ID() != s.KeyID {
			continue
		}
		if !minisign.Verify(k, doc, sig) {
			return Verified{}, fmt.Errorf("signature by key %s does not match the document (tampered, or signed over other bytes)", keyID(s.KeyID))
		}
		return Verified{Comment: s.TrustedComment, KeyID: keyID(s.KeyID)}, nil
	}
	return Verified{}, fmt.Errorf("signed by key %s, which is not in trust.public_keys", keyID(s.KeyID))
}

// CheckManifest verifies a manifest document and its signature (nil:
// none) as every source does: the signature against keys, the fields,
// the agent's app, and the signature's trusted comment. It returns the
// manifest and the id of the key that signed it, "" when it was accepted
// unsigned (keys do not require a signature). Errors name no file: the
// caller knows where the documents came from.
func CheckManifest(keys *Keyring, app string, body, sig []byte) (*Manifest, string, error) {
	v, err := keys.Check(body, sig)
	if err != nil && !errors.Is(err, ErrUnsigned) {
		return nil, "", err
	}
	m, err := ParseManifest(body)
	if err != nil {
		return nil, "", err
	}
	if app != "" && m.App != app {
		return nil, "", fmt.Errorf("the manifest is for app %q, this agent deploys %q", m.App, app)
	}
	if err := CheckComment(v.Comment, "manifest", map[string]string{"app": m.App, "version": m.Version, "sha256": m.SHA256}); err != nil {
		return nil, "", err
	}
	return m, v.KeyID, nil
}

// keyID prints a key id as minisign does.
func keyID(id uint64) string { return strings.ToUpper(strconv.FormatUint(id, 16)) }

// CheckComment checks the fields of our own trusted comments
// ("rollback-agent KIND k=v ...") against want. A comment in another form
// (the minisign tool's default "timestamp:... file:...") says nothing to
// check: the signature still covers the document's bytes.
func CheckComment(comment, kind string, want map[string]string) error {
	fields := strings.Fields(comment)
	if len(fields) < 2 || fields[0] != "rollback-agent" {
		return nil
	}
	if fields[1] != kind {
		return fmt.Errorf("the signature is for a %s, not a %s", fields[1], kind)
	}
	got := map[string]string{}
	for _, f := range fields[2:] {
		k, v, _ := strings.Cut(f, "=")
		got[k] = v
	}
	for k, v := range want {
		if g, ok := got[k]; ok && g != v {
			return fmt.Errorf("the signature's trusted comment says %s=%s, the document says %s", k, g, v)
		}
	}
	return nil
}

// SignDoc signs doc with key and a trusted comment, as `minisign -S -t`
// would (the minisign tool verifies it).
func SignDoc(key minisign.PrivateKey, doc []byte, comment string) []byte {
	return minisign.SignWithComments(key, doc, comment, "signature from rollback-agent secret key")
}

// LoadPrivateKey reads a minisign secret key file. An encrypted key (the
// minisign tool's default) is decrypted with password; "" fails with a
// message that says so.
func LoadPrivateKey(path, password string) (minisign.PrivateKey, error) {
	b, err := ReadKeyFile(path)
	if err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("read signing key %s: %w", path, err)
	}
	text := strings.TrimSpace(string(b))
	if minisign.IsEncrypted([]byte(text)) {
		if password == "" {
			return minisign.PrivateKey{}, fmt.Errorf("signing key %s is encrypted: give its password", path)
		}
		k, err := minisign.DecryptKey(password, []byte(text))
		if err != nil {
			return minisign.PrivateKey{}, fmt.Errorf("decrypt signing key %s: %w", path, err)
		}
		return k, nil
	}
	var k minisign.PrivateKey
	if err := k.UnmarshalText([]byte(text)); err != nil {
		return minisign.PrivateKey{}, fmt.Errorf("signing key %s: %w", path, err)
	}
	return k, nil
}
