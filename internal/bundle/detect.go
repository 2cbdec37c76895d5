package bundle

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"unicode/utf8"
)

// tarBlock is the size of a tar header (and of every tar record).
const tarBlock = 512

// DetectFormat names the format from the first bytes of a bundle (pass at
// least 512 when the bundle has them): a zip local header "PK\x03\x04" (or the
// end record "PK\x05\x06" of an empty zip), gzip 1f 8b holding a tar (tgz), or
// a tar header, recognised by the ustar/GNU magic at offset 257 or, for old v7
// tars, by a valid header checksum. The error for anything else says what was
// found, so that an S3 error page or a bzip2 file is easy to diagnose.
func DetectFormat(header []byte) (Format, error) {
	f, err := detectFormat(header)
	if err != nil {
		return "", fmt.Errorf("bundle: detect format: %w", err)
	}
	return f, nil
}

func detectFormat(header []byte) (Format, error) {
	switch {
	case len(header) == 0:
		return "", errors.New("empty file: not a zip, tar or tar.gz bundle")
	case bytes.HasPrefix(header, []byte("PK\x03\x04")), bytes.HasPrefix(header, []byte("PK\x05\x06")):
		return FormatZip, nil
	case bytes.HasPrefix(header, []byte{0x1f, 0x8b}):
		return detectGzip(header)
	case isTarHeader(header):
		return FormatTar, nil
	}
	return "", fmt.Errorf("not a zip, tar or tar.gz bundle: found %s", describe(header))
}

// detectGzip inflates the start of a gzip stream to check that a tar is
// inside: CodeDeploy runs tar -z on it, and a gzipped log file is not a
// bundle. When the bytes given end before a whole tar header could be
// inflated, the answer is a provisional tgz; the unpacker checks the inflated
// header again before trusting it.
func detectGzip(header []byte) (Format, error) {
	zr, err := gzip.NewReader(bytes.NewReader(header))
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return FormatTgz, nil
		}
		return "", fmt.Errorf("not a tar.gz bundle: found gzip data with a bad header: %v", err)
	}
	var blk [tarBlock]byte
	n, err := readUpTo(zr, blk[:])
	switch {
	case n == len(blk):
	case errors.Is(err, io.ErrUnexpectedEOF):
		return FormatTgz, nil
	case err == io.EOF && n == 0:
		return "", errors.New("not a tar.gz bundle: found gzip data that inflates to nothing")
	case err == io.EOF:
		return "", fmt.Errorf("not a tar.gz bundle: found gzip data holding only %d bytes (%s), too few for a tar archive", n, describe(blk[:n]))
	default:
		return "", fmt.Errorf("not a tar.gz bundle: found corrupt gzip data: %v", err)
	}
	if isTarHeader(blk[:]) {
		return FormatTgz, nil
	}
	return "", fmt.Errorf("not a tar.gz bundle: found gzip data holding %s, not a tar archive", describe(blk[:]))
}

// readUpTo is io.ReadFull that hands back the reader's own final error, so a
// stream that ended cleanly (io.EOF) is told apart from a cut one.
func readUpTo(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := r.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// isTarHeader reports whether b starts with a tar header block.
func isTarHeader(b []byte) bool {
	if len(b) < tarBlock {
		return false
	}
	magic := b[257:265]
	if bytes.Equal(magic, []byte("ustar\x0000")) || bytes.Equal(magic, []byte("ustar  \x00")) {
		return true
	}
	// A v7 header has no magic: only its checksum tells it from noise. An
	// all-zero block would be the end of an empty archive, which cannot hold
	// an appspec, so it is not called a tar.
	return validTarChecksum(b[:tarBlock])
}

// validTarChecksum checks a header's checksum field the way tar does: the
// sum of all header bytes with the field itself counted as spaces, accepting
// the signed-char sum some historic tars wrote.
func validTarChecksum(h []byte) bool {
	field := bytes.Trim(h[148:156], " \x00")
	if len(field) == 0 {
		return false
	}
	want, err := strconv.ParseUint(string(field), 8, 64)
	if err != nil {
		return false
	}
	var unsigned, signed int64
	for i, c := range h {
		if i >= 148 && i < 156 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return int64(want) == unsigned || int64(want) == signed
}

// describe names what a non-bundle looks like, for error messages.
func describe(b []byte) string {
	has := func(prefix string) bool { return bytes.HasPrefix(b, []byte(prefix)) }
	switch {
	case has("BZh"):
		return "bzip2 data (only zip, tar and gzip-compressed tar are supported)"
	case has("\xfd7zXZ\x00"):
		return "xz data (only zip, tar and gzip-compressed tar are supported)"
	case has("\x28\xb5\x2f\xfd"):
		return "zstd data (only zip, tar and gzip-compressed tar are supported)"
	case has("\x1f\x9d"):
		return "compress (.Z) data (only zip, tar and gzip-compressed tar are supported)"
	case has("\x1f\x8b"):
		return "gzip data"
	case has("7z\xbc\xaf\x27\x1c"):
		return "a 7-Zip archive"
	case has("Rar!\x1a\x07"):
		return "a RAR archive"
	case has("PK\x07\x08"), has("PK00"):
		return "a split or spanned zip archive"
	case has("PK\x03\x04"), has("PK\x05\x06"):
		return "a zip archive"
	case has("PK"):
		return "a damaged zip archive (no local file header at the start)"
	case has("\x7fELF"):
		return "an ELF executable"
	case has("%PDF"):
		return "a PDF document"
	case len(bytes.Trim(b, "\x00")) == 0:
		return fmt.Sprintf("%d zero bytes (an empty tar archive, which cannot hold an appspec)", len(b))
	}
	head := b
	if len(head) > 48 {
		head = head[:48]
	}
	if isText(head) {
		return fmt.Sprintf("text starting %q", head)
	}
	if len(head) > 8 {
		head = head[:8]
	}
	return fmt.Sprintf("unknown binary data starting % x", head)
}

// isText reports whether b looks like printable text (an XML error page
// saved in place of the bundle is the classic case). The last rune may be
// cut off by the slicing, so an incomplete final rune is tolerated.
func isText(b []byte) bool {
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size <= 1 {
			return !utf8.FullRune(b)
		}
		if r < 0x20 && r != '\n' && r != '\r' && r != '\t' {
			return false
		}
		b = b[size:]
	}
	return true
}

// Hash returns the hex sha256 and size of a file (streamed).
func Hash(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("bundle: hash %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	// The struct hides *os.File's WriterTo, which would bypass the buffer.
	n, err := io.CopyBuffer(h, struct{ io.Reader }{f}, make([]byte, copyBufSize))
	if err != nil {
		return "", 0, fmt.Errorf("bundle: hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
