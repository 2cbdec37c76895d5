package testbed

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/rollback-agent/rollback-agent/internal/testbed/iamauth"
)

// profileCredentials plays EC2's part for an instance launched with an
// instance profile: the profile's role, checked to trust
// ec2.amazonaws.com, assumed as the service would (session name: the
// instance id), for IMDS to serve. The caller is EC2, not an IAM
// principal of the account, so moto's checks are paused for that one
// call: moto cannot evaluate a trust policy naming a service (HTTP 500),
// and the bed evaluated it above. The session is registered, with the
// instance as ec2:SourceInstanceARN of its requests.
func (b *Bed) profileCredentials(ctx context.Context, inst types.Instance) (*Principal, *ProfileCredentials, error) {
	profileARN := aws.ToString(inst.IamInstanceProfile.Arn)
	_, name, ok := strings.Cut(profileARN, ":instance-profile/")
	if !ok {
		return nil, nil, fmt.Errorf("testbed: instance profile ARN %q", profileARN)
	}
	name = name[strings.LastIndex(name, "/")+1:]
	ic := iam.New(iam.Options{Region: Region, BaseEndpoint: aws.String(b.Moto.URL), Credentials: b.credentials()})
	prof, err := ic.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(name)})
	if err != nil {
		return nil, nil, wrap("GetInstanceProfile "+name, err)
	}
	if len(prof.InstanceProfile.Roles) != 1 {
		return nil, nil, fmt.Errorf("testbed: instance profile %s has %d roles; EC2 needs exactly one", name, len(prof.InstanceProfile.Roles))
	}
	role := prof.InstanceProfile.Roles[0]
	trustDoc := aws.ToString(role.AssumeRolePolicyDocument)
	if dec, err := url.QueryUnescape(trustDoc); err == nil {
		trustDoc = dec
	}
	trust, err := iamauth.Parse(trustDoc)
	if err != nil {
		return nil, nil, fmt.Errorf("testbed: trust policy of %s: %w", aws.ToString(role.RoleName), err)
	}
	if !trust.AssumableBy("ec2.amazonaws.com") {
		return nil, nil, fmt.Errorf("testbed: role %s does not trust ec2.amazonaws.com: EC2 cannot deliver its credentials to %s", aws.ToString(role.RoleName), aws.ToString(inst.InstanceId))
	}
	if b.enf != nil {
		if err := b.Moto.setAuth(ctx, "inf"); err != nil {
			return nil, nil, err
		}
		defer func() {
			if err := b.Moto.setAuth(context.WithoutCancel(ctx), "0"); err != nil {
				panic("testbed: IAM enforcement could not be turned back on: " + err.Error())
			}
		}()
	}
	sc := sts.New(sts.Options{Region: Region, BaseEndpoint: aws.String(b.Moto.URL), Credentials: b.credentials(), RetryMaxAttempts: 1})
	out, err := sc.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: role.Arn, RoleSessionName: inst.InstanceId})
	if err != nil {
		return nil, nil, wrap("AssumeRole "+aws.ToString(role.Arn)+" for "+aws.ToString(inst.InstanceId), err)
	}
	c := out.Credentials
	creds := aws.Credentials{AccessKeyID: aws.ToString(c.AccessKeyId), SecretAccessKey: aws.ToString(c.SecretAccessKey),
		SessionToken: aws.ToString(c.SessionToken), CanExpire: true, Expires: aws.ToTime(c.Expiration)}
	arn := aws.ToString(out.AssumedRoleUser.Arn)
	p := &Principal{ARN: arn, Account: accountOf(arn), Role: aws.ToString(role.RoleName), Creds: creds, UserID: aws.ToString(out.AssumedRoleUser.AssumedRoleId),
		SourceInstance: fmt.Sprintf("arn:aws:ec2:%s:%s:instance/%s", Region, accountOf(arn), aws.ToString(inst.InstanceId))}
	if b.enf != nil {
		b.enf.register(p)
	}
	return p, &ProfileCredentials{ProfileARN: profileARN, ProfileID: aws.ToString(prof.InstanceProfile.InstanceProfileId), Role: p.Role, Creds: creds}, nil
}
