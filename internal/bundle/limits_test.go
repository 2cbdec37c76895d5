package bundle

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"
)

const mib = 1 << 20

// zeroBombZip is a zip with one deflated entry of size MiB of zeros whose
// headers declare claimed bytes. The deflate stream is built from one
// compressed MiB repeated (sync-flushed blocks concatenate), so the 200 MiB
// bomb costs the test almost nothing to make.
func zeroBombZip(t testing.TB, name string, size int, claimed uint64) []byte {
	t.Helper()
	var block bytes.Buffer
	fw, err := flate.NewWriter(&block, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, mib)
	fw.Write(zeros)
	fw.Flush()
	var raw bytes.Buffer
	crc := uint32(0)
	for range size {
		raw.Write(block.Bytes())
		crc = crc32.Update(crc, crc32.IEEETable, zeros)
	}
	raw.Write([]byte{0x03, 0x00}) // an empty final block
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: name, Method: zip.Deflate, CRC32: crc,
		CompressedSize64: uint64(raw.Len()), UncompressedSize64: claimed}
	h.SetMode(0o644)
	w, err := zw.CreateRaw(h)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(raw.Bytes())
	zw.Close()
	return buf.Bytes()
}

func TestZipBomb(t *testing.T) {
	lim := Limits{MaxFileBytes: 10 * mib}
	t.Run("honest header", func(t *testing.T) {
		s := newSandbox(t)
		_, err := s.unpack(t, "bomb.zip", zeroBombZip(t, "zeros.bin", 200, 200*mib), lim)
		wantErr(t, err, `entry "zeros.bin"`, "exceeds MaxFileBytes (10485760 bytes)")
		s.assertClean(t)
	})
	t.Run("header claims a small size", func(t *testing.T) {
		s := newSandbox(t)
		_, err := s.unpack(t, "bomb.zip", zeroBombZip(t, "zeros.bin", 200, 4096), lim)
		wantErr(t, err, `entry "zeros.bin"`, "longer than the 4096 bytes its header declares")
		s.assertClean(t)
	})
	t.Run("header claims just under the cap", func(t *testing.T) {
		s := newSandbox(t)
		_, err := s.unpack(t, "bomb.zip", zeroBombZip(t, "zeros.bin", 200, 10*mib-1), lim)
		wantErr(t, err, `entry "zeros.bin"`, "header declares")
		s.assertClean(t)
	})
}

