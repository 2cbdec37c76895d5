package source

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"
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
