// Package awsconf builds the AWS SDK configuration every client of the
// agent shares. Endpoints and credentials come from the SDK's standard
// environment (AWS_ENDPOINT_URL, the instance profile through IMDS, ...);
// there is no other path to AWS.
package awsconf

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
)

// Retries of idempotent calls. An agent makes few calls, and every one it
// makes matters for a rollback: it retries more than the SDK's default (3
// attempts) and does not give up early on its client-side retry quota,
// which a burst of throttling would otherwise exhaust. Create calls turn
// retries off and retry themselves after looking the resource up.
const (
	maxAttempts = 8
	maxBackoff  = 20 * time.Second
)

// Load returns the SDK configuration for region.
func Load(ctx context.Context, region string) (aws.Config, error) {
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(region), config.WithRetryer(func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = maxAttempts
			o.MaxBackoff = maxBackoff
			o.RateLimiter = ratelimit.None
		})
	}))
	if err != nil {
		return aws.Config{}, fmt.Errorf("aws: load SDK configuration for %s: %w", region, err)
	}
	return cfg, nil
}