// The caps count bytes really written, not what a header claims: feed the
// unpacker readers that deliver more than the 10 bytes they announce.
func TestCapsCountRealBytes(t *testing.T) {
	lying := func() io.Reader { return io.LimitReader(zeroReader{}, 4*mib) }
	t.Run("MaxFileBytes", func(t *testing.T) {
		lim := Limits{MaxFileBytes: 3 * mib}.withDefaults()
		u := newUnpacker(context.Background(), t.TempDir(), lim, FormatTar)
		err := u.file(member{name: "a", rel: "a", mode: 0o644}, 10, lying())
		wantErr(t, err, "exceeds MaxFileBytes (3145728 bytes)")
		if u.written > lim.MaxFileBytes {
			t.Errorf("wrote %d bytes, past the cap", u.written)
		}
	})
	t.Run("MaxTotalBytes", func(t *testing.T) {
		lim := Limits{MaxTotalBytes: 5 * mib}.withDefaults()
		u := newUnpacker(context.Background(), t.TempDir(), lim, FormatTar)
		if err := u.file(member{name: "a", rel: "a", mode: 0o644}, 10, lying()); err != nil {
			t.Fatal(err)
		}
		err := u.file(member{name: "b", rel: "b", mode: 0o644}, 10, lying())
		wantErr(t, err, "exceeds MaxTotalBytes (5242880 bytes unpacked)")
		if u.written > lim.MaxTotalBytes {
			t.Errorf("wrote %d bytes, past the cap", u.written)
		}
	})
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func manyFiles(n int) []ent {
	ents := make([]ent, n)
	for i := range ents {
		ents[i] = ent{name: fmt.Sprintf("f%03d", i), body: "x"}
	}
	return ents
}

func TestMaxFiles(t *testing.T) {
	lim := Limits{MaxFiles: 100}
	for _, f := range allFormats() {
		t.Run(string(f), func(t *testing.T) {
			s := newSandbox(t)
			_, err := s.unpack(t, "b", archiveBytes(t, f, manyFiles(101)...), lim)
			wantErr(t, err, "more than MaxFiles (100) entries")
			if f != FormatZip {
				// zip is refused from its central directory, before any entry.
				wantErr(t, err, `entry "f100"`)
			}
			s.assertClean(t)

			s = newSandbox(t)
			res, err := s.unpack(t, "b", archiveBytes(t, f, manyFiles(100)...), lim)
			if err != nil || res.Files != 100 {
				t.Fatalf("100 entries: %v", err)
			}
		})
	}
	t.Run("implied directories count", func(t *testing.T) {
		s := newSandbox(t)
		deep := strings.Repeat("d/", 100) + "f"
		_, err := s.unpack(t, "b", tarBytes(t, ent{name: deep, body: "x"}), lim)
		wantErr(t, err, `entry "`+deep+`"`, "more than MaxFiles (100) entries, implied directories included")
		s.assertClean(t)
	})
}

// archive/zip compares the declared entry count only modulo 65536, so a
// zip declaring 100 entries may hold 65636; the central directory is counted
// before archive/zip loads it.
func TestZipEntryCountWrapsAround(t *testing.T) {
	const real = 65536 + 100
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := range real {
		if _, err := zw.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("%05d", i), Method: zip.Store}); err != nil {
			t.Fatal(err)
		}
	}
	zw.Close()
	b := buf.Bytes()
	// As written, the count lives in the zip64 end record.
	if n, ok := zipDirectoryEntries(bytes.NewReader(b), int64(len(b)), 1<<30); !ok || n != real {
		t.Errorf("zip64: counted %d (%v), want %d", n, ok, real)
	}
	// Rewrite the end record the way a hostile tool would: declare
	// real mod 65536 entries, and point at the central directory directly.
	end := bytes.LastIndex(b, []byte("PK\x05\x06"))
	loc := bytes.LastIndex(b[:end], []byte("PK\x06\x07"))
	z64 := bytes.LastIndex(b[:loc], []byte("PK\x06\x06"))
	dirOff := le64(b[z64+48:])
	dirSize := le64(b[z64+40:])
	putLE16(b[end+8:], real%65536)
	putLE16(b[end+10:], real%65536)
	putLE32(b[end+12:], uint32(dirSize))
	putLE32(b[end+16:], uint32(dirOff))

	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil || len(zr.File) != real {
		t.Fatalf("crafted zip: archive/zip sees %v entries, %v", lenFiles(zr), err)
	}
	if n, ok := zipDirectoryEntries(bytes.NewReader(b), int64(len(b)), 1<<30); !ok || n != real {
		t.Errorf("counted %d (%v), want %d", n, ok, real)
	}
	s := newSandbox(t)
	_, err = s.unpack(t, "b.zip", b, Limits{MaxFiles: 100})
	wantErr(t, err, "zip lists more than MaxFiles (100) entries")
	s.assertClean(t)
}

func lenFiles(zr *zip.Reader) int {
	if zr == nil {
		return -1
	}
	return len(zr.File)
}

func le64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func putLE16(b []byte, v uint16) { b[0], b[1] = byte(v), byte(v>>8) }

func putLE32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func TestMaxTotalBytes(t *testing.T) {
	chunk := strings.Repeat("z", 3*mib)
	ents := []ent{{name: "a", body: chunk}, {name: "b", body: chunk}, {name: "c", body: chunk}, {name: "d", body: chunk}}
	for _, f := range allFormats() {
		t.Run(string(f), func(t *testing.T) {
			s := newSandbox(t)
			_, err := s.unpack(t, "b", archiveBytes(t, f, ents...), Limits{MaxTotalBytes: 10 * mib})
			wantErr(t, err, `entry "d"`, "MaxTotalBytes (10485760 bytes)")
			s.assertClean(t)
		})
	}
}

func TestContextCancelled(t *testing.T) {
	small := manyFiles(50)
	big := []ent{{name: "appspec.yml", body: "a"}, {name: "big", body: strings.Repeat("b", 4*mib)}}
	for _, f := range allFormats() {
		t.Run(string(f), func(t *testing.T) {
			// Between entries: before anything, after the first, midway.
			for _, after := range []int{0, 1, 40} {
				s := newSandbox(t)
				path := s.bundle(t, "b", archiveBytes(t, f, small...))
				_, err := UnpackFile(newCountdownCtx(after), path, s.dest, Limits{})
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("cancel after %d checks: err = %v", after, err)
				}
				s.assertClean(t)
			}
			// In the middle of copying the 4 MiB file (64 chunks).
			s := newSandbox(t)
			path := s.bundle(t, "b", archiveBytes(t, f, big...))
			_, err := UnpackFile(newCountdownCtx(30), path, s.dest, Limits{})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v", err)
			}
			wantErr(t, err, `entry "big"`)
			s.assertClean(t)
		})
	}
	t.Run("real context", func(t *testing.T) {
		s := newSandbox(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := UnpackFile(ctx, s.bundle(t, "b.tar", tarBytes(t, small...)), s.dest, Limits{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		s.assertClean(t)
	})
}
