// Command newcall is a fixture of the IAM coverage test: a binary that
// adds AWS calls the instance policy does not allow, in the shapes the
// scanner must see (a call through the project's own interface, a method
// value), next to calls the policy allows and a call that is never reached.
package main

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// terminator is a narrow interface over the client, as the product's own
// packages declare them (identity.EC2API).
type terminator interface {
	TerminateInstances(ctx context.Context, in *ec2.TerminateInstancesInput, optFns ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
}

type cleaner struct{ api terminator }

func (c cleaner) run(ctx context.Context) error {
	_, err := c.api.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
	return err
}

func main() {
	ctx := context.Background()
	c := ec2.NewFromConfig(aws.Config{Region: "us-east-1"})
	_ = cleaner{api: c}.run(ctx)
	// Allowed by the instance policy already.
	_, _ = c.CreateSnapshots(ctx, &ec2.CreateSnapshotsInput{})
	p := ec2.NewDescribeSnapshotsPaginator(c, &ec2.DescribeSnapshotsInput{})
	_, _ = p.NextPage(ctx)
	// A method value is a call too.
	deleteKey := c.DeleteKeyPair
	_, _ = deleteKey(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String("old")})
}

// neverCalled is unreachable from main: its call must not be required.
func neverCalled(ctx context.Context, c *ec2.Client) {
	_, _ = c.RebootInstances(ctx, &ec2.RebootInstancesInput{})
}
