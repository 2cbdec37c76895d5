package hostile

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"flag"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the corpus inputs from their build specs")

// buildSpec says how a committed input was made. Archives are built
// member by member, as an attacker would, not by the product's own
// writer: the point is bytes the product would never produce.
type buildSpec struct {
	// Format: tar, tgz, zip (Entries), gzip (Raw, compressed), raw (Raw).
	Format  string      `yaml:"format"`
	Entries []entrySpec `yaml:"entries"`
	Raw     string      `yaml:"raw"`
	// Truncate keeps only the first Truncate bytes of the result.
	Truncate int `yaml:"truncate"`
	// Manifest builds manifest.json and its signature instead.
	Manifest *manifestSpec `yaml:"manifest"`
}

// entrySpec is one archive member.
type entrySpec struct {
	Name string `yaml:"name"`
	// Type: file (default), dir, symlink, hardlink, char, block, fifo.
	Type string `yaml:"type"`
	Body string `yaml:"body"`
	// Zeros makes the content that many zero bytes (bombs compress well).
	Zeros int64  `yaml:"zeros"`
	Link  string `yaml:"link"`
	// Mode is octal; default 0644 (0755 for dirs).
	Mode string `yaml:"mode"`
	// Repeat makes Repeat members, Name being a format with one %d.
	Repeat int `yaml:"repeat"`
	// DeclaredSize (zip) is the uncompressed size the headers claim, a lie
	// when it differs from the content.
	DeclaredSize int64 `yaml:"declared_size"`
	// Tail is appended to Body: long repetitive content (a nesting bomb)
	// stays one readable line in case.yaml.
	Tail *generateSpec `yaml:"tail"`
	// Encoding "latin1" writes Name and Link as ISO-8859-1 bytes (one byte
	// per character), names that are not UTF-8, as an old tool makes them.
	Encoding string `yaml:"encoding"`
}

// encoded applies Encoding to s.
func (e entrySpec) encoded(s string) (string, error) {
	switch e.Encoding {
	case "":
		return s, nil
	case "latin1":
		var b []byte
		for _, r := range s {
			if r > 0xff {
				return "", fmt.Errorf("%q is not Latin-1", s)
			}
			b = append(b, byte(r))
		}
		return string(b), nil
	}
	return "", fmt.Errorf("unknown encoding %q", e.Encoding)
}

