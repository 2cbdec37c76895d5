package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// The trust policy every source meets before a byte of it is fetched
// (trust.public_keys and trust.require_signature, as they are now):
//
//   - a bundle vouched for when it was taken (the channel, a signed inbox
//     drop) is admitted while the key that signed it is still trusted;
//   - an S3 object or a local file is admitted with a manifest beside it,
//     verified here: NAME.manifest.json, or manifest.json naming it (the
//     release layout of agentctl push), each with its .minisig; its
//     digest then pins the bytes the fetch must bring;
//   - anything else is unsigned: admitted when signatures are not
//     required, or when root deployed it with --allow-unsigned.

// errUntrusted marks a refusal by the trust policy.
var errUntrusted = errors.New("refused by the trust policy")

func (f *Fetcher) keys() *release.Keyring {
	if f.Keys == nil {
		return &release.Keyring{}
	}
	return f.Keys
}

func (f *Fetcher) app() string {
	if f.App == nil {
		return ""
	}
	return f.App()
}

// admit applies the trust policy to src, filling in the digest, size and
// signer a manifest found beside it gives.
func (f *Fetcher) admit(ctx context.Context, src *api.Source) error {
	keys := f.keys()
	if src.Signer != "" {
		if !keys.Trusts(src.Signer) {
			return fmt.Errorf("%w: its manifest was signed by key %s, which trust.public_keys no longer holds", errUntrusted, src.Signer)
		}
		return nil
	}
	if src.SHA256 == "" {
		var beside *besideBundle
		var err error
		switch src.Type {
		case TypeS3:
			beside, err = f.s3Manifest(ctx, src, keys)
		case TypeFile:
			beside, err = localManifest(src.Location, keys, f.app())
		}
		if err != nil {
			return fmt.Errorf("%w: %w", errUntrusted, err)
		}
		if beside != nil {
			src.SHA256, src.Size, src.Signer = beside.manifest.SHA256, beside.manifest.Size, beside.signer
			if beside.signer != "" {
				return nil
			}
		}
	}
	if !keys.Required() || src.AllowUnsigned {
		return nil
	}
	var why string
	switch src.Type {
	case TypeS3:
		why = fmt.Sprintf("s3://%s/%s has no signed manifest beside it (%s, or %s naming it, with its %s)",
			src.Bucket, src.Key, path.Base(src.Key)+"."+release.ManifestName, release.ManifestName, release.SignatureSuffix)
	case TypeFile:
		why = fmt.Sprintf("%s has no signed manifest beside it (%s, or %s naming it, with its %s)",
			src.Location, ownManifest(filepath.Base(src.Location)), release.ManifestName, release.SignatureSuffix)
	case TypeDir:
		why = fmt.Sprintf("%s is a directory, which carries no signature", src.Location)
	default:
		why = fmt.Sprintf("%s was taken without a signature", src.Location)
	}
	return fmt.Errorf("%w: %s, and trust.require_signature is true; publish it signed (agentctl push), or deploy it as root with --allow-unsigned", errUntrusted, why)
}

// localManifest verifies the manifest beside a local bundle file, if any.
func localManifest(file string, keys *release.Keyring, app string) (*besideBundle, error) {
	dir, err := os.Open(filepath.Dir(file))
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	return checkBeside(dir, filepath.Base(file), keys, app)
}

// s3Manifest fetches and verifies the manifest beside an S3 object:
// KEY.manifest.json, or manifest.json in the same prefix naming it.
func (f *Fetcher) s3Manifest(ctx context.Context, src *api.Source, keys *release.Keyring) (*besideBundle, error) {
	if f.S3 == nil {
		return nil, errors.New("no S3 client configured")
	}
	client, err := f.S3(ctx)
	if err != nil {
		return nil, err
	}
	name := path.Base(src.Key)
	prefix := ""
	if d := path.Dir(src.Key); d != "." {
		prefix = d + "/"
	}
	var body []byte
	var mKey string
	for _, k := range []string{src.Key + "." + release.ManifestName, prefix + release.ManifestName} {
		b, _, err := getDoc(ctx, client, src.Bucket, k, "")
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if k == prefix+release.ManifestName {
			// Another object's manifest.json (or one that is no release
			// manifest) is not this one's.
			if m, err := release.ParseManifest(b); err != nil || m.Bundle != name {
				continue
			}
		}
		body, mKey = b, k
		break
	}
	if body == nil {
		return nil, nil
	}
	mURL := "s3://" + src.Bucket + "/" + mKey
	sig, _, err := getDoc(ctx, client, src.Bucket, mKey+release.SignatureSuffix, "")
	if isNotFound(err) {
		sig, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	m, signer, err := release.CheckManifest(keys, f.app(), body, sig)
	if err != nil {
		return nil, fmt.Errorf("manifest %s, signature %s%s: %w", mURL, mURL, release.SignatureSuffix, err)
	}
	return &besideBundle{manifest: m, signer: signer, path: mURL}, nil
}
