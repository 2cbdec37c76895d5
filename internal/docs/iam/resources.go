package iam

import "strings"

// Resource is one resource an action is authorised on: AWS checks the
// action against every resource of the request, and a statement that
// grants the action on some other resource type does not help.
type Resource struct {
	// Type is the resource type of the Service Authorization Reference
	// (instance, volume, snapshot, object...); "*" for an action that
	// supports no resource-level permissions (only "Resource": "*" grants
	// it).
	Type string
	// ARN is an example of what the code touches, with the policies'
	// placeholders (RELEASE_BUCKET...) where they apply; a new resource
	// is named with a * id, as AWS authorises it before it has one.
	ARN string
}

// Example ARN parts: the region and account are made up; the
// placeholders are the policies' own, so a statement scoped to them
// matches.
const (
	exRegion  = "us-east-1"
	exAccount = "123456789012"
	exEC2     = "arn:aws:ec2:" + exRegion + ":" + exAccount + ":"
	exEC2Glob = "arn:aws:ec2:" + exRegion + "::"
	// exUserID is aws:userid of an instance role session (IAM User
	// Guide, "IAM policy elements: Variables and tags": role-id:instance-id
	// for a role assigned to an EC2 instance).
	exUserID = "AROAEXAMPLEROLEID0001:i-0123456789abcdef0"
)

// exampleVariables are the values of the policy variables in the example
// request, for matching a Resource that uses them.
func exampleVariables() map[string]string {
	return map[string]string{"aws:userid": exUserID}
}

// resourcesAt is resourcesOf for a call site: an action whose request
// carries another resource where the code makes it. The host document's
// PutObject (internal/fleet) writes only the host's own key.
func resourcesAt(c Call, action string) []Resource {
	if action == "s3:PutObject" && strings.HasPrefix(c.Pos, "internal/fleet/") {
		return []Resource{rHostDoc}
	}
	return resourcesOf(action, "")
}

// Resources of the example request, by type.
var (
	rInstance  = Resource{"instance", exEC2 + "instance/i-0123456789abcdef0"}
	rVolume    = Resource{"volume", exEC2 + "volume/vol-0123456789abcdef0"}
	rNewVolume = Resource{"volume", exEC2 + "volume/*"}
	rSnapshot  = Resource{"snapshot", exEC2Glob + "snapshot/snap-0123456789abcdef0"}
	rNewSnap   = Resource{"snapshot", exEC2Glob + "snapshot/*"}
	rImage     = Resource{"image", exEC2Glob + "image/ami-0123456789abcdef0"}
	rNewImage  = Resource{"image", exEC2Glob + "image/*"}
	rNewTask   = Resource{"replace-root-volume-task", exEC2 + "replace-root-volume-task/*"}
	rNewInst   = Resource{"instance", exEC2 + "instance/*"}
	rSubnet    = Resource{"subnet", exEC2 + "subnet/subnet-0123456789abcdef0"}
	rSG        = Resource{"security-group", exEC2 + "security-group/sg-0123456789abcdef0"}
	rENI       = Resource{"network-interface", exEC2 + "network-interface/*"}
	rEIP       = Resource{"elastic-ip", exEC2 + "elastic-ip/eipalloc-0123456789abcdef0"}
	rObject    = Resource{"object", "arn:aws:s3:::RELEASE_BUCKET/RELEASE_PREFIX/demo/channels/prod.json"}
	rBucket    = Resource{"bucket", "arn:aws:s3:::RELEASE_BUCKET"}
	rAlarm     = Resource{"alarm", "arn:aws:cloudwatch:" + exRegion + ":" + exAccount + ":alarm:web-5xx"}
	rCDApp     = Resource{"application", "arn:aws:codedeploy:" + exRegion + ":" + exAccount + ":application:APP_NAME"}
	rCDGroup   = Resource{"deploymentgroup", "arn:aws:codedeploy:" + exRegion + ":" + exAccount + ":deploymentgroup:APP_NAME/web"}
	rCDConfig  = Resource{"deploymentconfig", "arn:aws:codedeploy:" + exRegion + ":" + exAccount + ":deploymentconfig:CodeDeployDefault.OneAtATime"}
	rRole      = Resource{"role", "arn:aws:iam::" + exAccount + ":role/ROLLBACK_AGENT_INSTANCE_ROLE"}
	rTopic     = Resource{"topic", "arn:aws:sns:" + exRegion + ":" + exAccount + ":NOTIFY_TOPIC"}
	rEventBus  = Resource{"event-bus", "arn:aws:events:" + exRegion + ":" + exAccount + ":event-bus/NOTIFY_EVENT_BUS"}
	// rHostDoc is a host's own document beside the channel: its name is
	// the caller's aws:userid (ROLE-ID:INSTANCE-ID for an instance role).
	rHostDoc    = Resource{"object", "arn:aws:s3:::RELEASE_BUCKET/RELEASE_PREFIX/APP_NAME/hosts/" + exUserID + ".json"}
	anyResource = Resource{"*", "*"}
)

