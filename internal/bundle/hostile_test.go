package bundle

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// hostileCase is one bundle that must be refused. wantErr fragments must
// all appear in the error (the entry's quoted name and the rule broken);
// outside lists paths (relative to the sandbox base, or absolute) that
// must not exist afterwards.
type hostileCase struct {
	name    string
	format  Format
	ents    []ent
	data    func(t testing.TB) []byte // overrides format+ents when set
	wantErr []string
	outside []string
}

func hostileCases() []hostileCase {
	good := ent{name: "appspec.yml", body: "version: 0.0\n"}
	var cases []hostileCase
	for _, f := range allFormats() {
		cases = append(cases,
			hostileCase{name: "zip-slip", format: f,
				ents:    []ent{good, {name: "../../evil", body: "pwned"}},
				wantErr: []string{`entry "../../evil"`, "path escapes the revision", `".."`},
				outside: []string{"evil", "../evil"}},
			hostileCase{name: "dotdot that stays inside", format: f,
				ents:    []ent{good, {name: "a/../b", body: "x"}},
				wantErr: []string{`entry "a/../b"`, "path escapes the revision"}},
			hostileCase{name: "dotdot after a dir", format: f,
				ents:    []ent{good, {name: "scripts/../../../evil", body: "x"}},
				wantErr: []string{`entry "scripts/../../../evil"`, "path escapes the revision"},
				outside: []string{"evil"}},
			hostileCase{name: "absolute", format: f,
				ents:    []ent{good, {name: "/etc/x", body: "pwned"}},
				wantErr: []string{`entry "/etc/x"`, "absolute path"},
				outside: []string{"/etc/x"}},
			// An absolute link is data (issue 14.2), but nothing is ever
			// written through it.
			hostileCase{name: "write through a symlink to /etc", format: f,
				ents:    []ent{good, {name: "etc", typ: tar.TypeSymlink, link: "/etc"}, {name: "etc/pwned-by-bundle", body: "x"}},
				wantErr: []string{`entry "etc/pwned-by-bundle"`, `parent "etc" is a symlink`},
				outside: []string{"/etc/pwned-by-bundle"}},
			hostileCase{name: "write through a relative link to an absolute one", format: f,
				ents: []ent{good, {name: "abs", typ: tar.TypeSymlink, link: "/tmp"}, {name: "rel", typ: tar.TypeSymlink, link: "abs"},
					{name: "rel/pwned-by-bundle", body: "x"}},
				wantErr: []string{`entry "rel/pwned-by-bundle"`, `parent "rel" is a symlink`},
				outside: []string{"/tmp/pwned-by-bundle"}},
			// Names and link targets that are not UTF-8 (issue 17.14).
			hostileCase{name: "latin-1 name", format: f,
				ents:    []ent{good, {name: "caf\xe9.txt", body: "x"}},
				wantErr: []string{`entry "caf\xe9.txt"`, "name is not valid UTF-8"}},
			hostileCase{name: "latin-1 link target", format: f,
				ents:    []ent{good, {name: "menu", typ: tar.TypeSymlink, link: "caf\xe9"}},
				wantErr: []string{`entry "menu"`, "symlink target is not valid UTF-8"}},
			hostileCase{name: "symlink up and out", format: f,
				ents:    []ent{good, {name: "sub/out", typ: tar.TypeSymlink, link: "../../outside"}},
				wantErr: []string{`entry "sub/out"`, `symlink target "../../outside" resolves outside the revision root`}},
			hostileCase{name: "write through a symlink", format: f,
				ents: []ent{good, {name: "sub/", typ: tar.TypeDir}, {name: "link", typ: tar.TypeSymlink, link: "sub"},
					{name: "link/x", body: "through the link"}},
				wantErr: []string{`entry "link/x"`, `parent "link" is a symlink`}},
			hostileCase{name: "write through a symlink to the root", format: f,
				ents:    []ent{good, {name: "self", typ: tar.TypeSymlink, link: "."}, {name: "self/appspec.yml", body: "x"}},
				wantErr: []string{`entry "self/appspec.yml"`, `parent "self" is a symlink`}},
			hostileCase{name: "symlink chain climbing out", format: f,
				ents: []ent{good, {name: "d/up", typ: tar.TypeSymlink, link: ".."},
					{name: "esc", typ: tar.TypeSymlink, link: "d/up/.."}},
				wantErr: []string{`entry "esc"`, "resolves outside the revision root"}},
			hostileCase{name: "symlink made dangerous by a later link", format: f,
				ents: []ent{good, {name: "esc", typ: tar.TypeSymlink, link: "d/x/../.."},
					{name: "d/x", typ: tar.TypeSymlink, link: "."}},
				wantErr: []string{`entry "esc"`, "resolves outside the revision root"}},
			hostileCase{name: "symlink loop", format: f,
				ents: []ent{good, {name: "a", typ: tar.TypeSymlink, link: "b"},
					{name: "b", typ: tar.TypeSymlink, link: "a"}},
				wantErr: []string{`entry "a"`, "links in a chain"}},
			hostileCase{name: "link leaving the stripped wrapper", format: f,
				ents: []ent{{name: "top/appspec.yml", body: "a"},
					{name: "top/l", typ: tar.TypeSymlink, link: "../top/appspec.yml"}},
				wantErr: []string{`entry "top/l"`, "resolves outside the revision root"}},
			hostileCase{name: "dir becomes file", format: f,
				ents:    []ent{good, {name: "d/", typ: tar.TypeDir}, {name: "d", body: "x"}},
				wantErr: []string{`entry "d"`, "type change"}},
			hostileCase{name: "file becomes symlink", format: f,
				ents:    []ent{good, {name: "appspec.yml", typ: tar.TypeSymlink, link: "x"}},
				wantErr: []string{`entry "appspec.yml"`, "type change"}},
			hostileCase{name: "symlink becomes dir", format: f,
				ents:    []ent{good, {name: "l", typ: tar.TypeSymlink, link: "x"}, {name: "l/", typ: tar.TypeDir}},
				wantErr: []string{`entry "l/"`, "type change"}},
			hostileCase{name: "file under a file", format: f,
				ents:    []ent{good, {name: "appspec.yml/x", body: "x"}},
				wantErr: []string{`entry "appspec.yml/x"`, "is a regular file, not a directory"}},
			hostileCase{name: "root becomes a symlink", format: f,
				ents:    []ent{good, {name: ".", typ: tar.TypeSymlink, link: "x"}},
				wantErr: []string{`entry "."`, "type change"}},
		)
	}
	for _, f := range []Format{FormatTar, FormatTgz} {
		cases = append(cases,
			hostileCase{name: "hard link to /etc/passwd", format: f,
				ents:    []ent{good, {name: "passwd", typ: tar.TypeLink, link: "/etc/passwd"}},
				wantErr: []string{`entry "passwd"`, `hard link target "/etc/passwd"`, "absolute path"}},
			hostileCase{name: "hard link up and out", format: f,
				ents:    []ent{good, {name: "passwd", typ: tar.TypeLink, link: "../../etc/passwd"}},
				wantErr: []string{`entry "passwd"`, "path escapes the revision"}},
			hostileCase{name: "hard link to a directory", format: f,
				ents:    []ent{good, {name: "d/", typ: tar.TypeDir}, {name: "h", typ: tar.TypeLink, link: "d"}},
				wantErr: []string{`entry "h"`, "not a regular file unpacked earlier"}},
			hostileCase{name: "hard link to a symlink", format: f,
				ents:    []ent{good, {name: "l", typ: tar.TypeSymlink, link: "appspec.yml"}, {name: "h", typ: tar.TypeLink, link: "l"}},
				wantErr: []string{`entry "h"`, "not a regular file unpacked earlier"}},
			hostileCase{name: "hard link through a symlink", format: f,
				ents: []ent{good, {name: "d/f", body: "f"}, {name: "l", typ: tar.TypeSymlink, link: "d"},
					{name: "h", typ: tar.TypeLink, link: "l/f"}},
				wantErr: []string{`entry "h"`, "not a regular file unpacked earlier"}},
			hostileCase{name: "hard link forward", format: f,
				ents:    []ent{good, {name: "h", typ: tar.TypeLink, link: "later"}, {name: "later", body: "x"}},
				wantErr: []string{`entry "h"`, "not a regular file unpacked earlier"}},
			hostileCase{name: "hard link to itself", format: f,
				ents:    []ent{good, {name: "appspec.yml", typ: tar.TypeLink, link: "appspec.yml"}},
				wantErr: []string{`entry "appspec.yml"`, "points to itself"}},
		)
		for _, dev := range []struct {
			typ  byte
			what string
		}{{tar.TypeChar, "character devices"}, {tar.TypeBlock, "block devices"}, {tar.TypeFifo, "FIFOs"}} {
			cases = append(cases, hostileCase{name: dev.what, format: f,
				ents:    []ent{good, {name: "dev/thing", typ: dev.typ}},
				wantErr: []string{`entry "dev/thing"`, dev.what + " are not allowed"}})
		}
		cases = append(cases, hostileCase{name: "GNU volume label", format: f,
			ents:    []ent{good, {name: "label", typ: 'V'}},
			wantErr: []string{`entry "label"`, `type 'V' is not allowed`}})
	}
	for _, dev := range []struct {
		typ  byte
		what string
	}{{tar.TypeChar, "character device"}, {tar.TypeBlock, "block device"}, {tar.TypeFifo, "FIFO"}} {
		cases = append(cases, hostileCase{name: "zip " + dev.what, format: FormatZip,
			ents:    []ent{good, {name: "dev/thing", typ: dev.typ}},
			wantErr: []string{`entry "dev/thing"`, dev.what + " entries are not allowed"}})
	}
	// Only zip can carry a NUL in a name: in a tar header it ends the name,
	// and archive/tar rejects PAX records holding one.
	cases = append(cases,
		hostileCase{name: "zip NUL in name", format: FormatZip,
			ents:    []ent{good, {name: "a\x00b", body: "x"}},
			wantErr: []string{`entry "a\x00b"`, "NUL byte"}},
		hostileCase{name: "zip empty name", format: FormatZip,
			ents:    []ent{good, {name: "", body: "x"}},
			wantErr: []string{`entry ""`, "empty name"}},
		hostileCase{name: "zip backslash dotdot", format: FormatZip,
			ents:    []ent{good, {name: `..\..\evil`, body: "x"}},
			wantErr: []string{`entry "..\\..\\evil"`, "path escapes the revision"}},
		hostileCase{name: "zip symlink content too long", format: FormatZip,
			ents:    []ent{good, {name: "l", typ: tar.TypeSymlink, link: string(bytes.Repeat([]byte("a/"), 2100))}},
			wantErr: []string{`entry "l"`, "longer than 4096 bytes"}},
		hostileCase{name: "zip MS-DOS backslash dotdot", format: FormatZip,
			data: func(t testing.TB) []byte {
				var buf bytes.Buffer
				zw := zip.NewWriter(&buf)
				w, err := zw.CreateHeader(&zip.FileHeader{Name: `dir\..\..\evil`, Method: zip.Deflate})
				if err != nil {
					t.Fatal(err)
				}
				w.Write([]byte("x"))
				zw.Close()
				return buf.Bytes()
			},
			wantErr: []string{`entry "dir\\..\\..\\evil"`, "path escapes the revision"}},
		hostileCase{name: "zip encrypted entry", format: FormatZip,
			data: func(t testing.TB) []byte {
				var buf bytes.Buffer
				zw := zip.NewWriter(&buf)
				w, err := zw.CreateHeader(&zip.FileHeader{Name: "secret", Method: zip.Store, Flags: zipFlagEncrypted})
				if err != nil {
					t.Fatal(err)
				}
				w.Write([]byte("xxxxxxxxxxxxxxxx"))
				zw.Close()
				return buf.Bytes()
			},
			wantErr: []string{`entry "secret"`, "encrypted"}},
	)
	return cases
}

