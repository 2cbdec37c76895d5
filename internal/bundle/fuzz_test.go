package bundle

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// fuzzLimits keep each fuzz run small and fast.
func fuzzLimits() Limits {
	return Limits{MaxTotalBytes: 4 * mib, MaxFiles: 300, MaxFileBytes: 2 * mib}
}

// tarSeeds are valid and hostile tars for FuzzUnpackTar to mutate.
func tarSeeds(t testing.TB) [][]byte {
	good := ent{name: "appspec.yml", body: "version: 0.0\n"}
	return [][]byte{
		tarBytes(t, append(revisionEnts(), ent{name: "scripts/start-copy.sh", typ: tar.TypeLink, link: "scripts/start.sh"})...),
		gitHubTarball(t, "abc1234"),
		tarBytes(t, good, ent{name: "../../evil", body: "x"}),
		tarBytes(t, good, ent{name: "d/up", typ: tar.TypeSymlink, link: ".."}, ent{name: "esc", typ: tar.TypeSymlink, link: "d/up/.."}),
		tarBytes(t, good, ent{name: "link", typ: tar.TypeSymlink, link: "."}, ent{name: "link/x", body: "x"},
			ent{name: "passwd", typ: tar.TypeLink, link: "/etc/passwd"}),
		tarBytes(t, good, ent{name: "top/appspec.yml", body: "a"}, ent{name: "dev", typ: tar.TypeChar}),
		v7Tar(t),
	}
}

// zipSeeds are valid and hostile zips for FuzzUnpackZip to mutate.
func zipSeeds(t testing.TB) [][]byte {
	good := ent{name: "appspec.yml", body: "version: 0.0\n"}
	return [][]byte{
		zipBytes(t, revisionEnts()...),
		zipBytes(t),
		zipBytes(t, good, ent{name: "../../evil", body: "x"}),
		zipBytes(t, good, ent{name: "d/up", typ: tar.TypeSymlink, link: ".."}, ent{name: "esc", typ: tar.TypeSymlink, link: "d/up/.."}),
		zipBytes(t, ent{name: "w/appspec.yml", body: "a"}, ent{name: "w/l", typ: tar.TypeSymlink, link: "../w/appspec.yml"},
			ent{name: "w/link", typ: tar.TypeSymlink, link: "."}, ent{name: "w/link/x", body: "x"}),
		zeroBombZip(t, "bomb", 3, 1024),
	}
}

func FuzzUnpackTar(f *testing.F) {
	for _, seed := range tarSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkUnpack(t, data)
		checkUnpack(t, gzipBytes(t, data))
		// Most mutations of a header break its checksum and stop at the
		// tar reader; with the checksums repaired, mutated names, types
		// and link targets reach the unpacker's own checks.
		if fixed := repairTarChecksums(data); !bytes.Equal(fixed, data) {
			checkUnpack(t, fixed)
		}
	})
}

// repairTarChecksums returns a copy of b with the checksum of every block
// that sits where a tar header would be recomputed, following each
// header's octal size field to find the next one.
func repairTarChecksums(b []byte) []byte {
	b = bytes.Clone(b)
	for off := 0; off+tarBlock <= len(b); {
		h := b[off : off+tarBlock]
		off += tarBlock
		if len(bytes.Trim(h, "\x00")) == 0 {
			continue
		}
		fixTarChecksum(h, 0)
		if h[124]&0x80 != 0 {
			continue // base-256 size: treat the next block as a header
		}
		size, err := strconv.ParseInt(strings.Trim(string(h[124:136]), " \x00"), 8, 64)
		if err != nil || size < 0 || size > int64(len(b)) {
			continue
		}
		off += int((size + tarBlock - 1) / tarBlock * tarBlock)
	}
	return b
}

func FuzzUnpackZip(f *testing.F) {
	for _, seed := range zipSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The central-directory pre-count must agree with archive/zip
		// whenever archive/zip can read the directory at all, or MaxFiles
		// could be dodged (or a good zip refused).
		size := int64(len(data))
		if zr, err := zip.NewReader(bytes.NewReader(data), size); err == nil {
			if n, ok := zipDirectoryEntries(bytes.NewReader(data), size, 1<<30); !ok || n != len(zr.File) {
				t.Fatalf("pre-count %d (found=%v), archive/zip read %d entries", n, ok, len(zr.File))
			}
		}
		checkUnpack(t, data)
	})
}

// checkUnpack unpacks data into a fresh sandbox and checks the invariants
// that must hold for any input: no panic; a failure leaves nothing at all;
// a success leaves exactly dest, every path under it really resolves inside
// it, and Result.Entries describe exactly what is on disk.
func checkUnpack(t *testing.T, data []byte) {
	t.Helper()
	base := t.TempDir()
	box := filepath.Join(base, "box")
	if err := os.Mkdir(box, 0o755); err != nil {
		t.Fatal(err)
	}
	bundle := writeTemp(t, base, "bundle", data)
	dest := filepath.Join(box, "rev")
	res, err := UnpackFile(t.Context(), bundle, dest, fuzzLimits())

	left, rerr := os.ReadDir(box)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if names, _ := os.ReadDir(base); len(names) != 2 {
		t.Fatalf("something appeared next to the sandbox: %v", names)
	}
	if err != nil {
		if len(left) != 0 {
			t.Fatalf("failed unpack (%v) left %v in the sandbox", err, left)
		}
		if !strings.HasPrefix(err.Error(), "bundle: unpack bundle: ") {
			t.Fatalf("error not wrapped: %v", err)
		}
		return
	}
	if len(left) != 1 || left[0].Name() != "rev" {
		t.Fatalf("sandbox holds %v, want only rev", left)
	}
	realDest, err := filepath.EvalSymlinks(dest)
	if err != nil {
		t.Fatal(err)
	}
	onDisk := map[string]string{}
	err = filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dest {
			return nil
		}
		rel, _ := filepath.Rel(dest, p)
		onDisk[filepath.ToSlash(rel)] = typeOf(d.Type())
		assertInside(t, realDest, dest, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(onDisk) != len(res.Entries) {
		t.Fatalf("%d paths on disk, %d entries", len(onDisk), len(res.Entries))
	}
	for _, e := range res.Entries {
		if onDisk[e.Path] != e.Type {
			t.Fatalf("entry %q is a %s, on disk a %q", e.Path, e.Type, onDisk[e.Path])
		}
	}
}

func typeOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return TypeSymlink
	case m.IsDir():
		return TypeDir
	case m.IsRegular():
		return TypeFile
	}
	return "special " + m.String()
}

// assertInside checks where p really leads. A link that dangles (or runs
// into a file) cannot be resolved by the kernel; its target is then checked
// lexically, which is what a later mkdir through it would follow.
func assertInside(t *testing.T, realDest, dest, p string) {
	t.Helper()
	inside := func(q string) bool { return q == realDest || strings.HasPrefix(q, realDest+"/") }
	real, err := filepath.EvalSymlinks(p)
	switch {
	case err == nil:
		if !inside(real) {
			t.Fatalf("%s really is %s, outside %s", p, real, realDest)
		}
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		target, lerr := os.Readlink(p)
		if lerr != nil {
			t.Fatalf("%s: %v", p, err)
		}
		rel, _ := filepath.Rel(dest, filepath.Dir(p))
		if j := path.Join(filepath.ToSlash(rel), target); path.IsAbs(target) || j == ".." || strings.HasPrefix(j, "../") {
			t.Fatalf("dangling %s -> %s leads outside", p, target)
		}
	default:
		t.Fatalf("resolve %s: %v", p, err)
	}
}
