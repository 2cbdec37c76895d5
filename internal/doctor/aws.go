package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// credentials: who the SDK's credentials are.
func (r *report) credentials(ctx context.Context) {
	ctx, cancel := bounded(ctx)
	defer cancel()
	out, err := r.in.STS.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		r.fail("credentials", "no working AWS credentials: GetCallerIdentity: "+err.Error(),
			"give the instance an instance profile whose role has packaging/iam/instance-policy.json (the CloudFormation template makes one); on premises, set credentials in /etc/rollback-agent/environment")
		return
	}
	arn := aws.ToString(out.Arn)
	if _, rest, ok := strings.Cut(arn, ":assumed-role/"); ok {
		role, session, _ := strings.Cut(rest, "/")
		r.role = role
		if session == r.in.Identity.InstanceID {
			r.ok("credentials", fmt.Sprintf("role %s, from this instance's profile (%s)", role, arn))
			return
		}
		r.ok("credentials", fmt.Sprintf("role %s, session %s (%s)", role, session, arn))
		return
	}
	if r.in.Identity.Source == "imds" {
		r.warn("credentials", "credentials of "+arn+", not of an instance profile",
			"on EC2 use an instance profile (no keys on disk) and remove the keys from the environment or credentials file")
		return
	}
	r.ok("credentials", arn)
}

// dryRuns: each mutating call the config will use, asked with DryRun.
func (r *report) dryRuns(ctx context.Context) {
	if r.in.DryRun == nil {
		return
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	for _, c := range r.in.DryRun(ctx) {
		switch {
		case c.Skipped != "":
			r.warn(c.Action, "not asked: "+c.Skipped+" (needed by "+c.Why+")", "")
		case c.Err == nil:
			r.ok(c.Action, fmt.Sprintf("allowed (DryRun, %s), needed by %s", c.Target, c.Why))
		case denied(c.Err):
			grant := missingGrant(c.Err, c.Action)
			r.fail(c.Action, fmt.Sprintf("missing grant: %s (DryRun for %s, needed by %s)", grant, c.Target, c.Why), r.roleFix(grant))
		default:
			r.fail(c.Action, fmt.Sprintf("DryRun for %s failed (needed by %s): %v", c.Target, c.Why, c.Err), "")
		}
	}
}

func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func errCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// channel: the release channel's object is readable, and when it is not,
// why: no bucket, no channel yet, no s3:GetObject, no s3:ListBucket, or a
// ListBucket only under an s3:prefix condition. S3 answers 404 for a
// missing key only to a caller with s3:ListBucket on the bucket, 403 to
// anyone else (S3 API reference, HeadObject and GetObject), so a 403 is
// taken apart with a listing of the key.
func (r *report) channel(ctx context.Context) {
	url := r.in.Config.Sources.Channel
	if url == "" {
		return
	}
	layout, _, name, err := release.ParseChannelURL(url)
	if err != nil {
		r.fail("channel", err.Error(), "fix sources.channel in agent.yaml")
		return
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	bucket, key := layout.Bucket, layout.ChannelKey(name)
	objectARN, bucketARN := "arn:aws:s3:::"+bucket+"/"+key, "arn:aws:s3:::"+bucket
	_, herr := r.in.S3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if herr == nil {
		r.ok("channel", url+" is readable")
		return
	}
	list, lerr := r.in.S3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(key), MaxKeys: aws.Int32(1)})
	switch {
	case errCode(lerr) == "NoSuchBucket":
		r.fail("channel", "bucket "+bucket+" does not exist (NoSuchBucket), so "+url+" cannot be read",
			"create the bucket (packaging/cloudformation/rollback-agent.yaml with CreateReleaseBucket=true does) or fix sources.channel in agent.yaml")
	case lerr != nil && denied(lerr):
		if httpStatus(herr) == http.StatusNotFound {
			// Only possible when ListBucket is allowed for HEAD's check.
			r.warn("channel", url+" does not exist yet", "push a release to it: agentctl push DIR --bucket "+bucket+" --app APP --channel "+name)
			return
		}
		r.fail("channel", fmt.Sprintf("S3 refuses %s (HTTP %d) and the listing of the bucket: missing grant: s3:ListBucket on %s, so S3 answers 403 for a channel that does not exist yet and for one the role may not read alike", url, httpStatus(herr), bucketARN),
			r.roleFix("s3:ListBucket on "+bucketARN+" (and s3:GetObject on "+objectARN+")"))
	case lerr != nil:
		r.fail("channel", fmt.Sprintf("%s: HeadObject: %v; ListObjectsV2: %v", url, herr, lerr), "")
	case len(list.Contents) > 0 && aws.ToString(list.Contents[0].Key) == key:
		r.fail("channel", fmt.Sprintf("%s exists but S3 refuses to read it (HTTP %d): missing grant: s3:GetObject on %s", url, httpStatus(herr), objectARN),
			r.roleFix("s3:GetObject on "+objectARN))
	case httpStatus(herr) == http.StatusNotFound:
		r.warn("channel", url+" does not exist yet", "push a release to it: agentctl push DIR --bucket "+bucket+" --app APP --channel "+name)
	default:
		r.fail("channel", fmt.Sprintf("%s does not exist yet, but S3 answers %d instead of 404: s3:ListBucket on %s is granted for listings only (an s3:prefix condition, which a GetObject does not carry), so a missing channel looks like a refusal",
			url, httpStatus(herr), bucketARN),
			"grant s3:ListBucket on "+bucketARN+" with StringLikeIfExists on s3:prefix, as packaging/iam/instance-policy.json (ListTheReleasePrefix) does")
	}
}