func TestHostileBundles(t *testing.T) {
	for _, c := range hostileCases() {
		t.Run(string(c.format)+"/"+c.name, func(t *testing.T) {
			s := newSandbox(t)
			var data []byte
			if c.data != nil {
				data = c.data(t)
			} else {
				data = archiveBytes(t, c.format, c.ents...)
			}
			before := statAll(t, c.outside, s.base)
			res, err := s.unpack(t, "bundle.tar", data, Limits{})
			if err == nil {
				t.Fatalf("unpacked %d entries, want a refusal", len(res.Entries))
			}
			wantErr(t, err, append([]string{"bundle: unpack bundle.tar: "}, c.wantErr...)...)
			s.assertClean(t)
			if after := statAll(t, c.outside, s.base); after != before {
				t.Errorf("outside paths changed: before %q, after %q", before, after)
			}
		})
	}
}

// statAll describes the given paths (relative ones under base) so a test
// can tell if any appeared or changed, without creating or following them.
func statAll(t testing.TB, paths []string, base string) string {
	t.Helper()
	var out bytes.Buffer
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			p = filepath.Join(base, p)
		}
		info, err := os.Lstat(p)
		switch {
		case err != nil:
			out.WriteString(p + ": absent; ")
		default:
			out.WriteString(p + ": " + info.Mode().String() + " " + info.ModTime().String() + "; ")
		}
	}
	return out.String()
}

