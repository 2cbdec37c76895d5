package awsconf

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3 returns an S3 client. With a custom endpoint (AWS_ENDPOINT_URL, an
// S3-compatible store) it uses path-style addressing, which such
// endpoints need: bucket names cannot be resolved as host names there.
func S3(cfg aws.Config) *s3.Client {
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		if cfg.BaseEndpoint != nil || o.BaseEndpoint != nil {
			o.UsePathStyle = true
		}
	})
}
