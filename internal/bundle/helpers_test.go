package bundle

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ent describes one archive member for the builders below, in tar terms;
// zipBytes maps it onto zip.
type ent struct {
	name  string
	typ   byte   // tar type flag; 0 means a regular file
	body  string // file content
	mode  int64  // tar-style mode incl. 04000 etc.; 0 means 0644 (files) / 0755 (dirs)
	link  string // symlink or hard link target
	mtime time.Time
	uid   int
	gid   int
}

// baseTime is the mtime builders use when an ent has none.
func baseTime() time.Time { return time.Date(2023, 5, 17, 10, 30, 0, 0, time.UTC) }

func (e ent) tarMode() int64 {
	if e.mode != 0 {
		return e.mode
	}
	if e.typ == tar.TypeDir {
		return 0o755
	}
	return 0o644
}

func (e ent) time() time.Time {
	if e.mtime.IsZero() {
		return baseTime()
	}
	return e.mtime
}

func tarBytes(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: e.tarMode(), ModTime: e.time(),
			Linkname: e.link, Uid: e.uid, Gid: e.gid, Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gitHubTarball is shaped like GitHub's tarball endpoint output: a pax
// global header carrying the commit, then owner-repo-<commit>/.
func gitHubTarball(t testing.TB, commit string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	top := "owner-repo-" + commit + "/"
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": commit}},
		{Typeflag: tar.TypeDir, Name: top, Mode: 0o775, ModTime: baseTime()},
		{Typeflag: tar.TypeReg, Name: top + "appspec.yml", Mode: 0o664, Size: 1, ModTime: baseTime()},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tw.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tgzBytes(t testing.TB, ents ...ent) []byte {
	t.Helper()
	return gzipBytes(t, tarBytes(t, ents...))
}

// zipBytes builds a zip made "on Unix", so modes and symlinks are kept.
// Hard links have no zip form and are written as copies of nothing.
func zipBytes(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range ents {
		perm := fs.FileMode(e.tarMode() & 0o777)
		perm |= tarMode(e.tarMode()) & (fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate, Modified: e.time()}
		body := e.body
		switch e.typ {
		case tar.TypeDir:
			if !strings.HasSuffix(h.Name, "/") {
				h.Name += "/"
			}
			h.Method = zip.Store
			h.SetMode(fs.ModeDir | perm)
		case tar.TypeSymlink:
			h.SetMode(fs.ModeSymlink | 0o777)
			body = e.link
		case tar.TypeChar:
			h.SetMode(fs.ModeDevice | fs.ModeCharDevice | perm)
		case tar.TypeBlock:
			h.SetMode(fs.ModeDevice | perm)
		case tar.TypeFifo:
			h.SetMode(fs.ModeNamedPipe | perm)
		default:
			h.SetMode(perm)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatalf("zip header %q: %v", e.name, err)
		}
		if _, err := w.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// archiveBytes builds ents in format f.
func archiveBytes(t testing.TB, f Format, ents ...ent) []byte {
	t.Helper()
	switch f {
	case FormatTar:
		return tarBytes(t, ents...)
	case FormatTgz:
		return tgzBytes(t, ents...)
	case FormatZip:
		return zipBytes(t, ents...)
	}
	t.Fatalf("unknown format %q", f)
	return nil
}

func allFormats() []Format { return []Format{FormatTar, FormatTgz, FormatZip} }

func writeTemp(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sandbox is the layout every unpack test uses:
//
//	base/
//	  bundles/  the archives
//	  sentinel  a file that must never change
//	  box/      the sandbox: dest (box/rev) and its temporary sibling live here
//
// A member escaping dest by "../../x" would land in base, where
// assertClean looks for it.
type sandbox struct {
	base, bundles, box, dest, sentinel string
	sentinelInfo                       fs.FileInfo
}

const sentinelContent = "do not touch\n"

func newSandbox(t testing.TB) *sandbox {
	t.Helper()
	base := t.TempDir()
	s := &sandbox{
		base:     base,
		bundles:  filepath.Join(base, "bundles"),
		box:      filepath.Join(base, "box"),
		sentinel: filepath.Join(base, "sentinel"),
	}
	s.dest = filepath.Join(s.box, "rev")
	for _, d := range []string{s.bundles, s.box} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(s.sentinel, []byte(sentinelContent), 0o644); err != nil {
		t.Fatal(err)
	}
	info, err := os.Lstat(s.sentinel)
	if err != nil {
		t.Fatal(err)
	}
	s.sentinelInfo = info
	return s
}

func (s *sandbox) bundle(t testing.TB, name string, data []byte) string {
	t.Helper()
	return writeTemp(t, s.bundles, name, data)
}

func (s *sandbox) unpack(t testing.TB, name string, data []byte, lim Limits) (*Result, error) {
	t.Helper()
	return UnpackFile(context.Background(), s.bundle(t, name, data), s.dest, lim)
}

// assertClean checks that a failed unpack left no trace: the sandbox is
// empty, base holds only what the test put there, and the sentinel is
// unchanged.
func (s *sandbox) assertClean(t testing.TB) {
	t.Helper()
	left, err := os.ReadDir(s.box)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("sandbox not empty after a failed unpack: %s", e.Name())
	}
	s.assertOutsideUntouched(t)
}

// assertOutsideUntouched checks base and the sentinel only.
func (s *sandbox) assertOutsideUntouched(t testing.TB) {
	t.Helper()
	names, err := os.ReadDir(s.base)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range names {
		switch e.Name() {
		case "bundles", "box", "sentinel":
		default:
			t.Errorf("unexpected %s appeared next to the sandbox", e.Name())
		}
	}
	b, err := os.ReadFile(s.sentinel)
	if err != nil || string(b) != sentinelContent {
		t.Errorf("sentinel changed: %q, %v", b, err)
	}
	info, err := os.Lstat(s.sentinel)
	if err != nil {
		t.Fatal(err)
	}
	if !info.ModTime().Equal(s.sentinelInfo.ModTime()) || info.Mode() != s.sentinelInfo.Mode() {
		t.Errorf("sentinel metadata changed: %v %v", info.ModTime(), info.Mode())
	}
}

// assertOnlyDest checks that a successful unpack left dest and nothing
// else in the sandbox.
func (s *sandbox) assertOnlyDest(t testing.TB) {
	t.Helper()
	left, err := os.ReadDir(s.box)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].Name() != filepath.Base(s.dest) {
		var names []string
		for _, e := range left {
			names = append(names, e.Name())
		}
		t.Errorf("sandbox holds %v, want only %s", names, filepath.Base(s.dest))
	}
	s.assertOutsideUntouched(t)
}

// wantErr fails unless err is non-nil and mentions every fragment.
func wantErr(t testing.TB, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("unpack succeeded, want an error mentioning %q", fragments)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not mention %q", err, f)
		}
	}
}

// countdownCtx is a context that reports cancellation from the n+1th call
// of Err on: a deterministic way to cancel "in the middle" of an unpack.
type countdownCtx struct {
	context.Context
	left int
	done chan struct{}
}

func newCountdownCtx(n int) *countdownCtx {
	c := &countdownCtx{Context: context.Background(), left: n, done: make(chan struct{})}
	if n <= 0 {
		close(c.done)
	}
	return c
}

func (c *countdownCtx) Err() error {
	if c.left <= 0 {
		return context.Canceled
	}
	c.left--
	if c.left == 0 {
		close(c.done)
	}
	return nil
}

func (c *countdownCtx) Done() <-chan struct{} { return c.done }

// fixTarChecksum recomputes the checksum of the tar header at off, so a
// test can patch a header the way a hostile or ancient tool would write it.
func fixTarChecksum(b []byte, off int) []byte {
	h := b[off : off+tarBlock]
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// newGzipWithExtra is a gzip writer whose header carries an extra field,
// which gzip stores before the compressed data.
func newGzipWithExtra(w io.Writer, extra []byte) *gzip.Writer {
	zw := gzip.NewWriter(w)
	zw.Extra = extra
	return zw
}