// A file that is not an archive, or is empty, gets an error saying what was
// found.
func TestNotABundle(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "empty file"},
		{"s3 error page", []byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code></Error>`), `found text starting "<?xml`},
		{"bzip2", []byte("BZh91AY&SY\x00\x00"), "found bzip2 data"},
		{"zeros", make([]byte, 10240), "found 10240 zero bytes"},
		{"binary", []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6}, "unknown binary data starting de ad be ef"},
		{"gzip of text", gzipBytes(t, bytes.Repeat([]byte("just a log line\n"), 100)), "found gzip data holding text"},
		{"gzip of nothing", gzipBytes(t, nil), "inflates to nothing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSandbox(t)
			_, err := s.unpack(t, "bundle.tar", c.data, Limits{})
			wantErr(t, err, c.want)
			s.assertClean(t)
		})
	}
}

func TestCorruptTgz(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB, several deflate blocks
	good := tgzBytes(t, ent{name: "appspec.yml", body: "a"}, ent{name: "big.bin", body: string(big)})
	for _, c := range []struct {
		name string
		data func() []byte
		want []string
	}{
		{"truncated mid-file", func() []byte { return good[:len(good)/2] }, []string{`entry "big.bin"`, "unexpected EOF"}},
		{"truncated before trailer", func() []byte { return good[:len(good)-4] }, []string{"unexpected EOF"}},
		{"flipped bits", func() []byte {
			b := bytes.Clone(good)
			for i := len(b) / 3; i < len(b)/3+64; i++ {
				b[i] ^= 0x5a
			}
			return b
		}, []string{"bundle: unpack bundle.tar: "}},
		{"bad crc", func() []byte {
			b := bytes.Clone(good)
			b[len(b)-8] ^= 0xff
			return b
		}, []string{"gzip: invalid checksum"}},
		{"truncated tar", func() []byte {
			return tarBytes(t, ent{name: "appspec.yml", body: "a"}, ent{name: "big.bin", body: string(big)})[:1<<19]
		}, []string{`entry "big.bin"`, "unexpected EOF"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSandbox(t)
			_, err := s.unpack(t, "bundle.tar", c.data(), Limits{})
			wantErr(t, err, c.want...)
			s.assertClean(t)
		})
	}
}

func TestSymlinkPermsNotFollowed(t *testing.T) {
	// A symlink's own metadata is set without following it: its target
	// (the sentinel, if it could escape) must keep its times.
	s := newSandbox(t)
	_, err := s.unpack(t, "b.tar", tarBytes(t,
		ent{name: "appspec.yml", body: "a"},
		ent{name: "l", typ: tar.TypeSymlink, link: "appspec.yml", mtime: baseTime().Add(-48 * 3600e9)},
	), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	target, _ := os.Stat(filepath.Join(s.dest, "appspec.yml"))
	link, _ := os.Lstat(filepath.Join(s.dest, "l"))
	if !target.ModTime().Equal(baseTime()) || link.ModTime().Equal(baseTime()) || link.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("target mtime %v, link mtime %v", target.ModTime(), link.ModTime())
	}
}
