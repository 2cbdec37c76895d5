package source

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// A bundle in the inbox may come with its manifest and signature, as
// `agentctl push` uploads them, beside it: either NAME.manifest.json and
// NAME.manifest.json.minisig for the bundle NAME, or manifest.json and
// manifest.json.minisig whose manifest names the bundle ("bundle": NAME),
// which is what downloading a release's three objects gives. Copy them
// before the bundle: the bundle is looked at once it has settled.

// isSidecar reports a manifest or signature file: never a bundle itself.
func isSidecar(name string) bool {
	return strings.HasSuffix(name, ".json") || strings.HasSuffix(name, release.SignatureSuffix)
}

// verify checks the manifest beside the bundle at path, if any, and
// returns the revision it names and the sidecar files to move with the
// bundle. Without a manifest the bundle is accepted only when signatures
// are not required.
func (in *Inbox) verify(path, name string) (rev string, sidecars []string, err error) {
	mPath, err := in.findManifest(name)
	if err != nil {
		return "", nil, err
	}
	if mPath == "" {
		if in.Keys != nil && in.Keys.Require {
			return "", nil, fmt.Errorf("no %s.manifest.json (or manifest.json naming it) beside %s, and trust.require_signature is true", name, path)
		}
		return "", nil, nil
	}
	sidecars = []string{mPath}
	body, err := readSmall(mPath)
	if err != nil {
		return "", sidecars, fmt.Errorf("read manifest %s: %w", mPath, err)
	}
	sigPath := mPath + release.SignatureSuffix
	sig, err := readSmall(sigPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		sig = nil
	case err != nil:
		return "", sidecars, fmt.Errorf("read signature %s: %w", sigPath, err)
	default:
		sidecars = append(sidecars, sigPath)
	}
	keys := in.Keys
	if keys == nil {
		keys = &release.Keyring{}
	}
	comment, err := keys.Verify(body, sig)
	if err != nil && !errors.Is(err, release.ErrUnsigned) {
		return "", sidecars, fmt.Errorf("manifest %s, signature %s: %w", mPath, sigPath, err)
	}
	m, err := release.ParseManifest(body)
	if err != nil {
		return "", sidecars, fmt.Errorf("manifest %s: %w", mPath, err)
	}
	if in.App != "" && m.App != in.App {
		return "", sidecars, fmt.Errorf("manifest %s is for app %q, this agent deploys %q", mPath, m.App, in.App)
	}
	if err := release.CheckComment(comment, "manifest", map[string]string{"app": m.App, "version": m.Version, "sha256": m.SHA256}); err != nil {
		return "", sidecars, fmt.Errorf("manifest %s: %w", mPath, err)
	}
	sum, size, err := hashFile(path)
	if err != nil {
		return "", sidecars, fmt.Errorf("hash %s: %w", path, err)
	}
	switch {
	case size != m.Size:
		return "", sidecars, fmt.Errorf("%s is %d bytes, manifest %s says %d", path, size, mPath, m.Size)
	case sum != m.SHA256:
		return "", sidecars, fmt.Errorf("%s has sha256 %s, manifest %s says %s (tampered or replaced)", path, sum, mPath, m.SHA256)
	}
	return m.Version, sidecars, nil
}

// findManifest returns the manifest of the bundle called name, "" if none.
func (in *Inbox) findManifest(name string) (string, error) {
	own := filepath.Join(in.Dir, name+"."+release.ManifestName)
	if _, err := os.Stat(own); err == nil {
		return own, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("look for %s: %w", own, err)
	}
	shared := filepath.Join(in.Dir, release.ManifestName)
	body, err := readSmall(shared)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", shared, err)
	}
	// Another bundle's manifest.json is not this one's.
	if m, err := release.ParseManifest(body); err == nil && m.Bundle != name {
		return "", nil
	}
	return shared, nil
}

// settleSidecars moves a bundle's manifest and signature to dir, kept with
// the outcome as a record.
func (in *Inbox) settleSidecars(files []string, dir string) {
	for _, f := range files {
		dst := uniquePath(in.sub(dir), filepath.Base(f))
		if err := os.Rename(f, dst); err != nil {
			in.report(fmt.Errorf("inbox: move %s to %s: %w", f, dst, err))
		}
	}
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, release.MaxDocBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > release.MaxDocBytes {
		return nil, fmt.Errorf("larger than %d bytes: not a manifest or signature", release.MaxDocBytes)
	}
	return b, nil
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}
