package push

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"aead.dev/minisign"
)

// KeyPair is a new signing key's files.
type KeyPair struct {
	SecretPath string `json:"secret_key"`
	PublicPath string `json:"public_key"`
	// Public is the base64 line to put into trust.public_keys.
	Public    string `json:"public"`
	KeyID     string `json:"key_id"`
	Encrypted bool   `json:"encrypted"`
}

// Keygen makes a minisign key pair: the secret key in secretPath (mode
// 0600, encrypted with password unless it is empty, as `minisign -G -W`
// would write it) and the public key in publicPath. Existing files are
// kept unless force: losing a release key locks the fleet out.
func Keygen(secretPath, publicPath, password string, force bool) (*KeyPair, error) {
	if !force {
		for _, p := range []string{secretPath, publicPath} {
			if _, err := os.Lstat(p); err == nil {
				return nil, fmt.Errorf("keygen: %s exists; keep it, or use --force to replace it", p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("keygen: %s: %w", p, err)
			}
		}
	}
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("keygen: %w", err)
	}
	var secret []byte
	if password != "" {
		secret, err = minisign.EncryptKey(password, priv)
	} else {
		secret, err = priv.MarshalText()
	}
	if err != nil {
		return nil, fmt.Errorf("keygen: encode the secret key: %w", err)
	}
	public, _ := pub.MarshalText()
	if err := writeKeyFile(secretPath, append(secret, '\n'), 0o600); err != nil {
		return nil, err
	}
	if err := writeKeyFile(publicPath, append(public, '\n'), 0o644); err != nil {
		return nil, err
	}
	return &KeyPair{SecretPath: secretPath, PublicPath: publicPath, Public: pub.String(), KeyID: fmt.Sprintf("%X", pub.ID()), Encrypted: password != ""}, nil
}

// writeKeyFile writes through a temporary file so a failed write leaves
// no half key.
func writeKeyFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("keygen: write %s: %w", tmp, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("keygen: chmod %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("keygen: rename %s to %s: %w", tmp, path, err)
	}
	return nil
}
