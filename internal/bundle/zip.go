package bundle

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strings"
)

// Zip "version made by" hosts (the high byte of CreatorVersion) that
// decide how unzip, which CodeDeploy runs, reads names and modes.
const (
	zipHostFAT  = 0
	zipHostUnix = 3
	zipHostMac  = 19
)

// zipUmask is the umask unzip applies to modes it derives from MS-DOS
// attributes; 022 is the usual one for a root-run agent.
const zipUmask fs.FileMode = 0o022

// zipFlagEncrypted is general purpose flag bit 0.
const zipFlagEncrypted = 0x1

// unpackZip unpacks a zip. archive/zip needs random access, so the bundle's
// SHA256 takes a separate streamed pass first.
func (u *unpacker) unpackZip(f *os.File) (string, int64, error) {
	d := &digest{h: sha256.New()}
	if _, err := u.drain(io.TeeReader(io.NewSectionReader(f, 0, math.MaxInt64), d)); err != nil {
		return "", 0, fmt.Errorf("hash bundle: %w", err)
	}
	size := d.n
	// archive/zip loads the whole central directory before we see a single
	// entry, so count it first rather than let it allocate for millions.
	if n, ok := zipDirectoryEntries(f, size, u.lim.MaxFiles); ok && n > u.lim.MaxFiles {
		return "", 0, fmt.Errorf("zip lists more than MaxFiles (%d) entries", u.lim.MaxFiles)
	}
	zr, err := zip.NewReader(f, size)
	// With GODEBUG=zipinsecurepath=0 archive/zip flags names it finds
	// unsafe but still returns the reader; our checks are stricter and name
	// the entry, so they decide.
	if err != nil && !(errors.Is(err, zip.ErrInsecurePath) && zr != nil) {
		return "", 0, fmt.Errorf("read zip: %w", err)
	}
	for _, zf := range zr.File {
		if err := u.zipEntry(zf); err != nil {
			return "", 0, entryError(zf.Name, err)
		}
	}
	return hex.EncodeToString(d.h.Sum(nil)), size, nil
}

// zipEntry unpacks one zip entry.
func (u *unpacker) zipEntry(zf *zip.File) error {
	name := zipName(zf)
	rel, err := u.begin(name)
	if err != nil {
		return err
	}
	if zf.Flags&zipFlagEncrypted != 0 {
		return errors.New("encrypted entries are not supported")
	}
	if err := checkTime(zf.Modified); err != nil {
		return err
	}
	mode := zf.Mode()
	m := member{name: zf.Name, rel: rel, mode: zipPerm(zf, mode), mtime: zf.Modified}
	isDir := mode.IsDir() || strings.HasSuffix(name, "/")
	switch {
	case mode&fs.ModeSymlink != 0:
		if isDir {
			return errors.New("entry is marked both symlink and directory")
		}
		target, err := readZipLink(zf)
		if err != nil {
			return err
		}
		return u.symlink(m, target)
	case isDir:
		return u.mkdir(m)
	case mode.IsRegular():
		return u.zipFile(zf, m)
	}
	return fmt.Errorf("%s entries are not allowed in a bundle (only files, directories and symlinks)", zipTypeName(mode))
}

// zipName is the entry name as unzip sees it: names from MS-DOS hosts
// with no slash at all use backslashes as separators (PowerShell's
// Compress-Archive used to write such zips), and unzip converts them.
func zipName(zf *zip.File) string {
	if zf.CreatorVersion>>8 == zipHostFAT && !strings.Contains(zf.Name, "/") {
		return strings.ReplaceAll(zf.Name, `\`, "/")
	}
	return zf.Name
}

// zipPerm is the mode unzip -qo (CodeDeploy's command) gives an entry.
// Unix-made zips carry real modes. For others archive/zip derives 0666/0777
// from the MS-DOS attributes, and unzip then applies the umask. Without -K
// unzip clears setuid, setgid and sticky, so they are cleared here too: a zip
// extracted as root must not produce setuid-root programs that tar's
// ownership rules would never have allowed.
func zipPerm(zf *zip.File, mode fs.FileMode) fs.FileMode {
	perm := mode & permBits
	if host := zf.CreatorVersion >> 8; host != zipHostUnix && host != zipHostMac {
		perm &^= zipUmask
	}
	return perm &^ (fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

func zipTypeName(mode fs.FileMode) string {
	switch {
	case mode&fs.ModeCharDevice != 0:
		return "character device"
	case mode&fs.ModeDevice != 0:
		return "block device"
	case mode&fs.ModeNamedPipe != 0:
		return "FIFO"
	case mode&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

// readZipLink reads a symlink entry's target, which zip stores as content,
// never reading more than a target may be long.
func readZipLink(zf *zip.File) (string, error) {
	if zf.UncompressedSize64 > maxLinkTarget {
		return "", fmt.Errorf("symlink target is longer than %d bytes", maxLinkTarget)
	}
	rc, err := zf.Open()
	if err != nil {
		return "", zipOpenError(zf, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxLinkTarget+1))
	if err != nil {
		return "", zipReadError(zf, err)
	}
	if len(b) > maxLinkTarget {
		return "", fmt.Errorf("symlink target is longer than %d bytes", maxLinkTarget)
	}
	return string(b), nil
}

// zipFile writes a regular zip entry.
func (u *unpacker) zipFile(zf *zip.File, m member) error {
	claimed := int64(math.MaxInt64)
	if zf.UncompressedSize64 < math.MaxInt64 {
		claimed = int64(zf.UncompressedSize64)
	}
	// Refuse on the header's word before inflating anything; the bytes
	// really written are counted too, since the header may lie.
	if claimed > u.lim.MaxFileBytes {
		return fmt.Errorf("file of %d bytes (as its header declares) exceeds MaxFileBytes (%d bytes)", claimed, u.lim.MaxFileBytes)
	}
	rc, err := zf.Open()
	if err != nil {
		return zipOpenError(zf, err)
	}
	defer rc.Close()
	if err := u.file(m, claimed, rc); err != nil {
		return zipReadError(zf, err)
	}
	return nil
}

func zipOpenError(zf *zip.File, err error) error {
	if errors.Is(err, zip.ErrAlgorithm) {
		return fmt.Errorf("compression method %d is not supported (only store and deflate): %w", zf.Method, err)
	}
	return fmt.Errorf("open: %w", err)
}

// zipReadError explains archive/zip's terse errors: ErrFormat while
// reading content means more bytes came out than the header declared (the
// classic zip bomb lie), ErrChecksum means corrupt data.
func zipReadError(zf *zip.File, err error) error {
	switch {
	case errors.Is(err, zip.ErrFormat):
		return fmt.Errorf("content is longer than the %d bytes its header declares (zip bomb?): %w", zf.UncompressedSize64, err)
	case errors.Is(err, zip.ErrChecksum):
		return fmt.Errorf("content does not match its CRC-32 (corrupt zip): %w", err)
	}
	return err
}
