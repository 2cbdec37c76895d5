package testbed

import (
	"bytes"
	"errors"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/codedeploy"
	cdtypes "github.com/aws/aws-sdk-go-v2/service/codedeploy/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

func codedeployAt(url string) *codedeploy.Client {
	return codedeploy.New(codedeploy.Options{Region: Region, BaseEndpoint: aws.String(url),
		Credentials: credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""), RetryMaxAttempts: 1})
}

func s3At(url string) *s3.Client {
	return s3.New(s3.Options{Region: Region, BaseEndpoint: aws.String(url), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, "")})
}

func revision(bucket string) *cdtypes.RevisionLocation {
	return &cdtypes.RevisionLocation{RevisionType: cdtypes.RevisionLocationTypeS3,
		S3Location: &cdtypes.S3Location{Bucket: aws.String(bucket), Key: aws.String("k/bundle.tar.gz"), BundleType: cdtypes.BundleTypeTarGZip}}
}

// RegisterApplicationRevision: moto 5.2.1 answers 500 (the gap is still
// there); through the proxy it is answered, with CodeDeploy's error for an
// unknown application.
func TestRegisterApplicationRevisionGap(t *testing.T) {
	ctx := testCtx(t)
	direct, proxied := codedeployAt(bed.Moto.URL), codedeployAt(bed.AWS.URL)
	if _, err := direct.CreateApplication(ctx, &codedeploy.CreateApplicationInput{ApplicationName: aws.String("gap-app")}); err != nil {
		t.Fatal(err)
	}
	in := &codedeploy.RegisterApplicationRevisionInput{ApplicationName: aws.String("gap-app"), Revision: revision("b")}
	_, err := direct.RegisterApplicationRevision(ctx, in)
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusInternalServerError {
		t.Errorf("moto now answers RegisterApplicationRevision (%v): drop the route from s3gaps.go", err)
	}
	if _, err := proxied.RegisterApplicationRevision(ctx, in); err != nil {
		t.Errorf("through the proxy: %v", err)
	}
	var nf *cdtypes.ApplicationDoesNotExistException
	if _, err := proxied.RegisterApplicationRevision(ctx, &codedeploy.RegisterApplicationRevisionInput{ApplicationName: aws.String("no-such-app"), Revision: revision("b")}); !errors.As(err, &nf) {
		t.Errorf("unknown application: %v", err)
	}
	var inv *cdtypes.InvalidRevisionException
	if _, err := proxied.RegisterApplicationRevision(ctx, &codedeploy.RegisterApplicationRevisionInput{ApplicationName: aws.String("gap-app"), Revision: &cdtypes.RevisionLocation{RevisionType: cdtypes.RevisionLocationTypeS3}}); !errors.As(err, &inv) {
		t.Errorf("revision without a location: %v", err)
	}
}

// What the release channel relies on from moto's S3 works unpatched: a
// conditional GET is 304 without a body, conditional PUTs are 412.
func TestS3ConditionalRequestsNeedNoPatch(t *testing.T) {
	ctx := testCtx(t)
	c := s3At(bed.Moto.URL)
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("gap-cond")}); err != nil {
		t.Fatal(err)
	}
	put, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("gap-cond"), Key: aws.String("c.json"), Body: bytes.NewReader([]byte("{}"))})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("gap-cond"), Key: aws.String("c.json"), IfNoneMatch: put.ETag})
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusNotModified {
		t.Errorf("GET If-None-Match the current ETag: %v, want 304", err)
	}
	for name, in := range map[string]*s3.PutObjectInput{
		"If-None-Match *": {IfNoneMatch: aws.String("*")},
		"If-Match stale":  {IfMatch: aws.String(`"0123"`)},
	} {
		in.Bucket, in.Key, in.Body = aws.String("gap-cond"), aws.String("c.json"), bytes.NewReader([]byte("{}"))
		_, err := c.PutObject(ctx, in)
		if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusPreconditionFailed {
			t.Errorf("PUT %s over an existing object: %v, want 412", name, err)
		}
	}
}
