// Package bundle reads, hashes and safely unpacks CodeDeploy-compatible
// revision bundles: zip, tar and gzip-compressed tar, recognised by their
// content rather than their file name (CodeDeploy saves every bundle as
// bundle.tar whatever its format).
//
// Unpacking is built for hostile input. Nothing is ever written outside the
// destination: names with ".." or a leading "/", relative links that climb
// out of the tree, device nodes, names that are not UTF-8 and writes through
// an unpacked symlink are refused (a link to an absolute path is kept as
// data: nothing is written or read through it), and every byte written
// counts against caps, because archive headers can lie. The unpacked copy
// belongs to the agent with normalised modes whatever the headers say; the
// archive's modes and owners are recorded for Install. The work happens in
// a sibling temporary directory that is renamed into place only when
// everything succeeded, so a failed unpack leaves nothing behind.
package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Format is a bundle's archive format.
type Format string

// The formats CodeDeploy's BundleType allows, and so the ones unpacked here.
const (
	FormatZip Format = "zip"
	FormatTar Format = "tar"
	FormatTgz Format = "tgz"
)

// Default caps, applied to each zero field of Limits.
const (
	DefaultMaxTotalBytes int64 = 2 << 30
	DefaultMaxFiles            = 100000
	DefaultMaxFileBytes  int64 = 1 << 30
)

// Limits cap what one bundle may unpack to. Zero fields mean the default.
type Limits struct {
	MaxTotalBytes int64 // sum of regular file sizes actually written; default 2 GiB
	MaxFiles      int   // entries of any kind, implied parent directories included; default 100000
	MaxFileBytes  int64 // one regular file; default 1 GiB
}

func (l Limits) withDefaults() Limits {
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = DefaultMaxTotalBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = DefaultMaxFileBytes
	}
	return l
}

// Entry types as reported in Entry.Type.
const (
	TypeFile    = "file"
	TypeDir     = "dir"
	TypeSymlink = "symlink"
)

// Entry is one unpacked entry, relative to the revision root (after
// stripping). Mode and Owner are what the archive says, which is what
// Install gives the installed copy; the unpacked copy itself is root's
// with normalised modes (see releaseMode).
type Entry struct {
	Path       string      `json:"path"`                  // slash-separated, relative, cleaned
	Type       string      `json:"type"`                  // "file", "dir", "symlink"
	Mode       fs.FileMode `json:"mode"`                  // permission bits incl. setuid/setgid/sticky as fs.FileMode bits, as archived
	Size       int64       `json:"size"`                  // content bytes (files), target length (symlinks), 0 (dirs)
	SHA256     string      `json:"sha256,omitempty"`      // hex digest of file content (files only)
	LinkTarget string      `json:"link_target,omitempty"` // symlinks only
	ModTime    time.Time   `json:"mtime"`
	Owner      *Owner      `json:"owner,omitempty"` // tar entries: the header's owner
}

// Result describes a bundle that was unpacked.
type Result struct {
	Format        Format  `json:"format"`
	SHA256        string  `json:"sha256"` // hex sha256 of the bundle file's bytes
	Size          int64   `json:"size"`   // bundle size in bytes
	Files         int     `json:"files"`
	Dirs          int     `json:"dirs"`
	Symlinks      int     `json:"symlinks"`
	UnpackedBytes int64   `json:"unpacked_bytes"`         // regular-file bytes written (what MaxTotalBytes caps)
	StrippedDir   string  `json:"stripped_dir,omitempty"` // the wrapping top dir removed, if any
	Entries       []Entry `json:"entries"`                // sorted by Path
}

// headerPeek is how much of the bundle DetectFormat sees. More than the 512
// bytes of a tar header so that a gzip stream can usually be inflated far
// enough to see the tar header inside it.
const headerPeek = 64 << 10

// UnpackFile unpacks the bundle at path into dest, which must not exist yet.
// It works in a sibling temporary directory and renames it to dest only on
// success; on any error the temporary directory is removed and dest does not
// exist: nothing outside it was touched.
func UnpackFile(ctx context.Context, path, dest string, lim Limits) (*Result, error) {
	res, err := unpackFile(ctx, path, dest, lim.withDefaults())
	if err != nil {
		return nil, fmt.Errorf("bundle: unpack %s: %w", filepath.Base(path), err)
	}
	return res, nil
}

func unpackFile(ctx context.Context, path, dest string, lim Limits) (res *Result, err error) {
	if dest == "" {
		return nil, errors.New("empty destination path")
	}
	dest = filepath.Clean(dest)
	if _, err := os.Lstat(dest); err == nil {
		return nil, fmt.Errorf("destination %s already exists", dest)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("check destination: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	head := make([]byte, headerPeek)
	n, err := f.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read header: %w", err)
	}
	format, err := detectFormat(head[:n])
	if err != nil {
		return nil, err
	}

	// The temporary directory is a sibling of dest so the final rename stays
	// on one file system, and hidden so that nobody mistakes it for a revision.
	tmp, err := os.MkdirTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".unpacking-")
	if err != nil {
		return nil, fmt.Errorf("create temporary directory: %w", err)
	}
	done := false
	defer func() {
		if !done {
			// The unpack error matters more than a cleanup failure, which
			// cannot happen short of someone else meddling with tmp.
			_ = removeTree(tmp)
		}
	}()

	u := newUnpacker(ctx, tmp, lim, format)
	var sum string
	var size int64
	switch format {
	case FormatZip:
		sum, size, err = u.unpackZip(f)
	default:
		sum, size, err = u.unpackTar(f, format == FormatTgz)
	}
	if err != nil {
		return nil, err
	}
	res, err = u.finish(dest)
	if err != nil {
		return nil, err
	}
	done = true
	res.Format = format
	res.SHA256 = sum
	res.Size = size
	return res, nil
}
