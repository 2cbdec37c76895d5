package install

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/bundle"
)

// benchRevision writes n files of size bytes in 100 directories under
// dir/app; files whose index is in changed get other content.
func benchRevision(b *testing.B, dir string, n, size int, changed func(int) bool) {
	b.Helper()
	buf := make([]byte, size)
	mt := time.Unix(1764000000, 0)
	for i := range n {
		sub := filepath.Join(dir, "app", fmt.Sprintf("d%03d", i%100))
		os.MkdirAll(sub, 0o755)
		seed := uint64(1)
		if changed(i) {
			seed = 2
		}
		rand.NewChaCha8([32]byte{byte(seed), byte(i), byte(i >> 8)}).Read(buf)
		p := filepath.Join(sub, fmt.Sprintf("f%05d.bin", i))
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			b.Fatal(err)
		}
		os.Chtimes(p, mt, mt)
	}
}

// revDigests is what unpacking records (releases' files.json).
func revDigests(b *testing.B, dir string) map[string]bundle.Entry {
	out := map[string]bundle.Entry{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		sum, err := hashFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = bundle.Entry{Path: rel, Type: "file", Mode: fi.Mode(), Size: fi.Size(), SHA256: sum, ModTime: fi.ModTime()}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkReinstall100Of10000 is B2's install in process: back and forth
// between two 10 000-file revisions that differ in 100 files, reading the
// previous manifest from disk as the engine does.
func BenchmarkReinstall100Of10000(b *testing.B) {
	root := b.TempDir()
	v1, v2 := filepath.Join(root, "v1"), filepath.Join(root, "v2")
	benchRevision(b, v1, 10000, 20<<10, func(int) bool { return false })
	benchRevision(b, v2, 10000, 20<<10, func(i int) bool { return i%100 == 0 })
	dest := filepath.Join(root, "srv")
	s := &appspec.AppSpec{Version: "0.0", OS: "linux", Files: []appspec.File{{Source: "app", Destination: dest}}}
	mpath := func(i int) string { return filepath.Join(root, fmt.Sprintf("m%d", i%2)) }
	digests := map[string]map[string]bundle.Entry{v1: revDigests(b, v1), v2: revDigests(b, v2)}
	// The previous manifest as the engine has it: from the store's cache,
	// which holds what the last Install wrote.
	var prev *Manifest
	install := func(i int, rev string) {
		rep, err := Install(context.Background(), Options{Spec: s, RevisionDir: rev, Digests: digests[rev], Previous: []*Manifest{prev}, ManifestPath: mpath(i)})
		if err != nil {
			b.Fatal(err)
		}
		prev = rep.Manifest
		if i > 0 && rep.Copied != 100 {
			b.Fatalf("copied %d, want 100: %s", rep.Copied, rep)
		}
	}
	install(0, v1)
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		rev := v2
		if i%2 == 0 {
			rev = v1
		}
		install(i, rev)
	}
}

func BenchmarkReadManifest10000(b *testing.B) {
	p := filepath.Join(b.TempDir(), "m")
	w, _ := newManifestWriter(p)
	for i := range 10000 {
		w.record(Entry{Path: fmt.Sprintf("/tmp/rollback-agent-bench-123456/b2-srv/d%03d/f%05d.bin", i%100, i), Kind: KindFile, SHA256: fmt.Sprintf("%064x", i), Mode: 0o644, MTime: 1764000000000000000, Stat: &StatKey{Dev: 2049, Ino: 123456 + uint64(i), Size: 20480, MTime: 1764000000000000000, CTime: 1764000000123456789}})
	}
	w.finish()
	fi, _ := os.Stat(p)
	b.Logf("manifest of 10000 files: %d bytes", fi.Size())
	b.ResetTimer()
	for range b.N {
		if _, err := ReadManifest(p); err != nil {
			b.Fatal(err)
		}
	}
}