// withEncoding returns the entries with their names and links encoded.
func withEncoding(ents []entrySpec) ([]entrySpec, error) {
	out := expand(ents)
	for i, e := range out {
		var err error
		if out[i].Name, err = e.encoded(e.Name); err != nil {
			return nil, err
		}
		if out[i].Link, err = e.encoded(e.Link); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// generateSpec makes large inputs at run time.
type generateSpec struct {
	Prefix string `yaml:"prefix"`
	// Repeat is written Times times after Prefix.
	Repeat string `yaml:"repeat"`
	Times  int    `yaml:"times"`
	Suffix string `yaml:"suffix"`
	// JunkBytes appends that many pseudo-random bytes (seeded, so a
	// failure can be reproduced).
	JunkBytes string `yaml:"junk_bytes"`
	Seed      uint64 `yaml:"seed"`
}

func (g *generateSpec) bytes() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(g.Prefix)
	b.WriteString(strings.Repeat(g.Repeat, g.Times))
	if g.JunkBytes != "" {
		n, err := parseSize(g.JunkBytes)
		if err != nil {
			return nil, err
		}
		r := rand.New(rand.NewPCG(g.Seed, 0x686f7374696c65))
		junk := make([]byte, n)
		for i := range junk {
			junk[i] = byte(r.Uint32())
		}
		b.Write(junk)
	}
	b.WriteString(g.Suffix)
	return b.Bytes(), nil
}

// fixedTime keeps archives byte-for-byte reproducible.
var fixedTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// build returns the files the spec makes, by name within the case dir.
func (s *buildSpec) build(c *hostileCase) (map[string][]byte, error) {
	if s.Manifest != nil {
		return s.Manifest.build(c)
	}
	var out []byte
	var err error
	switch s.Format {
	case "tar":
		out, err = tarOf(s.Entries)
	case "tgz":
		if out, err = tarOf(s.Entries); err == nil {
			out, err = gzipOf(out)
		}
	case "zip":
		out, err = zipOf(s.Entries)
	case "gzip":
		out, err = gzipOf([]byte(s.Raw))
	case "raw":
		out = []byte(s.Raw)
	default:
		return nil, fmt.Errorf("build: unknown format %q", s.Format)
	}
	if err != nil {
		return nil, err
	}
	if s.Truncate > 0 && s.Truncate < len(out) {
		out = out[:s.Truncate]
	}
	return map[string][]byte{c.Input: out}, nil
}

// expand turns Repeat entries into their members.
func expand(ents []entrySpec) []entrySpec {
	var out []entrySpec
	for _, e := range ents {
		if e.Repeat == 0 {
			out = append(out, e)
			continue
		}
		for i := range e.Repeat {
			c := e
			c.Repeat, c.Name = 0, fmt.Sprintf(e.Name, i)
			out = append(out, c)
		}
	}
	return out
}

func (e entrySpec) content() []byte {
	if e.Zeros > 0 {
		return make([]byte, e.Zeros)
	}
	if e.Tail != nil {
		tail, _ := e.Tail.bytes() // no junk_bytes here: cannot fail
		return append([]byte(e.Body), tail...)
	}
	return []byte(e.Body)
}

func (e entrySpec) mode() (int64, error) {
	if e.Mode == "" {
		if e.Type == "dir" {
			return 0o755, nil
		}
		return 0o644, nil
	}
	return strconv.ParseInt(e.Mode, 8, 64)
}

func tarOf(ents []entrySpec) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	all, err := withEncoding(ents)
	if err != nil {
		return nil, err
	}
	for _, e := range all {
		mode, err := e.mode()
		if err != nil {
			return nil, err
		}
		h := &tar.Header{Name: e.Name, Mode: mode, ModTime: fixedTime, Uname: "root", Gname: "root", Format: tar.FormatPAX}
		body := e.content()
		switch e.Type {
		case "", "file":
			h.Typeflag, h.Size = tar.TypeReg, int64(len(body))
		case "dir":
			h.Typeflag = tar.TypeDir
		case "symlink":
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.Link
		case "hardlink":
			h.Typeflag, h.Linkname = tar.TypeLink, e.Link
		case "char":
			h.Typeflag, h.Devmajor, h.Devminor = tar.TypeChar, 1, 3 // /dev/null's numbers
		case "block":
			h.Typeflag, h.Devmajor, h.Devminor = tar.TypeBlock, 7, 0 // loop0
		case "fifo":
			h.Typeflag = tar.TypeFifo
		default:
			return nil, fmt.Errorf("tar: unknown entry type %q", e.Type)
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar %q: %w", e.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(body); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// gzipOf compresses without a name or time in the header, so the output
// only depends on the input.
func gzipOf(data []byte) ([]byte, error) {
	var b bytes.Buffer
	zw, err := gzip.NewWriterLevel(&b, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(data); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func zipOf(ents []entrySpec) ([]byte, error) {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	all, err := withEncoding(ents)
	if err != nil {
		return nil, err
	}
	for _, e := range all {
		mode, err := e.mode()
		if err != nil {
			return nil, err
		}
		perm := fs.FileMode(mode).Perm()
		h := &zip.FileHeader{Name: e.Name, Method: zip.Deflate, Modified: fixedTime}
		body := e.content()
		switch e.Type {
		case "", "file":
			h.SetMode(perm)
		case "dir":
			h.Name = strings.TrimSuffix(h.Name, "/") + "/"
			h.SetMode(fs.ModeDir | perm)
			body = nil
		case "symlink":
			// Info-ZIP's convention: the mode says symlink, the content
			// is the target.
			h.SetMode(fs.ModeSymlink | 0o777)
			body = []byte(e.Link)
		case "fifo":
			h.SetMode(fs.ModeNamedPipe | perm)
		case "char":
			h.SetMode(fs.ModeDevice | fs.ModeCharDevice | perm)
		default:
			return nil, fmt.Errorf("zip: unsupported entry type %q", e.Type)
		}
		if e.DeclaredSize > 0 {
			if err := writeLyingZipEntry(zw, h, body, e.DeclaredSize); err != nil {
				return nil, err
			}
			continue
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(body); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeLyingZipEntry stores body deflated, with headers that claim
// declared uncompressed bytes: the classic bomb that passes a check of
// the directory's sizes and must be stopped while inflating.
func writeLyingZipEntry(zw *zip.Writer, h *zip.FileHeader, body []byte, declared int64) error {
	var comp bytes.Buffer
	fw, err := flate.NewWriter(&comp, flate.BestCompression)
	if err != nil {
		return err
	}
	if _, err := fw.Write(body); err != nil {
		return err
	}
	if err := fw.Close(); err != nil {
		return err
	}
	h.CRC32 = crc32.ChecksumIEEE(body)
	h.CompressedSize64 = uint64(comp.Len())
	h.UncompressedSize64 = uint64(declared)
	w, err := zw.CreateRaw(h)
	if err != nil {
		return err
	}
	_, err = w.Write(comp.Bytes())
	return err
}

// TestCorpusIsReproducible rebuilds every input that has a build spec and
// compares it with the committed bytes; with -update it writes them. So
// a case's spec is always the truth about its input.
func TestCorpusIsReproducible(t *testing.T) {
	n := 0
	for _, c := range loadCorpus(t) {
		if c.Build == nil {
			continue
		}
		files, err := c.Build.build(c)
		if err != nil {
			t.Errorf("%s: build: %v", c.name, err)
			continue
		}
		for name, want := range files {
			n++
			p := filepath.Join(c.dir, name)
			if *update {
				if err := os.WriteFile(p, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: %s differs from its build spec (%v); run go test ./internal/hostile -run TestCorpusIsReproducible -update", c.name, name, err)
			}
		}
	}
	if n < 20 {
		t.Errorf("only %d built inputs: the corpus went missing?", n)
	}
}
