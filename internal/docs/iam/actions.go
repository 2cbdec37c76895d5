package iam

import (
	"fmt"
	"sort"
)

// Need is one IAM action that an operation call requires, why, and the
// resources it is authorised on.
type Need struct {
	Action    string
	Call      Call
	Why       string // empty for the operation's own action
	Resources []Resource
}

// prefixOf is the IAM service prefix of an SDK service package. A service
// that is not listed fails the check: a new client needs a human to look
// up its IAM names once.
func prefixOf(service string) (string, bool) {
	switch service {
	case "ec2", "s3", "cloudwatch", "codedeploy", "ssm", "sts", "autoscaling", "iam", "sns", "sqs":
		return service, true
	case "cloudwatchlogs":
		return "logs", true
	case "elasticloadbalancingv2":
		return "elasticloadbalancing", true
	case "eventbridge":
		return "events", true
	}
	return "", false
}

// noPermission lists operations IAM never denies. STS API reference,
// GetCallerIdentity: "No permissions are required to perform this
// operation. If an administrator attaches a policy to your identity that
// explicitly denies access to the sts:GetCallerIdentity action, you can
// still perform this operation."
func noPermission(service, op string) bool {
	return service == "sts" && op == "GetCallerIdentity"
}

// s3Actions maps S3 operations whose IAM action has another name.
func s3Actions(op string) []string {
	switch op {
	case "HeadObject":
		return []string{"s3:GetObject"}
	case "ListObjects", "ListObjectsV2", "HeadBucket":
		return []string{"s3:ListBucket"}
	case "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload":
		return []string{"s3:PutObject"}
	case "ListMultipartUploads":
		return []string{"s3:ListBucketMultipartUploads"}
	case "ListParts":
		return []string{"s3:ListMultipartUploadParts"}
	case "CopyObject":
		return []string{"s3:GetObject", "s3:PutObject"}
	}
	return []string{"s3:" + op}
}

// extraActions are the actions an operation needs beyond its own, as the
// EC2, S3 and CodeDeploy authorization references describe them.
func extraActions(service, op string) []Need {
	n := func(action, why string) Need { return Need{Action: action, Why: why} }
	switch service + ":" + op {
	case "ec2:CreateSnapshots", "ec2:CreateVolume", "ec2:CreateReplaceRootVolumeTask":
		return []Need{n("ec2:CreateTags", "tags given in TagSpecifications are authorised as ec2:CreateTags")}
	case "ec2:CreateImage":
		return []Need{n("ec2:CreateTags", "TagSpecifications tag the image and its snapshots (ec2:CreateTags)")}
	case "ec2:DeregisterImage":
		return []Need{n("ec2:DeleteSnapshot", "DeleteAssociatedSnapshots deletes the image's snapshots")}
	case "ec2:RunInstances":
		return []Need{
			n("ec2:CreateTags", "the new instance is tagged in TagSpecifications"),
			n("iam:PassRole", "the new instance gets the old instance's profile"),
		}
	case "s3:GetObject", "s3:HeadObject":
		// S3 API reference, GetObject and HeadObject: "If you have the
		// s3:ListBucket permission on the bucket, Amazon S3 returns an
		// HTTP status code 404 Not Found error. If you don't have the
		// s3:ListBucket permission, Amazon S3 returns an HTTP status
		// code 403 Access Denied error."
		return []Need{n("s3:ListBucket", "without it a missing key answers 403 instead of 404")}
	case "codedeploy:CreateDeployment":
		return []Need{
			n("codedeploy:GetDeploymentConfig", "CreateDeployment reads the group's deployment configuration as the caller"),
			n("codedeploy:GetApplicationRevision", "CreateDeployment checks the registered revision as the caller"),
		}
	}
	return nil
}

// fieldActions are the actions a request needs when the code sets one of
// its fields (Call.Field).
func fieldActions(service, op, field string) []Need {
	n := func(action, why string) Need { return Need{Action: action, Why: why} }
	switch service + ":" + op + "." + field {
	case "s3:GetObject.VersionId", "s3:HeadObject.VersionId":
		// S3 API reference, GetObject: "you need the s3:GetObjectVersion
		// permission to access a specific version of an object".
		return []Need{n("s3:GetObjectVersion", "a ?versionId= source reads one version of the object")}
	case "codedeploy:CreateDeployment.OverrideAlarmConfiguration":
		// CodeDeploy API reference, CreateDeployment,
		// overrideAlarmConfiguration: "you need to have the same
		// permissions required to perform UpdateDeploymentGroup".
		return []Need{n("codedeploy:UpdateDeploymentGroup", "overrideAlarmConfiguration (push --alarm) needs the permissions of UpdateDeploymentGroup")}
	}
	return nil
}

// Needs turns calls into the IAM actions they require, with the resources
// each is authorised on, sorted by action.
func Needs(calls []Call) ([]Need, error) {
	var out []Need
	for _, c := range calls {
		prefix, ok := prefixOf(c.Service)
		if !ok {
			return nil, fmt.Errorf("iam: %s: no IAM prefix known for SDK service %q (add it to prefixOf in internal/docs/iam/actions.go)", c, c.Service)
		}
		if noPermission(c.Service, c.Operation) {
			continue
		}
		if c.Field != "" {
			extra := fieldActions(c.Service, c.Operation, c.Field)
			if len(extra) == 0 {
				return nil, fmt.Errorf("iam: %s: no actions known for field %s (fieldActions in internal/docs/iam/actions.go)", c, c.Field)
			}
			for _, e := range extra {
				e.Call, e.Resources = c, resourcesOf(e.Action, "")
				out = append(out, e)
			}
			continue
		}
		own := []string{prefix + ":" + c.Operation}
		if c.Service == "s3" {
			own = s3Actions(c.Operation)
		}
		for _, a := range own {
			out = append(out, Need{Action: a, Call: c, Resources: resourcesAt(c, a)})
		}
		for _, e := range extraActions(c.Service, c.Operation) {
			e.Call, e.Resources = c, resourcesOf(e.Action, c.Operation)
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Action < out[j].Action })
	return out, nil
}
