package bundle

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Bundling a directory is reproducible: the same tree gives the same bytes.
func TestWriteTarGzIsReproducible(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "b", "c"), 0o755)
	os.WriteFile(filepath.Join(dir, "b", "c", "f"), []byte("f"), 0o600)
	os.WriteFile(filepath.Join(dir, "a"), []byte("a"), 0o755)
	os.Symlink("a", filepath.Join(dir, "link"))
	mt := time.Unix(1700000000, 0)
	for _, p := range []string{"a", "b/c/f", "b/c", "b"} {
		os.Chtimes(filepath.Join(dir, p), mt, mt)
	}
	var one, two bytes.Buffer
	if err := WriteTarGz(context.Background(), dir, &one); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(filepath.Join(dir, "a"), time.Now(), mt) // atime only
	if err := WriteTarGz(context.Background(), dir, &two); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(one.Bytes(), two.Bytes()) {
		t.Errorf("two bundles of the same tree differ")
	}
	sock := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(sock, 0o644); err == nil {
		if err := WriteTarGz(context.Background(), dir, &two); err == nil || !strings.Contains(err.Error(), "special files") {
			t.Errorf("a FIFO went into a bundle: %v", err)
		}
	}
}
