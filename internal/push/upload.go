package push

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	tm "github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// multipartThreshold is where uploads switch to multipart: the transfer
// manager's part size, so a bundle of two parts or more goes in parallel.
const multipartThreshold = 8 << 20

// uploaded says how a file went up.
type uploaded struct {
	etag      string
	multipart bool
}

// uploadFile sends a bundle with the transfer manager: multipart (parts
// in parallel, retried one by one) above the threshold, one PUT below.
func uploadFile(ctx context.Context, client *s3.Client, bucket, key, path string, size int64, progress io.Writer) (*uploaded, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("upload s3://%s/%s: open %s: %w", bucket, key, path, err)
	}
	defer f.Close()
	mgr := tm.New(client, func(o *tm.Options) {
		o.MultipartUploadThreshold = multipartThreshold
		o.PartSizeBytes = multipartThreshold
		if progress != nil {
			o.ObjectProgressListeners.Register(&progressBar{w: progress, name: "s3://" + bucket + "/" + key})
		}
	})
	out, err := mgr.UploadObject(ctx, &tm.UploadObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: f, ContentType: aws.String("application/gzip"),
	})
	if err != nil {
		return nil, fmt.Errorf("upload %s (%d bytes) to s3://%s/%s: %w", path, size, bucket, key, err)
	}
	return &uploaded{etag: aws.ToString(out.ETag), multipart: out.UploadID != nil && *out.UploadID != ""}, nil
}

// progressBar draws one line, rewritten in place, on a terminal.
type progressBar struct {
	w    io.Writer
	name string
	mu   sync.Mutex
	last int
}

func (p *progressBar) OnObjectBytesTransferred(_ context.Context, e *tm.ObjectBytesTransferredEvent) {
	p.draw(e.BytesTransferred, e.TotalBytes)
}

func (p *progressBar) OnObjectTransferComplete(_ context.Context, e *tm.ObjectTransferCompleteEvent) {
	p.draw(e.TotalBytes, e.TotalBytes)
	fmt.Fprintln(p.w)
}

func (p *progressBar) OnObjectTransferFailed(context.Context, *tm.ObjectTransferFailedEvent) {
	fmt.Fprintln(p.w)
}

func (p *progressBar) draw(done, total int64) {
	if total <= 0 {
		return
	}
	pct := int(done * 100 / total)
	p.mu.Lock()
	defer p.mu.Unlock()
	if pct == p.last && done != total {
		return
	}
	p.last = pct
	const width = 30
	n := pct * width / 100
	bar := bytes.Repeat([]byte("#"), n)
	bar = append(bar, bytes.Repeat([]byte("."), width-n)...)
	fmt.Fprintf(p.w, "\r\033[Kupload [%s] %3d%% %.1f/%.1f MiB %s", bar, pct, float64(done)/(1<<20), float64(total)/(1<<20), p.name)
}

// putSmall writes a small document in one PUT. ifMatch makes it
// conditional on the current ETag; create makes it conditional on the
// object not existing yet (If-None-Match: *).
func putSmall(ctx context.Context, client *s3.Client, bucket, key string, body []byte, ifMatch string, create bool) error {
	in := &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))), ContentType: aws.String(contentType(key)),
	}
	switch {
	case ifMatch != "":
		in.IfMatch = aws.String(ifMatch)
	case create:
		in.IfNoneMatch = aws.String("*")
	}
	if _, err := client.PutObject(ctx, in); err != nil {
		if isPreconditionFailed(err) {
			return fmt.Errorf("PUT s3://%s/%s: %w: someone else changed it at the same time; run the command again", bucket, key, errConflict)
		}
		return fmt.Errorf("PUT s3://%s/%s: %w", bucket, key, err)
	}
	return nil
}

var errConflict = errors.New("conflicting write")

func contentType(key string) string {
	if bytes.HasSuffix([]byte(key), []byte(".json")) {
		return "application/json"
	}
	return "text/plain"
}

func isPreconditionFailed(err error) bool {
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusPreconditionFailed
}

// getSmall reads a small document and its ETag; found is false for a
// missing object.
func getSmall(ctx context.Context, client *s3.Client, bucket, key string) (body []byte, etag string, found bool, err error) {
	out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if isNotFound(err) {
		return nil, "", false, nil
	}
	if err != nil {
		return nil, "", false, fmt.Errorf("GET s3://%s/%s: %w", bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, 1<<20))
	if err != nil {
		return nil, "", false, fmt.Errorf("GET s3://%s/%s: read: %w", bucket, key, err)
	}
	return b, aws.ToString(out.ETag), true, nil
}

// objectExists is a HEAD.
func objectExists(ctx context.Context, client *s3.Client, bucket, key string) (bool, error) {
	_, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("HEAD s3://%s/%s: %w", bucket, key, err)
	}
	return true, nil
}

func isNotFound(err error) bool {
	if err == nil {
		return false
	}
	var nsk *s3types.NoSuchKey
	var nf *s3types.NotFound
	var re *smithyhttp.ResponseError
	return errors.As(err, &nsk) || errors.As(err, &nf) || (errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound)
}
