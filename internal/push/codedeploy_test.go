package push

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// The revision is registered with CodeDeploy and deployed with automatic
// rollback on failure and on the alarms asked for, as moto's CodeDeploy
// reports back to awscli.
func TestPushCodeDeploy(t *testing.T) {
	c, bed := clients(t)
	bucket(t, c, "push-cd")
	awsCLI(t, bed, "deploy", "create-application", "--application-name", "shop", "--compute-platform", "Server")
	awsCLI(t, bed, "deploy", "create-deployment-group", "--application-name", "shop", "--deployment-group-name", "prod",
		"--service-role-arn", "arn:aws:iam::123456789012:role/codedeploy")
	bed.AWS.ResetCounts()
	res, err := Push(context.Background(), c, Options{Dir: "../../docs/codedeploy", Bucket: "push-cd", App: "shop", Version: "v1",
		CodeDeploy: &CodeDeployOptions{Application: "shop", DeploymentGroup: "prod", Alarms: []string{"shop-5xx", "shop-latency"}}})
	if err != nil {
		t.Fatal(err)
	}
	if n := bed.AWS.Count("codedeploy", "RegisterApplicationRevision"); n != 1 {
		t.Errorf("%d RegisterApplicationRevision calls", n)
	}
	var got struct {
		DeploymentInfo struct {
			Status   string
			Revision struct {
				S3Location struct{ Bucket, Key, BundleType string }
			}
			AutoRollbackConfiguration struct {
				Enabled bool
				Events  []string
			}
			OverrideAlarmConfiguration struct {
				Enabled bool
				Alarms  []struct{ Name string }
			}
		}
	}
	out := awsCLI(t, bed, "deploy", "get-deployment", "--deployment-id", res.CodeDeploy.DeploymentID, "--output", "json")
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	d := got.DeploymentInfo
	if loc := d.Revision.S3Location; loc.Bucket != "push-cd" || loc.Key != "shop/revisions/v1/bundle.tar.gz" || loc.BundleType != "tgz" {
		t.Errorf("revision %+v", loc)
	}
	if !d.AutoRollbackConfiguration.Enabled || strings.Join(d.AutoRollbackConfiguration.Events, ",") != "DEPLOYMENT_FAILURE,DEPLOYMENT_STOP_ON_ALARM" {
		t.Errorf("auto rollback %+v", d.AutoRollbackConfiguration)
	}
	if a := d.OverrideAlarmConfiguration; !a.Enabled || len(a.Alarms) != 2 || a.Alarms[0].Name != "shop-5xx" || a.Alarms[1].Name != "shop-latency" {
		t.Errorf("alarms %+v", a)
	}

	// Without alarms: rollback on failure only, no alarm override.
	res, err = Push(context.Background(), c, Options{Dir: "../../docs/codedeploy", Bucket: "push-cd", App: "shop", Version: "v2",
		CodeDeploy: &CodeDeployOptions{Application: "shop", DeploymentGroup: "prod"}})
	if err != nil {
		t.Fatal(err)
	}
	out = awsCLI(t, bed, "deploy", "get-deployment", "--deployment-id", res.CodeDeploy.DeploymentID, "--output", "json")
	got.DeploymentInfo.OverrideAlarmConfiguration.Alarms = nil
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("get-deployment: %v\n%s", err, out)
	}
	if ev := got.DeploymentInfo.AutoRollbackConfiguration.Events; strings.Join(ev, ",") != "DEPLOYMENT_FAILURE" || len(got.DeploymentInfo.OverrideAlarmConfiguration.Alarms) != 0 {
		t.Errorf("without alarms: %s", out)
	}
	// An application CodeDeploy does not know is its error, with context.
	_, err = Push(context.Background(), c, Options{Dir: "../../docs/codedeploy", Bucket: "push-cd", App: "shop", Version: "v3",
		CodeDeploy: &CodeDeployOptions{Application: "nope", DeploymentGroup: "prod"}})
	if err == nil || !strings.Contains(err.Error(), "RegisterApplicationRevision of s3://push-cd/shop/revisions/v3/bundle.tar.gz for application nope") || !strings.Contains(err.Error(), "ApplicationDoesNotExist") {
		t.Errorf("unknown application: %v", err)
	}
}
