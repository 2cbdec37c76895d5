package fleet

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// ReaderAPI is what reading the fleet needs of S3: s3:ListBucket on the
// bucket (under the prefix) and s3:GetObject on the documents, both in the
// workstation policy.
type ReaderAPI interface {
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// readers bounds the GETs in flight: a fleet of thousands is read in
// seconds without opening thousands of connections.
const readers = 16

// Read lists and reads every host document of app. A document that cannot
// be read or parsed is an entry with its problem; a listing that fails is
// an error.
func Read(ctx context.Context, c ReaderAPI, bucket, prefix, app string) ([]Entry, error) {
	if err := release.CheckName("--app", app); err != nil {
		return nil, err
	}
	l := release.NewLayout(bucket, prefix, app)
	dir := HostsKey(l)
	var keys []string
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(dir)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", l.URL(dir), err)
		}
		for _, o := range page.Contents {
			if k := aws.ToString(o.Key); strings.HasSuffix(k, ".json") && !strings.Contains(strings.TrimPrefix(k, dir), "/") {
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	out := make([]Entry, len(keys))
	var wg sync.WaitGroup
	sem := make(chan struct{}, readers)
	for i, k := range keys {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = readOne(ctx, c, l, k)
		}()
	}
	wg.Wait()
	return out, nil
}

func readOne(ctx context.Context, c ReaderAPI, l release.Layout, key string) Entry {
	e := Entry{Key: key}
	res, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(l.Bucket), Key: aws.String(key)})
	if err != nil {
		e.Problem = fmt.Sprintf("GET %s: %v", l.URL(key), err)
		return e
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, MaxDocBytes+1))
	if err != nil {
		e.Problem = fmt.Sprintf("GET %s: read: %v", l.URL(key), err)
		return e
	}
	d, err := Parse(b)
	if err != nil {
		e.Problem = err.Error()
		return e
	}
	e.Doc = d
	return e
}
