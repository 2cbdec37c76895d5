package bundle

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// Memory test sizes: 30 files of 10 MiB make a ~300 MiB bundle.
const (
	memFiles     = 30
	memFileBytes = 10 * mib
	// memAllocCap is far below the bundle size: only fixed buffers, the
	// decompressor's window and per-entry bookkeeping may be allocated.
	memAllocCap = 32 * mib
)

// writeBigTgz writes a deterministic tgz of memFiles incompressible files.
// The data comes from a seeded ChaCha8 stream, so gzip cannot shrink it
// and the bundle really is ~300 MiB on disk; gzip runs at level
// NoCompression (stored deflate blocks) because trying to compress random
// bytes would only cost test time under -race.
func writeBigTgz(t testing.TB, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	src := rand.NewChaCha8([32]byte{'r', 'o', 'l', 'l', 'b', 'a', 'c', 'k'})
	chunk := make([]byte, 1<<20)
	for i := range memFiles {
		hdr := &tar.Header{Name: fmt.Sprintf("data/part-%02d.bin", i), Mode: 0o644, Size: memFileBytes,
			ModTime: baseTime(), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		for range memFileBytes / len(chunk) {
			src.Read(chunk)
			if _, err := tw.Write(chunk); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range []interface{ Close() error }{tw, zw} {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	info, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

func TestMemoryBoundedOnBigTgz(t *testing.T) {
	s := newSandbox(t)
	path := filepath.Join(s.bundles, "big.tgz")
	genStart := time.Now()
	size := writeBigTgz(t, path)
	t.Logf("bundle: %d MiB, generated in %v", size/mib, time.Since(genStart).Round(time.Millisecond))

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	res, err := UnpackFile(t.Context(), path, s.dest, Limits{})
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	grew := after.TotalAlloc - before.TotalAlloc
	t.Logf("unpacked %d MiB in %v; TotalAlloc grew by %d KiB (%.3f%% of the bundle)",
		res.UnpackedBytes/mib, elapsed.Round(time.Millisecond), grew>>10, 100*float64(grew)/float64(size))
	if res.UnpackedBytes != memFiles*memFileBytes || res.Files != memFiles || res.Size != size {
		t.Errorf("result: %d bytes, %d files, size %d", res.UnpackedBytes, res.Files, res.Size)
	}
	if size < 300*mib {
		t.Errorf("bundle is only %d bytes: the data compressed, the test proves less than it claims", size)
	}
	if grew > memAllocCap {
		t.Errorf("TotalAlloc grew by %d bytes unpacking a %d-byte bundle; want < %d", grew, size, memAllocCap)
	}
}
