package releases

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/bundle"
	"github.com/rollback-agent/rollback-agent/internal/install"
)

// rewriteSameLooking replaces path's content with b and sets its mtime
// back, as someone covering their tracks would: only ctime and the inode
// tell.
func rewriteSameLooking(t *testing.T, path string, b []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
}

// The store answers manifest reads from memory only while the file is the
// one it decoded or wrote; any change on disk is read again.
func TestManifestCacheFollowsTheDisk(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(s.Dir("d-1"), 0o755)
	line := func(p string) string { return `{"path":"` + p + `","kind":"file","mode":420,"uid":0,"gid":0}` + "\n" }
	partial := s.PartialManifestPath("d-1")
	os.WriteFile(partial, []byte(line("/srv/a")), 0o644)
	written := &install.Manifest{Entries: []install.Entry{{Path: "/srv/a", Kind: install.KindFile, Mode: 0o644}}}
	if err := s.CommitManifest("d-1", written); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Fatalf("partial manifest still there: %v", err)
	}
	m, err := s.ReadManifest(s.ManifestPath("d-1"))
	if err != nil || m != written {
		t.Fatalf("the manifest just committed was read again from disk (%v)", err)
	}
	// Same size, mtime set back: still read again.
	rewriteSameLooking(t, s.ManifestPath("d-1"), []byte(line("/srv/b")))
	m, err = s.ReadManifest(s.ManifestPath("d-1"))
	if err != nil {
		t.Fatal(err)
	}
	if m == written || len(m.Entries) != 1 || m.Entries[0].Path != "/srv/b" {
		t.Fatalf("a changed manifest was answered from memory: %+v", m.Entries)
	}
	if again, _ := s.ReadManifest(s.ManifestPath("d-1")); again != m {
		t.Errorf("an unchanged manifest was decoded again")
	}
	// chmod alone changes ctime.
	os.Chmod(s.ManifestPath("d-1"), 0o600)
	if again, _ := s.ReadManifest(s.ManifestPath("d-1")); again == m {
		t.Errorf("a manifest whose ctime changed was answered from memory")
	}
	os.Remove(s.ManifestPath("d-1"))
	if m, err := s.ReadManifest(s.ManifestPath("d-1")); err != nil || len(m.Entries) != 0 {
		t.Errorf("a removed manifest: %v, %+v", err, m)
	}
}

// The digests Unpack recorded come from memory while files.json is the
// file Unpack wrote, and from the file once it changed.
func TestEntriesCacheFollowsTheDisk(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "appspec.yml"), []byte("version: 0.0\nos: linux\n"), 0o644)
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("aaaa"), 0o644)
	tgz := filepath.Join(t.TempDir(), "r.tgz")
	f, _ := os.Create(tgz)
	if err := bundle.WriteTarGz(context.Background(), src, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Unpack(context.Background(), "d-1", tgz, bundle.Limits{}); err != nil {
		t.Fatal(err)
	}
	first, err := s.Entries("d-1")
	if err != nil || first["a.txt"].Size != 4 {
		t.Fatalf("entries: %v %+v", err, first)
	}
	if again, _ := s.Entries("d-1"); reflect.ValueOf(again).Pointer() != reflect.ValueOf(first).Pointer() {
		t.Error("the digests Unpack just wrote were decoded again")
	}
	b, _ := os.ReadFile(s.filesPath("d-1"))
	forged := strings.Replace(string(b), first["a.txt"].SHA256, strings.Repeat("0", 64), 1)
	rewriteSameLooking(t, s.filesPath("d-1"), []byte(forged))
	got, err := s.Entries("d-1")
	if err != nil {
		t.Fatal(err)
	}
	if got["a.txt"].SHA256 != strings.Repeat("0", 64) {
		t.Errorf("files.json changed on disk but the digest came from memory: %s", got["a.txt"].SHA256)
	}
}
