package source

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// A bundle file (in the inbox, or a path given to agentctl deploy) may
// come with its manifest and signature, as `agentctl push` uploads them,
// beside it: either NAME.manifest.json and NAME.manifest.json.minisig for
// the bundle NAME, or manifest.json and manifest.json.minisig whose
// manifest names the bundle ("bundle": NAME), which is what downloading a
// release's three objects gives. Copy them before the bundle: the bundle
// is looked at once it has settled.

// isSidecar reports a manifest or signature file: never a bundle itself.
func isSidecar(name string) bool {
	return strings.HasSuffix(name, ".json") || strings.HasSuffix(name, release.SignatureSuffix)
}

// ownManifest is the manifest name that belongs to the bundle name alone.
func ownManifest(name string) string { return name + "." + release.ManifestName }

// besideBundle is what a manifest beside a bundle said.
type besideBundle struct {
	manifest *release.Manifest
	// signer is the key that signed the manifest, "" when it was accepted
	// unsigned (signatures not required).
	signer string
	// sidecars are the manifest's and signature's names in the directory,
	// path the manifest's path.
	sidecars []string
	path     string
}

// checkBeside verifies the manifest beside the bundle called name in dir,
// if there is one (nil, nil when there is none). The bundle's bytes are
// the caller's to compare with the manifest.
func checkBeside(dir *os.File, name string, keys *release.Keyring, app string) (*besideBundle, error) {
	mName, err := findManifest(dir, name)
	if err != nil || mName == "" {
		return nil, err
	}
	mPath := filepath.Join(dir.Name(), mName)
	b := &besideBundle{sidecars: []string{mName}, path: mPath}
	body, err := readSmallAt(dir, mName)
	if err != nil {
		return b, fmt.Errorf("read manifest %s: %w", mPath, err)
	}
	sigName := mName + release.SignatureSuffix
	sig, err := readSmallAt(dir, sigName)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		sig = nil
	case err != nil:
		return b, fmt.Errorf("read signature %s: %w", filepath.Join(dir.Name(), sigName), err)
	default:
		b.sidecars = append(b.sidecars, sigName)
	}
	m, signer, err := release.CheckManifest(keys, app, body, sig)
	if err != nil {
		return b, fmt.Errorf("manifest %s, signature %s%s: %w", mPath, mPath, release.SignatureSuffix, err)
	}
	b.manifest, b.signer = m, signer
	return b, nil
}

// matches compares the bundle's digest and size with the manifest's.
func (b *besideBundle) matches(path, sum string, size int64) error {
	m, mPath := b.manifest, b.path
	switch {
	case size != m.Size:
		return fmt.Errorf("%s is %d bytes, manifest %s says %d", path, size, mPath, m.Size)
	case sum != m.SHA256:
		return fmt.Errorf("%s has sha256 %s, manifest %s says %s (tampered or replaced)", path, sum, mPath, m.SHA256)
	}
	return nil
}

// findManifest returns the name of the manifest of the bundle called
// name in dir, "" if none.
func findManifest(dir *os.File, name string) (string, error) {
	if own := ownManifest(name); existsAt(dir, own) {
		return own, nil
	}
	body, err := readSmallAt(dir, release.ManifestName)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", filepath.Join(dir.Name(), release.ManifestName), err)
	}
	// Another bundle's manifest.json is not this one's, and neither is a
	// manifest.json that is no release manifest at all (a web app's, say,
	// beside a bundle deployed from its build directory): it proves
	// nothing, so the bundle counts as having none.
	if m, err := release.ParseManifest(body); err != nil || m.Bundle != name {
		return "", nil
	}
	return release.ManifestName, nil
}
