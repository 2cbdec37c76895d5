package testbed

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
)

// S3 answers that depend on the caller's policy or the bucket's region,
// which moto (one region, no policy evaluation by default) never gives.
//
// 403 for a missing key. GetObject API reference, Permissions
// (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html):
// "If the object you request doesn't exist, the error that Amazon S3
// returns depends on whether you also have the s3:ListBucket permission.
// If you have the s3:ListBucket permission on the bucket, Amazon S3
// returns an HTTP status code 404 Not Found error. If you don't have the
// s3:ListBucket permission, Amazon S3 returns an HTTP status code 403
// Access Denied error." (HeadObject says the same.)
//
// 301 for a bucket in another region. S3 answers a request signed for
// another region with 301 PermanentRedirect and the bucket's region in
// x-amz-bucket-region; aws-sdk-go-v2 does not follow it (it surfaces a
// ResponseError: aws/aws-sdk-go#356, open-component-model/ocm#2000).

var s3Scope = regexp.MustCompile(`Credential=[^/]+/[0-9]+/([^/]+)/s3/aws4_request`)

// S3WithoutListBucket makes bucket behave as for a caller that lacks
// s3:ListBucket on it: a GET or HEAD of a missing key answers 403
// AccessDenied, not 404. It returns a function that undoes it.
func (b *Bed) S3WithoutListBucket(bucket string) (undo func()) {
	return b.sim.setS3(func() { b.sim.s3NoList[bucket] = true }, func() { delete(b.sim.s3NoList, bucket) })
}

// S3BucketInRegion makes bucket live in region: requests signed for any
// other region answer 301 PermanentRedirect. It returns a function that
// undoes it.
func (b *Bed) S3BucketInRegion(bucket, region string) (undo func()) {
	return b.sim.setS3(func() { b.sim.s3Region[bucket] = region }, func() { delete(b.sim.s3Region, bucket) })
}

func (s *sim) setS3(do, undo func()) func() {
	s.mu.Lock()
	do()
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		undo()
		s.mu.Unlock()
	}
}

// s3Rules is the rules' hooks for an S3 request.
func (s *sim) s3Rules(op Op) *hooks {
	s.mu.Lock()
	on := len(s.s3NoList)+len(s.s3Region) > 0
	s.mu.Unlock()
	if op.Service != "s3" || !on {
		return nil // untouched requests stream through the proxy
	}
	return &hooks{Answer: s.s3Redirect, After: s.s3Denied}
}

// s3Bucket is the bucket of a path-style request ("" for none).
func s3Bucket(c *call) (bucket, key string) {
	p := strings.TrimPrefix(c.Req.URL.Path, "/")
	bucket, key, _ = strings.Cut(p, "/")
	return bucket, key
}

func s3Error(status int, header http.Header, kids ...*xnode) *reply {
	if header == nil {
		header = http.Header{}
	}
	header.Set("Content-Type", "application/xml")
	return &reply{Status: status, Header: header, Body: elem("Error", append(kids, leaf("RequestId", "testbed"))...).bytes()}
}

func (s *sim) s3Redirect(c *call) *reply {
	bucket, _ := s3Bucket(c)
	s.mu.Lock()
	region := s.s3Region[bucket]
	s.mu.Unlock()
	if region == "" {
		return nil
	}
	signed := ""
	if m := s3Scope.FindStringSubmatch(c.Req.Header.Get("Authorization")); m != nil {
		signed = m[1]
	}
	if signed == region {
		return nil
	}
	h := http.Header{}
	h.Set("x-amz-bucket-region", region)
	if c.Req.Method == http.MethodHead {
		return &reply{Status: http.StatusMovedPermanently, Header: h}
	}
	return s3Error(http.StatusMovedPermanently, h, leaf("Code", "PermanentRedirect"),
		leaf("Message", "The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint."),
		leaf("Endpoint", fmt.Sprintf("%s.s3.%s.amazonaws.com", bucket, region)), leaf("Bucket", bucket))
}

func (s *sim) s3Denied(c *call, r *reply) *reply {
	if r.Status != http.StatusNotFound || (c.Req.Method != http.MethodGet && c.Req.Method != http.MethodHead) {
		return r
	}
	bucket, key := s3Bucket(c)
	s.mu.Lock()
	denied := s.s3NoList[bucket]
	s.mu.Unlock()
	if !denied || key == "" || strings.Contains(string(r.Body), "NoSuchBucket") {
		return r
	}
	if c.Req.Method == http.MethodHead {
		return &reply{Status: http.StatusForbidden, Header: http.Header{}}
	}
	return s3Error(http.StatusForbidden, nil, leaf("Code", "AccessDenied"), leaf("Message", "Access Denied"))
}
