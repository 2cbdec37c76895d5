package push

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// keygen writes a minisign key pair the agent's keyring reads (as the
// base64 line and as the .pub file), keeps the secret key private, and
// never replaces keys by accident.
func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, "r.key"), filepath.Join(dir, "r.pub")
	kp, err := Keygen(sec, pub, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(sec); fi.Mode().Perm() != 0o600 {
		t.Errorf("secret key mode %v", fi.Mode())
	}
	key, err := release.LoadPrivateKey(sec, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, entry := range []string{kp.Public, pub} {
		kr, err := release.NewKeyring([]string{entry}, true)
		if err != nil {
			t.Fatalf("keyring from %s: %v", entry, err)
		}
		if _, err := kr.Verify([]byte("m"), release.SignDoc(key, []byte("m"), "")); err != nil {
			t.Errorf("verify with %s: %v", entry, err)
		}
	}
	if _, err := Keygen(sec, pub, "", false); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("second keygen: %v", err)
	}
	kp2, err := Keygen(sec, pub, "", true)
	if err != nil || kp2.Public == kp.Public {
		t.Errorf("forced keygen: %+v %v", kp2, err)
	}
}
