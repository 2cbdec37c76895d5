// Package doctor checks, on the host and from the agent's own
// credentials, what a first real run needs: IMDSv2, identity, the
// instance profile, a DryRun of every mutating EC2 call the config will
// use, the release channel in S3, the CloudWatch alarms of the health
// checks, the block devices of the volumes, and pending snapshots against
// EBS's limit. Each finding says what is missing (the grant, the bucket,
// the alarm) and what to do about it (agentctl doctor).
package doctor

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/config"
)

// EC2API is the part of the EC2 client the doctor reads with.
type EC2API interface {
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
}

// S3API is the part of the S3 client the channel check uses.
type S3API interface {
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
}

// CloudWatchAPI is the part of the CloudWatch client the alarm check uses.
type CloudWatchAPI interface {
	DescribeAlarms(context.Context, *cloudwatch.DescribeAlarmsInput, ...func(*cloudwatch.Options)) (*cloudwatch.DescribeAlarmsOutput, error)
}

// STSAPI tells who the credentials are.
type STSAPI interface {
	GetCallerIdentity(context.Context, *sts.GetCallerIdentityInput, ...func(*sts.Options)) (*sts.GetCallerIdentityOutput, error)
}

// Inputs are what the checks look at.
type Inputs struct {
	Config     *config.Config
	Identity   api.Identity
	EC2        EC2API
	S3         S3API
	CloudWatch CloudWatchAPI
	STS        STSAPI
	// DryRun asks EC2 about the mutating calls (checkpoint.Manager.DryRun).
	DryRun func(context.Context) []checkpoint.DryRunCall
	// SysClassBlock is /sys/class/block, where the block devices'
	// partitions and holders show.
	SysClassBlock string
	// HookContainment says how hooks are contained (hooks.Containment):
	// on, and where, or why not.
	HookContainment struct {
		On     bool
		Detail string
	}
	// Root and Proc are / and /proc (tests move them): where AWS's
	// CodeDeploy agent is looked for.
	Root, Proc string
	// UsesCodeDeploy: the journal holds CodeDeploy deployments, so the
	// CodeDeploy agent must be there.
	UsesCodeDeploy bool
	// Record is what is wrong with the agent's own record (a damaged or
	// lost journal), nil when nothing is; JournalPath names the file.
	Record      *api.OperatorAttention
	JournalPath string
}

// callTimeout bounds each AWS check: a doctor that hangs helps nobody.
const callTimeout = 20 * time.Second

// Run makes every check and returns the report, in a fixed order.
func Run(ctx context.Context, in Inputs) api.DoctorReport {
	r := &report{in: in}
	r.record()
	r.imds(ctx)
	r.identity()
	r.credentials(ctx)
	r.dryRuns(ctx)
	r.channel(ctx)
	r.alarms(ctx)
	r.volumes()
	r.pending(ctx)
	r.hookContainment()
	r.codedeployAgent()
	return api.DoctorReport{SchemaVersion: api.SchemaVersion, Checks: r.checks}
}

// report collects the checks.
type report struct {
	in     Inputs
	checks []api.DoctorCheck
	role   string // the role of the credentials, for fixes
}

func (r *report) add(name string, res api.DoctorResult, detail, fix string) {
	r.checks = append(r.checks, api.DoctorCheck{Name: name, Result: res, Detail: detail, Fix: fix})
}

func (r *report) ok(name, detail string)        { r.add(name, api.DoctorOK, detail, "") }
func (r *report) warn(name, detail, fix string) { r.add(name, api.DoctorWarn, detail, fix) }
func (r *report) fail(name, detail, fix string) { r.add(name, api.DoctorFail, detail, fix) }

func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, callTimeout)
}

// denied is an AWS answer that IAM refused the call.
func denied(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode() {
	case "UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "Forbidden":
		return true
	}
	return false
}

// grantRE finds the action and resource in an authorization failure:
// "... is not authorized to perform: ec2:CreateSnapshots on resource:
// arn:aws:ec2:... because ..." (the form EC2, S3 and CloudWatch use).
var grantRE = regexp.MustCompile(`not authorized to perform: (\S+) on resource: (\S+)`)

// missingGrant names what an authorization failure lacks: the action and
// resource from AWS's message when it gives them, else the call's action.
func missingGrant(err error, action string) string {
	if m := grantRE.FindStringSubmatch(err.Error()); m != nil {
		return m[1] + " on " + m[2]
	}
	return action
}

// roleFix says where the grant belongs.
func (r *report) roleFix(what string) string {
	role := "the instance profile's role"
	if r.role != "" {
		role = "role " + r.role
	}
	return fmt.Sprintf("grant %s to %s: packaging/iam/instance-policy.json (placeholders replaced), or the role of packaging/cloudformation/rollback-agent.yaml, has it", what, role)
}

// record: the journal must be readable and the one the agent wrote (its
// witness agrees); otherwise the agent takes no work, and the fix is the
// operator's.
func (r *report) record() {
	if r.in.JournalPath == "" {
		return
	}
	if t := r.in.Record; t != nil {
		r.fail("journal", fmt.Sprintf("%s (%s): %s", r.in.JournalPath, t.Trouble, t.What), t.Next)
		return
	}
	r.ok("journal", r.in.JournalPath+" is readable and is the journal this agent wrote")
}

// hookContainment says whether a hook's leftovers can be ended whatever
// they did to their process group.
func (r *report) hookContainment() {
	c := r.in.HookContainment
	if c.Detail == "" {
		return
	}
	if c.On {
		r.ok("hook containment", c.Detail)
		return
	}
	r.warn("hook containment", c.Detail,
		"give the agent a writable cgroup v2 subtree: a cgroup v2 (unified) hierarchy mounted read-write, Linux 5.14 or later, and under systemd Delegate=yes in the unit")
}
