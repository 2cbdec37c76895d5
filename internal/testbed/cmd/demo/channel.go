package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/awsconf"
	"github.com/rollback-agent/rollback-agent/internal/client"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// demoBucket holds the releases: s3://demo-releases/demo/revisions/V/ and
// the channel document demo/channels/prod.json the agent watches.
const demoBucket = "demo-releases"

func (d *demo) channelURL() string { return "s3://" + demoBucket + "/demo/channels/prod.json" }

// setUpReleases plays the release engineer's first day: a bucket for the
// releases and a signing key whose public half goes into agent.yaml.
func (d *demo) setUpReleases(ctx context.Context) error {
	step("Workstation: a release bucket in S3 and a signing key (agentctl keygen); the agent will trust its public key")
	if _, err := awsconf.S3(d.bed.AWSConfig()).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(demoBucket)}); err != nil {
		return fmt.Errorf("create bucket %s: %w", demoBucket, err)
	}
	fmt.Printf("bucket s3://%s created\n", demoBucket)
	if err := os.MkdirAll(filepath.Join(d.dir, "keys"), 0o700); err != nil {
		return err
	}
	d.secretKey = filepath.Join(d.dir, "keys", "release.key")
	d.publicKey = filepath.Join(d.dir, "keys", "release.pub")
	return d.workstation(ctx, "keygen", "--secret-key", d.secretKey, "--public-key", d.publicKey)
}

// push uploads dir as version and moves channel prod to it, signed.
func (d *demo) push(ctx context.Context, dir, version string) error {
	return d.workstation(ctx, "push", dir, "--bucket", demoBucket, "--app", "demo", "--version", version,
		"--channel", "prod", "--sign-key", d.secretKey)
}

// workstation runs agentctl as the release engineer would, with AWS
// credentials for the bed and no agent socket.
func (d *demo) workstation(ctx context.Context, args ...string) error {
	fmt.Printf("$ agentctl %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, "agentctl"), args...)
	cmd.Env = append(d.bed.BaseEnv(), "AWS_REGION="+testbed.Region)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("agentctl %s: %w", args[0], err)
	}
	return nil
}

// waitChannelDeploy waits until the agent has noticed the channel moved
// to version and its deployment has ended, printing each step as the
// agent reports it, and returns the deployment's final status.
func (d *demo) waitChannelDeploy(ctx context.Context, version string) (api.DeploymentStatus, error) {
	fmt.Printf("waiting for the agent to see channel prod move to %s (it polls every second)...\n", version)
	c := client.New(d.socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var shown string
	for {
		deps, err := c.Deployments(ctx, 5)
		if err != nil {
			return "", fmt.Errorf("wait for the channel deployment of %s: %w", version, err)
		}
		for _, dep := range deps {
			if dep.Revision != version || dep.Trigger != "channel" {
				continue
			}
			if line := fmt.Sprintf("  %s %s: %s", dep.ID, version, progress(dep)); line != shown {
				fmt.Println(line)
				shown = line
			}
			if dep.Status.Terminal() {
				if dep.Error != "" {
					fmt.Print(indent(dep.Error))
				}
				return dep.Status, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("the agent did not finish deploying %s from the channel in 3 minutes", version)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func progress(dep api.Deployment) string {
	s := string(dep.Status)
	if n := len(dep.Steps); n > 0 && !dep.Status.Terminal() {
		s += " (" + dep.Steps[n-1].Name + ")"
	}
	if dep.Error != "" {
		first, _, _ := strings.Cut(dep.Error, "\n")
		s += ": " + first
	}
	return s
}
