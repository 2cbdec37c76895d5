package source

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// ChannelPoll is the one request a channel poll makes (getDoc): a GET of
// the channel document, conditional on etag when the agent has one.
// changed is false when S3 answered 304 Not Modified (no body). It is
// exported for make bench (B7), which measures the agent's own request
// from a thousand simulated agents rather than a copy of it.
func ChannelPoll(ctx context.Context, client *s3.Client, bucket, key, etag string) (body []byte, newETag string, changed bool, err error) {
	body, newETag, err = getDoc(ctx, client, bucket, key, etag)
	if errors.Is(err, errNotModified) {
		return nil, newETag, false, nil
	}
	if err != nil {
		return nil, "", false, err
	}
	return body, newETag, true, nil
}
