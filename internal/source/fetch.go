// Package source is where deployments come from: a bundle file or a
// directory named in an API request, an s3:// object, the inbox folder
// (fsnotify) and, later, the S3 release channel. It also brings a
// deployment's bundle to a local file for the engine.
package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/bundle"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// Source types.
const (
	TypeFile    = "file"
	TypeDir     = "dir"
	TypeS3      = "s3"
	TypeInbox   = "inbox"
	TypeChannel = "channel"
)

// Parse turns what a user asked to deploy into a source: s3://bucket/key
// (with an optional ?versionId=), or an absolute path to a bundle file or
// a directory, as seen by the agent.
func Parse(s string) (api.Source, error) {
	if strings.HasPrefix(s, "s3://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || strings.Trim(u.Path, "/") == "" {
			return api.Source{}, fmt.Errorf("source %q: want s3://bucket/key", s)
		}
		return api.Source{Type: TypeS3, Location: s, Bucket: u.Host, Key: strings.TrimPrefix(u.Path, "/"), VersionID: u.Query().Get("versionId")}, nil
	}
	if !filepath.IsAbs(s) {
		return api.Source{}, fmt.Errorf("source %q: want an absolute path or s3://bucket/key", s)
	}
	fi, err := os.Stat(s)
	if err != nil {
		return api.Source{}, fmt.Errorf("source %s: %w", s, err)
	}
	switch {
	case fi.IsDir():
		return api.Source{Type: TypeDir, Location: filepath.Clean(s)}, nil
	case fi.Mode().IsRegular():
		return api.Source{Type: TypeFile, Location: filepath.Clean(s)}, nil
	}
	return api.Source{}, fmt.Errorf("source %s: neither a file nor a directory", s)
}

// Fetcher implements engine.Fetcher.
type Fetcher struct {
	// S3 returns the client for s3:// sources (created lazily: a host that
	// never deploys from S3 needs no S3 permissions).
	S3 func(ctx context.Context) (*s3.Client, error)
	// Limits are the current limits.* (nil: none); a bundle larger than
	// MaxBundleBytes of them is refused when the copy reaches that size.
	Limits func() config.Limits
	// Keys are trust.* as they are now (the daemon's one Keyring, which
	// a reload updates); nil trusts no key and requires no signature.
	Keys *release.Keyring
	// App is the agent's application, which a manifest must name.
	App func() string
}

// perEntryOverhead is what an archive may spend on one entry besides its
// content, generously: a tar header and its padding, a long name's PAX
// record, a zip's local and central headers with the name twice.
const perEntryOverhead = 8 << 10

// MaxBundleBytes is the largest bundle (as fetched, before unpacking)
// the limits can allow: every entry at its largest plus its headers.
// Anything bigger cannot unpack within the limits, so fetching stops
// there rather than filling the state disk first.
func MaxBundleBytes(l config.Limits) int64 {
	return int64(l.MaxUnpackedBytes) + int64(l.MaxFiles)*perEntryOverhead + 1<<20
}

// ErrTooLarge is a bundle over MaxBundleBytes.
var ErrTooLarge = errors.New("bundle too large")

