package push

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/codedeploy"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rollback-agent/rollback-agent/internal/awsconf"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

var peers testbed.Lazy

func TestMain(m *testing.M) {
	code := m.Run()
	peers.Close()
	os.Exit(code)
}

// clients talk to moto through the bed's proxy, which counts the calls.
func clients(t *testing.T) (Clients, *testbed.Bed) {
	t.Helper()
	bed := peers.Get(t)
	cfg := bed.AWSConfig()
	cfg.BaseEndpoint = aws.String(bed.AWS.URL)
	return Clients{S3: awsconf.S3(cfg), CodeDeploy: codedeploy.NewFromConfig(cfg)}, bed
}

func bucket(t *testing.T, c Clients, name string) {
	t.Helper()
	if _, err := c.S3.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
}

// awsCLI runs awscli against moto and returns its stdout.
func awsCLI(t *testing.T, bed *testbed.Bed, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("aws", args...)
	cmd.Env = bed.CLIEnv()
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// download fetches an object with awscli: an independent client checks
// what push left in the bucket.
func download(t *testing.T, bed *testbed.Bed, bucket, key string) []byte {
	t.Helper()
	p := t.TempDir() + "/obj"
	awsCLI(t, bed, "s3", "cp", "--only-show-errors", "s3://"+bucket+"/"+key, p)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
