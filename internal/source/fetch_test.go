package source

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

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