// alarms: every alarm a health check reads exists (a missing one reads as
// INSUFFICIENT_DATA forever: never unhealthy).
func (r *report) alarms(ctx context.Context) {
	byAlarm := map[string][]string{}
	for _, c := range r.in.Config.Health.Checks {
		if c.CloudWatchAlarm == nil {
			continue
		}
		for _, a := range c.CloudWatchAlarm.AlarmNames {
			byAlarm[a] = append(byAlarm[a], c.Name)
		}
	}
	if len(byAlarm) == 0 {
		return
	}
	names := make([]string, 0, len(byAlarm))
	for n := range byAlarm {
		names = append(names, n)
	}
	sort.Strings(names)
	ctx, cancel := bounded(ctx)
	defer cancel()
	found := map[string]string{}
	for i := 0; i < len(names); i += 100 {
		batch := names[i:min(i+100, len(names))]
		p := cloudwatch.NewDescribeAlarmsPaginator(r.in.CloudWatch, &cloudwatch.DescribeAlarmsInput{AlarmNames: batch})
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				if denied(err) {
					r.fail("alarms", "missing grant: "+missingGrant(err, "cloudwatch:DescribeAlarms")+": the health checks cannot read their alarms", r.roleFix("cloudwatch:DescribeAlarms"))
				} else {
					r.fail("alarms", "DescribeAlarms: "+err.Error(), "")
				}
				return
			}
			for _, a := range out.MetricAlarms {
				found[aws.ToString(a.AlarmName)] = string(a.StateValue)
			}
			for _, a := range out.CompositeAlarms {
				found[aws.ToString(a.AlarmName)] = string(a.StateValue)
			}
		}
	}
	for _, n := range names {
		checks := strings.Join(byAlarm[n], ", ")
		switch state, ok := found[n]; {
		case !ok:
			r.fail("alarm "+n, fmt.Sprintf("alarm %s does not exist in %s (health check %s): it would never say unhealthy", n, r.in.Identity.Region, checks),
				"create the alarm in "+r.in.Identity.Region+" (the CloudFormation template does, with CreateHealthAlarm=true), or fix health.checks["+checks+"].cloudwatch_alarm.alarm_names")
		case state == "ALARM":
			r.warn("alarm "+n, fmt.Sprintf("alarm %s is in ALARM now (health check %s): a deployment now would roll back", n, checks), "")
		default:
			r.ok("alarm "+n, fmt.Sprintf("exists, %s (health check %s)", state, checks))
		}
	}
}

// pendingLimit is how many snapshots of one volume may be pending: 5, or
// 1 for st1 and sc1 volumes; one more is ConcurrentSnapshotLimitExceeded
// (EBS User Guide, "Create Amazon EBS snapshots").
func pendingLimit(volumeType string) int {
	if volumeType == "st1" || volumeType == "sc1" {
		return 1
	}
	return 5
}

// pending: snapshots still pending per volume against that limit.
func (r *report) pending(ctx context.Context) {
	vols := r.in.Identity.Volumes
	if len(vols) == 0 {
		return
	}
	ids := make([]string, len(vols))
	for i, v := range vols {
		ids[i] = v.VolumeID
	}
	ctx, cancel := bounded(ctx)
	defer cancel()
	count := map[string]int{}
	p := ec2.NewDescribeSnapshotsPaginator(r.in.EC2, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []types.Filter{
		{Name: aws.String("volume-id"), Values: ids}, {Name: aws.String("status"), Values: []string{"pending"}}}})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			if denied(err) {
				r.fail("pending snapshots", "missing grant: "+missingGrant(err, "ec2:DescribeSnapshots"), r.roleFix("ec2:DescribeSnapshots"))
			} else {
				r.fail("pending snapshots", "DescribeSnapshots: "+err.Error(), "")
			}
			return
		}
		for _, s := range out.Snapshots {
			count[aws.ToString(s.VolumeId)]++
		}
	}
	var parts []string
	worst := 0 // 0 ok, 1 warn, 2 fail
	for _, v := range vols {
		n, limit := count[v.VolumeID], pendingLimit(v.VolumeType)
		parts = append(parts, fmt.Sprintf("%s %d/%d", v.VolumeID, n, limit))
		switch {
		case n >= limit:
			worst = max(worst, 2)
		case n > 0 && n == limit-1:
			worst = max(worst, 1)
		}
	}
	detail := "pending per volume (of EBS's limit): " + strings.Join(parts, ", ")
	switch worst {
	case 2:
		r.fail("pending snapshots", detail+": the next checkpoint would fail with ConcurrentSnapshotLimitExceeded",
			"wait for the pending snapshots to complete (agentctl checkpoint list); deleting one in progress does not free its place")
	case 1:
		r.warn("pending snapshots", detail+": one more checkpoint reaches the limit", "space deployments out until the snapshots complete")
	default:
		r.ok("pending snapshots", detail)
	}
}
