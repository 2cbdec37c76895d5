package push

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/codedeploy"
	cdtypes "github.com/aws/aws-sdk-go-v2/service/codedeploy/types"
)

// CodeDeployOptions hand a pushed revision to CodeDeploy, for fleets that
// keep it as their orchestrator: CodeDeploy rolls out across the group,
// and the bundle's hooks call agentctl for the checkpoint and the health
// gate (docs/codedeploy).
type CodeDeployOptions struct {
	Application     string
	DeploymentGroup string
	// Alarms stop the deployment and roll it back when they fire.
	Alarms []string
	// Config is the deployment configuration; empty: the group's.
	Config      string
	Description string
}

// CodeDeployResult names the deployment made.
type CodeDeployResult struct {
	Application     string   `json:"application"`
	DeploymentGroup string   `json:"deployment_group"`
	DeploymentID    string   `json:"deployment_id"`
	Alarms          []string `json:"alarms,omitempty"`
}

// deployCodeDeploy registers the bundle as a revision of the application
// and creates a deployment that rolls back by itself when it fails, and
// when one of the alarms fires.
func deployCodeDeploy(ctx context.Context, client *codedeploy.Client, o CodeDeployOptions, bucket, key, etag, version string) (*CodeDeployResult, error) {
	if client == nil {
		return nil, errors.New("codedeploy: no client")
	}
	rev := &cdtypes.RevisionLocation{
		RevisionType: cdtypes.RevisionLocationTypeS3,
		S3Location: &cdtypes.S3Location{
			Bucket: aws.String(bucket), Key: aws.String(key), BundleType: cdtypes.BundleTypeTarGZip, ETag: nzString(trimQuotes(etag)),
		},
	}
	desc := o.Description
	if desc == "" {
		desc = "agentctl push " + version
	}
	_, err := client.RegisterApplicationRevision(ctx, &codedeploy.RegisterApplicationRevisionInput{
		ApplicationName: aws.String(o.Application), Revision: rev, Description: aws.String(desc),
	})
	if err != nil {
		return nil, fmt.Errorf("CodeDeploy RegisterApplicationRevision of s3://%s/%s for application %s: %w", bucket, key, o.Application, err)
	}
	events := []cdtypes.AutoRollbackEvent{cdtypes.AutoRollbackEventDeploymentFailure}
	in := &codedeploy.CreateDeploymentInput{
		ApplicationName: aws.String(o.Application), DeploymentGroupName: aws.String(o.DeploymentGroup),
		Revision: rev, Description: aws.String(desc),
	}
	if o.Config != "" {
		in.DeploymentConfigName = aws.String(o.Config)
	}
	if len(o.Alarms) > 0 {
		events = append(events, cdtypes.AutoRollbackEventDeploymentStopOnAlarm)
		alarms := make([]cdtypes.Alarm, len(o.Alarms))
		for i, a := range o.Alarms {
			alarms[i] = cdtypes.Alarm{Name: aws.String(a)}
		}
		in.OverrideAlarmConfiguration = &cdtypes.AlarmConfiguration{Enabled: true, Alarms: alarms}
	}
	in.AutoRollbackConfiguration = &cdtypes.AutoRollbackConfiguration{Enabled: true, Events: events}
	out, err := client.CreateDeployment(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("CodeDeploy CreateDeployment of s3://%s/%s to %s/%s: %w", bucket, key, o.Application, o.DeploymentGroup, err)
	}
	return &CodeDeployResult{Application: o.Application, DeploymentGroup: o.DeploymentGroup, DeploymentID: aws.ToString(out.DeploymentId), Alarms: o.Alarms}, nil
}

func trimQuotes(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

func nzString(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}
