package bundle

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// v7Tar is a tar whose first header has no ustar magic, as pre-POSIX tars
// wrote them: only the checksum identifies it.
func v7Tar(t testing.TB) []byte {
	t.Helper()
	b := tarBytes(t, ent{name: "appspec.yml", body: "version: 0.0\n"})
	for i := 257; i < 265; i++ {
		b[i] = 0
	}
	return fixTarChecksum(b, 0)
}

func TestDetectFormat(t *testing.T) {
	tgz := tgzBytes(t, ent{name: "appspec.yml", body: "a"})
	for _, c := range []struct {
		name    string
		header  []byte
		want    Format
		wantErr string
	}{
		{"zip", zipBytes(t, ent{name: "a", body: "a"}), FormatZip, ""},
		{"empty zip", zipBytes(t), FormatZip, ""},
		{"pax tar", tarBytes(t, ent{name: "a", body: "a"}), FormatTar, ""},
		{"gnu tar", gnuTar(t), FormatTar, ""},
		{"v7 tar", v7Tar(t), FormatTar, ""},
		{"tgz", tgz, FormatTgz, ""},
		{"tgz, only its first bytes given", tgz[:24], FormatTgz, ""},
		{"gzip of text", gzipBytes(t, bytes.Repeat([]byte("hello "), 200)), "", `found gzip data holding text starting "hello hello`},
		{"gzip of a zip", gzipBytes(t, zipBytes(t, ent{name: "a", body: "a"})), "", "found gzip data holding only 141 bytes (a zip archive)"},
		{"short gzip", gzipBytes(t, []byte("tiny")), "", "holding only 4 bytes (text starting \"tiny\")"},
		{"corrupt gzip", append([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3}, bytes.Repeat([]byte{0xff}, 600)...), "", "corrupt gzip data"},
		{"gzip bad header", []byte{0x1f, 0x8b, 9, 0, 0, 0, 0, 0, 0, 3, 0, 0}, "", "gzip data with a bad header"},
		{"empty", nil, "", "empty file"},
		{"xz", []byte("\xfd7zXZ\x00\x00\x04"), "", "found xz data"},
		{"zstd", []byte("\x28\xb5\x2f\xfd\x00"), "", "found zstd data"},
		{"rar", []byte("Rar!\x1a\x07\x01\x00"), "", "found a RAR archive"},
		{"elf", []byte("\x7fELF\x02\x01\x01"), "", "found an ELF executable"},
		{"html", []byte("<html><body>Not Found</body></html>"), "", `found text starting "<html>`},
		{"garbage tar-sized", bytes.Repeat([]byte{0x11, 0x22}, 512), "", "unknown binary data starting 11 22"},
		{"zeros", make([]byte, 1024), "", "1024 zero bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := DetectFormat(c.header)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.HasPrefix(err.Error(), "bundle: detect format: ") {
					t.Fatalf("DetectFormat = %q, %v; want error with %q", got, err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("DetectFormat = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

// gnuTar builds a GNU-format tar (magic "ustar  \x00"), as GNU tar writes
// by default.
func gnuTar(t testing.TB) []byte {
	t.Helper()
	b := tarBytes(t, ent{name: "a", body: "a"})
	copy(b[257:265], "ustar  \x00")
	return fixTarChecksum(b, 0)
}

// Old v7 tars have no magic; they must unpack, not just be detected.
func TestUnpackV7Tar(t *testing.T) {
	s := newSandbox(t)
	res, err := s.unpack(t, "b.tar", v7Tar(t), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Format != FormatTar || len(res.Entries) != 1 || res.Entries[0].Path != "appspec.yml" {
		t.Errorf("got %+v", res)
	}
}

// A tgz whose gzip header (here a maximal extra field) is too long for
// DetectFormat's peek to see the tar inside is still checked, and accepted,
// by the unpacker itself, and a gzip'd non-tar behind such a header is
// still refused.
func TestTgzBehindLongGzipHeader(t *testing.T) {
	long := func(payload []byte) []byte {
		var buf bytes.Buffer
		zw := newGzipWithExtra(&buf, bytes.Repeat([]byte{'x'}, 0xffff))
		zw.Write(payload)
		zw.Close()
		return buf.Bytes()
	}
	good := long(tarBytes(t, ent{name: "appspec.yml", body: "a"}))
	if f, err := DetectFormat(good[:headerPeek]); err != nil || f != FormatTgz {
		t.Fatalf("DetectFormat = %q, %v", f, err)
	}
	s := newSandbox(t)
	if _, err := s.unpack(t, "b", good, Limits{}); err != nil {
		t.Fatal(err)
	}
	s = newSandbox(t)
	_, err := s.unpack(t, "b", long(bytes.Repeat([]byte("log line\n"), 100)), Limits{})
	wantErr(t, err, "found gzip data holding text")
	s.assertClean(t)
}

// The bundle digest must be the plain sha256 of the file, as sha256sum
// prints it, whatever the format and whatever trails the archive.
func TestSHA256MatchesSha256sum(t *testing.T) {
	tool, err := exec.LookPath("sha256sum")
	for _, f := range allFormats() {
		data := archiveBytes(t, f, revisionEnts()...)
		if f == FormatTgz {
			data = append(data, "trailing bytes after the gzip member"...)
		}
		s := newSandbox(t)
		path := s.bundle(t, "b", data)
		want := sha256Hex(data)
		if err == nil {
			out, err := exec.Command(tool, path).Output()
			if err != nil {
				t.Fatal(err)
			}
			want = strings.Fields(string(out))[0]
		} else {
			t.Logf("sha256sum not found (%v); comparing with crypto/sha256", err)
		}
		res, uerr := UnpackFile(t.Context(), path, s.dest, Limits{})
		if uerr != nil {
			t.Fatal(uerr)
		}
		sum, size, herr := Hash(path)
		if herr != nil || sum != want || res.SHA256 != want || size != int64(len(data)) || res.Size != size {
			t.Errorf("%s: Hash %s %d %v, Result %s %d; want %s %d", f, sum, size, herr, res.SHA256, res.Size, want, len(data))
		}
	}
}

func TestHashErrors(t *testing.T) {
	_, _, err := Hash(filepath.Join(t.TempDir(), "missing"))
	if err == nil || !strings.HasPrefix(err.Error(), "bundle: hash ") || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("err = %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}
