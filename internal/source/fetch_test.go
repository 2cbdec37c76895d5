package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

func TestParse(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "app-v1.tgz")
	os.WriteFile(f, []byte("x"), 0o644)
	for in, want := range map[string]api.Source{
		f:                              {Type: TypeFile, Location: f},
		dir:                            {Type: TypeDir, Location: dir},
		"s3://b/k/app.zip?versionId=3": {Type: TypeS3, Location: "s3://b/k/app.zip?versionId=3", Bucket: "b", Key: "k/app.zip", VersionID: "3"},
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"relative.tgz", "s3://", "s3://bucket", filepath.Join(dir, "missing"), "/dev/null"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

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

func TestFetchFileHashes(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "b.tgz")
	data := bytes.Repeat([]byte("bundle"), 100000)
	os.WriteFile(src, data, 0o644)
	f := &Fetcher{}
	dst := filepath.Join(dir, "dl")
	sum, n, err := f.Fetch(context.Background(), &api.Source{Type: TypeFile, Location: src}, dst)
	want := sha256.Sum256(data)
	if err != nil || n != int64(len(data)) || sum != hex.EncodeToString(want[:]) {
		t.Fatalf("fetch: %s %d %v", sum, n, err)
	}
	// dst must be new: a leftover is never overwritten silently.
	if _, _, err := f.Fetch(context.Background(), &api.Source{Type: TypeFile, Location: src}, dst); err == nil {
		t.Errorf("fetch over an existing file succeeded")
	}
	if _, _, err := f.Fetch(context.Background(), &api.Source{Type: TypeS3, Location: "s3://b/k", Bucket: "b", Key: "k"}, filepath.Join(dir, "x")); err == nil {
		t.Errorf("s3 fetch without a client succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Errorf("failed fetch left its file")
	}
}