// Fetch writes the bundle of src to dst and returns its sha256 and size.
// First the source must meet the trust policy as it is now (admit: a
// verified manifest, or an unsigned source where none is required or root
// allowed it). The digest is taken of the bytes as they are copied into
// dst, the only copy the engine unpacks; when a manifest (or the inbox)
// pinned a digest, other bytes are refused.
func (f *Fetcher) Fetch(ctx context.Context, src *api.Source, dst string) (string, int64, error) {
	if err := f.admit(ctx, src); err != nil {
		return "", 0, fmt.Errorf("fetch %s: %w", src.Location, err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", 0, fmt.Errorf("fetch: create %s: %w", dst, err)
	}
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(out, h), max: -1}
	if f.Limits != nil {
		cw.max, cw.why = limitOf(f.Limits())
	}
	if src.SHA256 != "" && src.Size > 0 && (cw.max < 0 || src.Size < cw.max) {
		// One byte more than the pinned size is enough to know it is wrong.
		cw.max, cw.why = src.Size+1, fmt.Sprintf("it is not the bundle that was verified (%d bytes, sha256 %s): tampered or replaced", src.Size, src.SHA256)
	}
	switch src.Type {
	case TypeInbox:
		err = copyInbox(ctx, src.Location, cw)
	case TypeFile:
		err = copyFile(ctx, src.Location, cw)
	case TypeDir:
		err = bundle.WriteTarGz(ctx, src.Location, cw)
	case TypeS3, TypeChannel:
		err = f.fetchS3(ctx, src, cw)
	default:
		err = fmt.Errorf("unknown source type %q", src.Type)
	}
	if cerr := out.Close(); err == nil && cerr != nil {
		err = cerr
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err == nil && src.SHA256 != "" && (sum != src.SHA256 || cw.n != src.Size) {
		err = fmt.Errorf("the bundle has sha256 %s (%d bytes), but the one verified has %s (%d bytes): tampered or replaced after it was checked, refused", sum, cw.n, src.SHA256, src.Size)
	}
	if err != nil {
		os.Remove(dst)
		return "", 0, fmt.Errorf("fetch %s: %w", src.Location, err)
	}
	return sum, cw.n, nil
}

func limitOf(l config.Limits) (int64, string) {
	return MaxBundleBytes(l), fmt.Sprintf("limits.max_unpacked_bytes (%d bytes) with limits.max_files %d allow no bundle larger than %d bytes",
		int64(l.MaxUnpackedBytes), l.MaxFiles, MaxBundleBytes(l))
}

// countingWriter counts what passes and refuses to pass more than max
// bytes (max < 0: no limit), so a copy stops at the limit.
type countingWriter struct {
	w   io.Writer
	n   int64
	max int64
	why string
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.max >= 0 && c.n+int64(len(p)) > c.max {
		return 0, fmt.Errorf("%w: %s; stopped reading there", ErrTooLarge, c.why)
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// copyInbox copies a bundle from the inbox's processing/ without
// following a link on the way there: whoever may write the inbox could
// have put one where processing/ was. (The digest pinned when the bundle
// was taken is the guarantee; this keeps the agent from reading files it
// was pointed at.)
func copyInbox(ctx context.Context, path string, w io.Writer) error {
	sub := filepath.Dir(path)
	inbox, err := os.Open(filepath.Dir(sub))
	if err != nil {
		return err
	}
	defer inbox.Close()
	fd, err := unix.Openat(int(inbox.Fd()), filepath.Base(sub), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", sub, err)
	}
	dir := os.NewFile(uintptr(fd), sub)
	defer dir.Close()
	in, err := openAt(dir, filepath.Base(path))
	if err != nil {
		return err
	}
	defer in.Close()
	_, err = io.Copy(w, ctxReader{ctx, in})
	return err
}

// ctxReader stops a long copy when the context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// copyFile copies a regular file: a FIFO or a device named as a bundle
// (a path is whatever the request says) is refused before it is read.
func copyFile(ctx context.Context, path string, w io.Writer) error {
	in, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	_, err = io.Copy(w, ctxReader{ctx, in})
	return err
}

func (f *Fetcher) fetchS3(ctx context.Context, src *api.Source, w io.Writer) error {
	if f.S3 == nil {
		return errors.New("no S3 client configured")
	}
	client, err := f.S3(ctx)
	if err != nil {
		return err
	}
	in := &s3.GetObjectInput{Bucket: aws.String(src.Bucket), Key: aws.String(src.Key)}
	if src.VersionID != "" {
		in.VersionId = aws.String(src.VersionID)
	}
	out, err := getObject(ctx, client, in)
	if err != nil {
		return fmt.Errorf("S3 GetObject s3://%s/%s: %w", src.Bucket, src.Key, err)
	}
	defer out.Body.Close()
	if cw, ok := w.(*countingWriter); ok && cw.max >= 0 && aws.ToInt64(out.ContentLength) > cw.max {
		return fmt.Errorf("s3://%s/%s is %d bytes: %w: %s; nothing of it was read", src.Bucket, src.Key, aws.ToInt64(out.ContentLength), ErrTooLarge, cw.why)
	}
	src.ETag = strings.Trim(aws.ToString(out.ETag), `"`)
	if out.VersionId != nil && *out.VersionId != "null" {
		src.VersionID = *out.VersionId
	}
	if _, err := io.Copy(w, ctxReader{ctx, out.Body}); err != nil {
		return fmt.Errorf("S3 GetObject s3://%s/%s: read body: %w", src.Bucket, src.Key, err)
	}
	return nil
}
