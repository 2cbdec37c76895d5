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
// credentials). agentctl on the instance only talks to the socket; its
// workstation commands, the ones that call AWS, are in agentctl-aws.
func Roles() []Role {
	return []Role{
		{Name: "instance", Main: Module + "/cmd/agent", Policy: "packaging/iam/instance-policy.json"},
		{Name: "workstation", Main: Module + "/cmd/agentctl-aws", Policy: "packaging/iam/workstation-policy.json"},
	}
}

// Optional is a policy a user attaches only in some setups. The scan does
// not require its actions of the code: AWS services call them on the
// caller's behalf (EBS asks KMS for a grant when a volume is made from an
// encrypted snapshot; S3 decrypts an SSE-KMS object for GetObject).
type Optional struct {
	Name   string
	Policy string
	When   string
}

// OptionalPolicies are the optional policies the packaging ships.
func OptionalPolicies() []Optional {
	return []Optional{{
		Name:   "kms",
		Policy: "packaging/iam/kms-policy.json",
		When:   "snapshots encrypted with a customer-managed KMS key (attach to the instance role for volume and root restores, to the workstation for restore-instance), or an SSE-KMS release bucket (both)",
	}}
}
