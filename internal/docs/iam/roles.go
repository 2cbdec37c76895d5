package iam

// Module is the import path of this repository's module.
const Module = "github.com/rollback-agent/rollback-agent"

// Role pairs a binary with the IAM policy its AWS credentials carry.
type Role struct {
	Name   string
	Main   string // import path of the binary's main package
	Policy string // the policy file, relative to the repository root
	// Pending are actions the policy grants for a command that is not in
	// the code yet (so nothing in the scan needs them); each one names
	// the command, and leaves the list when that command lands.
	Pending []string
}

// Roles are the two identities of the product: the daemon on the instance
// (its instance profile) and agentctl on a workstation (the operator's
// credentials). agentctl on the instance only talks to the socket.
func Roles() []Role {
	return []Role{
		{Name: "instance", Main: Module + "/cmd/agent", Policy: "packaging/iam/instance-policy.json"},
		{
			Name: "workstation", Main: Module + "/cmd/agentctl", Policy: "packaging/iam/workstation-policy.json",
			// `agentctl push` and its release commands (DESIGN.md §1) are
			// landing beside this policy: upload the bundle and manifest
			// (multipart for big bundles), read, move and tidy the channel
			// and releases, and hand the revision to a CodeDeploy deployment
			// group. The test logs the entries the code now needs.
			Pending: []string{
				"s3:PutObject", "s3:GetObject", "s3:ListBucket", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
				"codedeploy:RegisterApplicationRevision", "codedeploy:CreateDeployment", "codedeploy:GetDeployment",
				"codedeploy:GetDeploymentConfig", "codedeploy:GetApplicationRevision",
			},
		},
	}
}
