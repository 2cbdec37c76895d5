package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/rollback-agent/rollback-agent/internal/config"
)

// getObject is GetObject as the agent needs it from S3:
//
//   - A bucket in another region answers 301 PermanentRedirect with the
//     bucket's region in x-amz-bucket-region, which aws-sdk-go-v2 does
//     not follow (aws/aws-sdk-go#356): the request is made once more,
//     signed for that region.
//   - A 403 may be a missing grant, or a missing object: without
//     s3:ListBucket S3 answers 403, not 404, for a key that does not
//     exist (GetObject API reference, Permissions). The error says both,
//     naming the grants, so an operator is not sent hunting for a policy
//     when the object was never uploaded.
func getObject(ctx context.Context, client *s3.Client, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	out, err := client.GetObject(ctx, in, opts...)
	if region := redirectRegion(err); region != "" {
		out, err = client.GetObject(ctx, in, append(opts, func(o *s3.Options) { o.Region = region })...)
		if err != nil {
			err = fmt.Errorf("%w (bucket %s is in region %s)", err, aws.ToString(in.Bucket), region)
		}
	}
	if err != nil {
		return nil, explainS3(err, aws.ToString(in.Bucket), aws.ToString(in.Key))
	}
	return out, nil
}

// redirectRegion is the region of a 301 answer ("" for anything else).
func redirectRegion(err error) string {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusMovedPermanently && re.Response != nil {
		return re.Response.Header.Get("x-amz-bucket-region")
	}
	return ""
}

// explainS3 says what a 403 or a 301 from S3 means for this object.
func explainS3(err error, bucket, key string) error {
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) {
		return err
	}
	switch re.HTTPStatusCode() {
	case http.StatusForbidden:
		return fmt.Errorf("%w: access denied to s3://%s/%s — either the instance role lacks s3:GetObject on arn:aws:s3:::%s/%s, "+
			"or the object does not exist and the role lacks s3:ListBucket on arn:aws:s3:::%s (without that grant S3 answers 403 for a missing object, not 404)",
			err, bucket, key, bucket, key, bucket)
	case http.StatusMovedPermanently:
		return fmt.Errorf("%w: bucket %s is in another region and S3 did not say which", err, bucket)
	}
	return err
}

// A GET whose body trickles (one byte every few seconds) would hold its
// reader forever: the channel's watcher was stuck in one for good (issue
// 17 item 13). Every download of a bundle is bounded twice: no byte for
// the idle timeout ends it, and so does taking longer than the idle
// timeout plus its size at the minimum rate.

// downloadBounds are limits.download_idle_timeout and download_min_rate.
type downloadBounds struct {
	idle    time.Duration
	minRate int64
}

func boundsOf(l config.Limits) downloadBounds {
	b := downloadBounds{idle: l.DownloadIdleTimeout, minRate: int64(l.DownloadMinRate)}
	d := config.Default().Limits
	if b.idle <= 0 {
		b.idle = d.DownloadIdleTimeout
	}
	if b.minRate <= 0 {
		b.minRate = int64(d.DownloadMinRate)
	}
	return b
}

// deadline is how long a download of size bytes may take in all.
func (b downloadBounds) deadline(size int64) time.Duration {
	return b.idle + time.Duration(float64(max(size, 0))/float64(b.minRate)*float64(time.Second))
}

// boundedGet is getObject with the body bounded: the request's context
// is cancelled, and the body closed, when the answer stalls (before its
// headers too) or is too slow; the error then says which. size is what
// the caller expects (the manifest's), or -1 to take the object's
// Content-Length.
func boundedGet(ctx context.Context, client *s3.Client, in *s3.GetObjectInput, b downloadBounds, size int64, opts ...func(*s3.Options)) (*s3.GetObjectOutput, *boundedBody, error) {
	dctx, cancel := context.WithCancelCause(ctx)
	g := &boundedBody{ctx: dctx, cancel: cancel, restart: b.idle, url: fmt.Sprintf("s3://%s/%s", aws.ToString(in.Bucket), aws.ToString(in.Key))}
	g.idle = time.AfterFunc(b.idle, func() {
		g.fail(fmt.Errorf("%w: no byte of %s for %s (limits.download_idle_timeout), after %d bytes", ErrStalled, g.url, b.idle, g.read.Load()))
	})
	if size >= 0 {
		g.arm(b, size)
	}
	out, err := getObject(dctx, client, in, opts...)
	if err != nil {
		if cause := context.Cause(dctx); errors.Is(cause, ErrStalled) {
			err = cause
		}
		g.Close()
		return nil, nil, err
	}
	g.mu.Lock()
	g.body = out.Body
	failed := g.failed
	g.mu.Unlock()
	if failed {
		out.Body.Close()
	}
	if size < 0 {
		g.arm(b, aws.ToInt64(out.ContentLength))
	}
	g.idle.Reset(b.idle)
	return out, g, nil
}

// ErrStalled is a download ended by its idle timeout or its deadline.
var ErrStalled = errors.New("S3 download too slow")

// boundedBody is a GetObject body under an idle timeout and a deadline.
type boundedBody struct {
	ctx     context.Context
	cancel  context.CancelCauseFunc
	url     string
	restart time.Duration
	read    atomic.Int64

	mu          sync.Mutex
	body        io.ReadCloser
	failed      bool
	idle, total *time.Timer
}

// arm starts the deadline of a download of size bytes.
func (g *boundedBody) arm(b downloadBounds, size int64) {
	total := b.deadline(size)
	t := time.AfterFunc(total, func() {
		g.fail(fmt.Errorf("%w: %s not downloaded within %s (limits.download_idle_timeout plus %d bytes at limits.download_min_rate %d bytes/s), after %d bytes",
			ErrStalled, g.url, total.Round(time.Second), size, b.minRate, g.read.Load()))
	})
	g.mu.Lock()
	g.total = t
	g.mu.Unlock()
}

func (g *boundedBody) fail(why error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failed {
		return
	}
	g.failed = true
	g.cancel(why)
	if g.body != nil {
		g.body.Close() // ends a Read blocked on the connection
	}
}

func (g *boundedBody) Read(p []byte) (int, error) {
	if cause := context.Cause(g.ctx); cause != nil {
		return 0, cause
	}
	n, err := g.body.Read(p)
	if n > 0 {
		g.read.Add(int64(n))
		g.idle.Reset(g.restart)
	}
	if err != nil && err != io.EOF {
		if cause := context.Cause(g.ctx); cause != nil {
			return n, cause
		}
	}
	return n, err
}

// Close stops the timers and releases the request.
func (g *boundedBody) Close() error {
	g.mu.Lock()
	g.failed = true // the timers have nothing left to end
	body, total := g.body, g.total
	g.mu.Unlock()
	g.idle.Stop()
	if total != nil {
		total.Stop()
	}
	var err error
	if body != nil {
		err = body.Close()
	}
	g.cancel(nil)
	return err
}
