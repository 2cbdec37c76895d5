// Package awsconf builds the AWS SDK configuration every client of the
// agent shares. Endpoints and credentials come from the SDK's standard
// environment (AWS_ENDPOINT_URL, the instance profile through IMDS, ...);
// there is no other path to AWS.
package awsconf

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
)

// Load returns the SDK configuration for region.
func Load(ctx context.Context, region string) (aws.Config, error) {
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(region))
	if err != nil {
		return aws.Config{}, fmt.Errorf("aws: load SDK configuration for %s: %w", region, err)
	}
	return cfg, nil
}