// resourcesOf lists the resources a call's action is authorised on, as
// the code makes the call. Source: the Service Authorization Reference
// ("Actions, resources, and condition keys" for Amazon EC2, Amazon S3,
// Amazon CloudWatch, AWS CodeDeploy and IAM), whose resource lists
// cfn-lint ships as Policies.json; the test checks every type here against
// that file, and every example ARN against the type's ARN format. The file
// does not say which types are required, so this table says which the
// code's requests carry. creating is the operation whose tags-on-create an
// ec2:CreateTags need stands for ("" otherwise).
func resourcesOf(action, creating string) []Resource {
	switch action {
	case "ec2:CreateSnapshots":
		return []Resource{rInstance, rVolume, rNewSnap}
	case "ec2:CreateImage":
		return []Resource{rInstance, rNewImage, rNewSnap}
	case "ec2:CreateReplaceRootVolumeTask":
		// From the checkpoint's root snapshot, or from its AMI when it
		// has no root snapshot; the instance's root volume is replaced.
		return []Resource{rInstance, rNewTask, rSnapshot, rImage, rVolume}
	case "ec2:CreateVolume":
		return []Resource{rNewVolume, rSnapshot}
	case "ec2:AttachVolume", "ec2:DetachVolume":
		return []Resource{rInstance, rVolume}
	case "ec2:DeleteSnapshot":
		return []Resource{rSnapshot}
	case "ec2:DeleteVolume":
		return []Resource{rVolume}
	case "ec2:DeregisterImage":
		return []Resource{rImage}
	case "ec2:CreateTags":
		switch creating {
		case "CreateSnapshots":
			return []Resource{rNewSnap}
		case "CreateImage":
			return []Resource{rNewImage, rNewSnap}
		case "CreateVolume":
			return []Resource{rNewVolume}
		case "CreateReplaceRootVolumeTask":
			return []Resource{rNewTask}
		case "RunInstances":
			return []Resource{rNewInst}
		}
		// The agent's own CreateTags calls: the restore intent on its
		// instance, pins and device names on checkpoints, replaced-by on
		// a swapped-out volume.
		return []Resource{rInstance, rImage, rSnapshot, rVolume}
	case "ec2:DeleteTags":
		// The restore intent on the instance; unpinning checkpoints.
		return []Resource{rInstance, rImage, rSnapshot}
	case "ec2:RunInstances":
		return []Resource{rNewInst, rImage, rSnapshot, rNewVolume, rSubnet, rSG, rENI}
	case "ec2:AssociateAddress":
		return []Resource{rEIP, rInstance}
	case "ec2:StopInstances":
		return []Resource{rInstance}
	case "iam:PassRole":
		return []Resource{rRole}
	case "s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload":
		return []Resource{rObject}
	case "s3:ListBucket":
		return []Resource{rBucket}
	case "cloudwatch:DescribeAlarms":
		return []Resource{rAlarm}
	case "codedeploy:CreateDeployment", "codedeploy:UpdateDeploymentGroup":
		return []Resource{rCDGroup}
	case "codedeploy:GetApplicationRevision", "codedeploy:RegisterApplicationRevision":
		return []Resource{rCDApp}
	case "codedeploy:GetDeploymentConfig":
		return []Resource{rCDConfig}
	case "sns:Publish":
		return []Resource{rTopic}
	case "events:PutEvents":
		return []Resource{rEventBus}
	}
	// Describe* and the rest: no resource-level permissions.
	return []Resource{anyResource}
}
