package bundle

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"math"
	"strings"
	"unicode/utf8"
)

// maxTarTrailer bounds the inflated data read after a tgz's end-of-archive
// marker. It must be read (the gzip CRC at the end is the only check that the
// content inflated correctly), but a few records of padding is all a real tar
// has there, and an endless stream of zeros would be a cheap way to keep the
// agent busy.
const maxTarTrailer = 16 << 20

// Mode bits as a tar header stores them (the values of the C macros).
const (
	tarSetuid = 0o4000
	tarSetgid = 0o2000
	tarSticky = 0o1000
)

// digest hashes and counts what flows through the io.TeeReader reading the
// bundle, so the SHA256 and size cover the file as read, in one pass.
type digest struct {
	h hash.Hash
	n int64
}

func (d *digest) Write(p []byte) (int, error) {
	d.n += int64(len(p))
	return d.h.Write(p)
}

// unpackTar reads a tar (or, with gz, a tgz) strictly sequentially from f:
// file → TeeReader(sha256) → bufio → [gzip] → tar. It returns the hex sha256
// and size of the whole file, drained to EOF so trailing bytes are covered.
func (u *unpacker) unpackTar(f io.Reader, gz bool) (string, int64, error) {
	d := &digest{h: sha256.New()}
	raw := bufio.NewReaderSize(io.TeeReader(f, d), copyBufSize)
	var src io.Reader = raw
	if gz {
		zr, err := gzip.NewReader(raw)
		if err != nil {
			return "", 0, fmt.Errorf("read gzip: %w", err)
		}
		zr.Multistream(false)
		// DetectFormat may only have seen part of the stream; look at the
		// real first inflated block before handing it to archive/tar.
		peek := bufio.NewReader(&gzipMembers{src: raw, zr: zr})
		blk, err := peek.Peek(tarBlock)
		if err != nil && !errors.Is(err, io.EOF) {
			return "", 0, fmt.Errorf("read gzip: %w", err)
		}
		if len(blk) == 0 {
			return "", 0, errors.New("not a tar.gz bundle: found gzip data that inflates to nothing")
		}
		if !isTarHeader(blk) {
			return "", 0, fmt.Errorf("not a tar.gz bundle: found gzip data holding %s, not a tar archive", describe(blk))
		}
		src = peek
	}

	tr := tar.NewReader(src)
	last := ""
	for {
		if err := u.ctx.Err(); err != nil {
			return "", 0, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		// With GODEBUG=tarinsecurepath=0 archive/tar flags names it thinks
		// unsafe but still returns them; our own checks are stricter and
		// name the entry, so they decide.
		if err != nil && !(errors.Is(err, tar.ErrInsecurePath) && hdr != nil) {
			if last == "" {
				return "", 0, fmt.Errorf("read tar: %w", err)
			}
			return "", 0, fmt.Errorf("read tar after entry %q: %w", last, err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			// Archive-wide metadata (GitHub tarballs carry the commit id in
			// one); it creates nothing.
			continue
		}
		if err := u.tarEntry(hdr, tr); err != nil {
			return "", 0, entryError(hdr.Name, err)
		}
		last = hdr.Name
	}

	if gz {
		// Inflate to the end: gzip's CRC and length are checked only there.
		n, err := u.drain(io.LimitReader(src, maxTarTrailer+1))
		if err != nil {
			return "", 0, fmt.Errorf("read gzip after the tar archive: %w", err)
		}
		if n > maxTarTrailer {
			return "", 0, fmt.Errorf("more than %d bytes of data after the end of the tar archive", maxTarTrailer)
		}
	}
	// Whatever follows (tar record padding, bytes after the last gzip
	// member) still belongs to the file, and so to its SHA256.
	if _, err := u.drain(raw); err != nil {
		return "", 0, fmt.Errorf("read bundle: %w", err)
	}
	return hex.EncodeToString(d.h.Sum(nil)), d.n, nil
}

// drain reads r to EOF through the shared buffer, checking for
// cancellation between chunks.
func (u *unpacker) drain(r io.Reader) (int64, error) {
	var n int64
	for {
		if err := u.ctx.Err(); err != nil {
			return n, err
		}
		k, err := r.Read(u.buf)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// gzipMembers inflates concatenated gzip members one after the other, as
// gzip -d does, but stops at trailing bytes that do not start a new member
// instead of failing on them: they are outside the compressed data and gzip
// itself only warns about them. src must be the bufio.Reader the gzip.Reader
// reads from, so that nothing past a member's end has been consumed.
type gzipMembers struct {
	src *bufio.Reader
	zr  *gzip.Reader
}

func (g *gzipMembers) Read(p []byte) (int, error) {
	for {
		n, err := g.zr.Read(p)
		if err != io.EOF {
			return n, err
		}
		if n > 0 {
			return n, nil
		}
		next, perr := g.src.Peek(2)
		if perr != nil || next[0] != 0x1f || next[1] != 0x8b {
			return 0, io.EOF
		}
		if err := g.zr.Reset(g.src); err != nil {
			return 0, err
		}
		g.zr.Multistream(false)
	}
}

// tarEntry unpacks one tar header's entry.
func (u *unpacker) tarEntry(hdr *tar.Header, tr io.Reader) error {
	rel, err := u.begin(hdr.Name)
	if err != nil {
		return err
	}
	if err := checkTime(hdr.ModTime); err != nil {
		return err
	}
	m := member{name: hdr.Name, rel: rel, mode: tarMode(hdr.Mode), mtime: hdr.ModTime}
	if m.own, err = tarOwner(hdr); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		// GNU tar, like BSD tar, takes a "file" whose name ends in a slash
		// to be a directory.
		if strings.HasSuffix(hdr.Name, "/") {
			return u.mkdir(m)
		}
		return u.file(m, hdr.Size, tr)
	case tar.TypeDir:
		return u.mkdir(m)
	case tar.TypeSymlink:
		return u.symlink(m, hdr.Linkname)
	case tar.TypeLink:
		return u.hardlink(m, hdr.Linkname)
	case tar.TypeChar:
		return errors.New("character devices are not allowed in a bundle")
	case tar.TypeBlock:
		return errors.New("block devices are not allowed in a bundle")
	case tar.TypeFifo:
		return errors.New("FIFOs are not allowed in a bundle")
	}
	return fmt.Errorf("entry type %q is not allowed in a bundle (only files, directories, symlinks and hard links)", hdr.Typeflag)
}

// tarMode keeps the permission and setuid/setgid/sticky bits of a header's
// mode, as fs.FileMode bits.
func tarMode(m int64) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&tarSetuid != 0 {
		mode |= fs.ModeSetuid
	}
	if m&tarSetgid != 0 {
		mode |= fs.ModeSetgid
	}
	if m&tarSticky != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// tarOwner is the header's owner, as tar -xp applies it as root (by name
// first). Values chown cannot take are refused; -1 in particular would
// silently mean "leave unchanged". Names must be valid user names' bytes:
// UTF-8 without NUL, ':' or newline, which could not name an account.
func tarOwner(hdr *tar.Header) (*Owner, error) {
	const maxID = math.MaxUint32 - 1
	if hdr.Uid < 0 || int64(hdr.Uid) > maxID || hdr.Gid < 0 || int64(hdr.Gid) > maxID {
		return nil, fmt.Errorf("owner %d:%d is out of range", hdr.Uid, hdr.Gid)
	}
	for _, n := range []string{hdr.Uname, hdr.Gname} {
		if !utf8.ValidString(n) || strings.ContainsAny(n, "\x00:\n/") || len(n) > maxOwnerName {
			return nil, fmt.Errorf("owner name %q is not a user or group name", n)
		}
	}
	return &Owner{UID: hdr.Uid, GID: hdr.Gid, User: hdr.Uname, Group: hdr.Gname}, nil
}

// maxOwnerName is well above what useradd allows (32) and keeps a hostile
// header's name out of the release record.
const maxOwnerName = 256
