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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/bundle"
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
}

// Fetch writes the bundle of src to dst and returns its sha256 and size.
func (f *Fetcher) Fetch(ctx context.Context, src *api.Source, dst string) (string, int64, error) {
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", 0, fmt.Errorf("fetch: create %s: %w", dst, err)
	}
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(out, h)}
	switch src.Type {
	case TypeFile, TypeInbox:
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
	if err != nil {
		os.Remove(dst)
		return "", 0, fmt.Errorf("fetch %s: %w", src.Location, err)
	}
	return hex.EncodeToString(h.Sum(nil)), cw.n, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
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

func copyFile(ctx context.Context, path string, w io.Writer) error {
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
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
	src.ETag = strings.Trim(aws.ToString(out.ETag), `"`)
	if out.VersionId != nil && *out.VersionId != "null" {
		src.VersionID = *out.VersionId
	}
	if _, err := io.Copy(w, ctxReader{ctx, out.Body}); err != nil {
		return fmt.Errorf("S3 GetObject s3://%s/%s: read body: %w", src.Bucket, src.Key, err)
	}
	return nil
}
