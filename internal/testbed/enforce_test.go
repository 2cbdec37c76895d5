package testbed

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// enforced is the bed with IAM enforcement of this package's tests; get
// it with enforcedBed.
var enforced = Lazy{Options: Options{EnforceIAM: true}}

var enforcedRules sync.Once

// enforcedBed is enforced with the rules of this package's other bed
// (TestMain): each test here is about one rule, and the consistency
// window, which has its own tests, would answer NotFound for the instance
// a test has just made.
func enforcedBed(t *testing.T) *Bed {
	t.Helper()
	b := enforced.Get(t)
	enforcedRules.Do(func() { b.SetRules(Rules{UdevDelay: b.Rules().UdevDelay}) })
	return b
}

func adminIAM(b *Bed) *iam.Client {
	return iam.New(iam.Options{Region: Region, BaseEndpoint: aws.String(b.Moto.URL), Credentials: b.credentials()})
}

// instancePolicy is the shipped instance policy for bucket and prefix.
func instancePolicy(t *testing.T, bucket, prefix string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "packaging", "iam", "instance-policy.json"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer("RELEASE_BUCKET", bucket, "RELEASE_PREFIX", prefix).Replace(string(b))
}

const ec2Trust = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}`

// profileTemplate makes a role with policy, its instance profile and a
// launch template naming the profile, as the CloudFormation stack does.
func profileTemplate(t *testing.T, b *Bed, name, policy string) string {
	t.Helper()
	ctx := testCtx(t)
	ic := adminIAM(b)
	if _, err := ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(name), AssumeRolePolicyDocument: aws.String(ec2Trust)}); err != nil {
		t.Fatal(err)
	}
	if _, err := ic.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String(name), PolicyName: aws.String("instance"), PolicyDocument: aws.String(policy)}); err != nil {
		t.Fatal(err)
	}
	prof, err := ic.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ic.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{InstanceProfileName: aws.String(name), RoleName: aws.String(name)}); err != nil {
		t.Fatal(err)
	}
	lt, err := b.EC2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String(name),
		LaunchTemplateData: &types.RequestLaunchTemplateData{
			ImageId: aws.String("ami-0ed094fb1304fd857"), InstanceType: types.InstanceTypeT3Micro,
			IamInstanceProfile: &types.LaunchTemplateIamInstanceProfileSpecificationRequest{Arn: prof.InstanceProfile.Arn},
			MetadataOptions:    &types.LaunchTemplateInstanceMetadataOptionsRequest{HttpTokens: types.LaunchTemplateHttpTokensStateRequired, HttpPutResponseHopLimit: aws.Int32(2)},
		}})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(lt.LaunchTemplate.LaunchTemplateId)
}

func (p *Principal) provider() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(p.Creds.AccessKeyID, p.Creds.SecretAccessKey, p.Creds.SessionToken)
}

// What moto 5.2.1 enforces by itself, pinned: when one of these changes,
// the bed's own enforcement (enforce.go) may shrink.
func TestMotoIAMEnforcementGaps(t *testing.T) {
	b := enforcedBed(t)
	ctx := testCtx(t)
	ic := adminIAM(b)
	doc := `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"ec2:DescribeVolumes","Resource":"arn:aws:ec2:*:*:volume/*"},
		{"Effect":"Allow","Action":"ec2:DescribeInstances","Resource":"*","Condition":{"StringEquals":{"aws:RequestedRegion":"eu-north-1"}}},
		{"Effect":"Allow","Action":"cloudwatch:DescribeAlarms","Resource":"*"},
		{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::gaps-bucket/p/*"}]}`
	if _, err := ic.CreatePolicy(ctx, &iam.CreatePolicyInput{PolicyName: aws.String("gaps"), PolicyDocument: aws.String(doc)}); err != nil {
		t.Fatal(err)
	}
	u, err := b.NewUser(ctx, "gaps-user", "arn:aws:iam::123456789012:policy/gaps")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s3At(b.Moto.URL).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("gaps-bucket")}); err == nil {
		t.Fatal("moto let the fixed test keys create a bucket with IAM enforced")
	}
	admin := s3.New(s3.Options{Region: Region, BaseEndpoint: aws.String(b.Moto.URL), UsePathStyle: true, Credentials: b.credentials()})
	if _, err := admin.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("gaps-bucket")}); err != nil {
		t.Fatal(err)
	}
	direct := ec2.New(ec2.Options{Region: Region, BaseEndpoint: aws.String(b.Moto.URL), Credentials: u.provider(), RetryMaxAttempts: 1})
	if _, err := direct.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}); errCode(err) != "AccessDenied" {
		t.Errorf("moto now evaluates EC2 resources (%v): the bed's own EC2 enforcement may go", err)
	}
	if _, err := direct.DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); err != nil {
		t.Errorf("moto now evaluates conditions (%v): the bed's own condition evaluation may go", err)
	}
	cw := cloudwatch.New(cloudwatch.Options{Region: Region, BaseEndpoint: aws.String(b.Moto.URL), Credentials: u.provider(), RetryMaxAttempts: 1})
	if _, err := cw.DescribeAlarms(ctx, &cloudwatch.DescribeAlarmsInput{}); err == nil {
		t.Errorf("moto now checks cloudwatch:DescribeAlarms under the IAM prefix: the bed's CloudWatch enforcement may go")
	}
	us3 := s3.New(s3.Options{Region: Region, BaseEndpoint: aws.String(b.Moto.URL), UsePathStyle: true, Credentials: u.provider(), RetryMaxAttempts: 1})
	_, err = us3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("gaps-bucket"), Key: aws.String("p/missing")})
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusNotFound {
		t.Errorf("moto's answer to a missing key without s3:ListBucket is %v, not 404 (the bed turns that 404 into AWS's 403)", err)
	}
	if _, err := us3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("gaps-bucket"), Key: aws.String("q/x")}); errCode(err) != "AccessDenied" {
		t.Errorf("moto does not enforce S3 resources any more: %v", err)
	}
	if _, err := ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("gaps-role"), AssumeRolePolicyDocument: aws.String(ec2Trust)}); err != nil {
		t.Fatal(err)
	}
	sc := sts.New(sts.Options{Region: Region, BaseEndpoint: aws.String(b.Moto.URL), Credentials: b.credentials(), RetryMaxAttempts: 1})
	_, err = sc.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::123456789012:role/gaps-role"), RoleSessionName: aws.String("gaps")})
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusInternalServerError {
		t.Errorf("moto now assumes a service-trusted role under enforcement (%v): profileCredentials may stop pausing it", err)
	}
}

// Through the bed, an instance profile's credentials are authorised as IAM
// authorises them: resources, conditions, tag-on-create, CloudWatch's
// prefix, and S3's 403 for a missing key; IMDS serves them as EC2 does.
func TestEnforcedBedAuthorizesInstanceProfiles(t *testing.T) {
	b := enforcedBed(t)
	ctx := testCtx(t)
	const bucket = "enforced-releases"
	admin := s3.New(s3.Options{Region: Region, BaseEndpoint: aws.String(b.Moto.URL), UsePathStyle: true, Credentials: b.credentials()})
	if _, err := admin.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	lt := profileTemplate(t, b, "enforced-role", instancePolicy(t, bucket, "releases"))
	inst, err := b.NewInstance(ctx, InstanceOptions{LaunchTemplateID: lt})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inst.Close)
	other, err := b.NewInstance(ctx, InstanceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	p := inst.Profile
	if p == nil || p.Role != "enforced-role" || !strings.HasSuffix(p.ARN, ":assumed-role/enforced-role/"+inst.Doc.InstanceID) {
		t.Fatalf("profile credentials: %+v", p)
	}

	// IMDS serves them at the paths the SDK reads.
	rc := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = imds.New(imds.Options{Endpoint: inst.IMDSProxy.URL}) })
	got, err := rc.Retrieve(ctx)
	if err != nil || got.AccessKeyID != p.Creds.AccessKeyID || got.SessionToken != p.Creds.SessionToken {
		t.Fatalf("IMDS credentials: %+v %v", got, err)
	}
	id, err := sts.New(sts.Options{Region: Region, BaseEndpoint: aws.String(b.AWS.URL), Credentials: rc}).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil || aws.ToString(id.Arn) != p.ARN {
		t.Fatalf("GetCallerIdentity with the IMDS credentials: %v %v", id, err)
	}

	c := ec2.New(ec2.Options{Region: Region, BaseEndpoint: aws.String(b.AWS.URL), Credentials: rc, RetryMaxAttempts: 1})
	managed := []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: []types.Tag{{Key: aws.String("rollback-agent:managed"), Value: aws.String("true")}}}}
	snap := func(instance string, tags []types.TagSpecification) error {
		_, err := c.CreateSnapshots(ctx, &ec2.CreateSnapshotsInput{DryRun: aws.Bool(true), TagSpecifications: tags,
			InstanceSpecification: &types.InstanceSpecification{InstanceId: aws.String(instance)}})
		return err
	}
	denied := func(what string, err error, resource string) {
		t.Helper()
		if errCode(err) != "UnauthorizedOperation" || !strings.Contains(err.Error(), p.ARN) || !strings.Contains(err.Error(), resource) {
			t.Errorf("%s: %v, want UnauthorizedOperation naming %s", what, err, resource)
		}
	}
	if _, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{}); err != nil {
		t.Errorf("DescribeVolumes: %v", err)
	}
	if err := snap(inst.Doc.InstanceID, managed); errCode(err) != "DryRunOperation" {
		t.Errorf("CreateSnapshots of its own instance, tagged: %v", err)
	}
	denied("CreateSnapshots without the managed tag", snap(inst.Doc.InstanceID, nil), ":snapshot/*")
	denied("CreateSnapshots of another instance", snap(other.Doc.InstanceID, managed), "instance/"+other.Doc.InstanceID)
	tag := func(key string) error {
		_, err := c.CreateTags(ctx, &ec2.CreateTagsInput{DryRun: aws.Bool(true), Resources: []string{inst.Doc.InstanceID},
			Tags: []types.Tag{{Key: aws.String(key), Value: aws.String("x")}}})
		return err
	}
	if err := tag("rollback-agent:restore-intent"); errCode(err) != "DryRunOperation" {
		t.Errorf("the restore-intent tag on itself: %v", err)
	}
	denied("another tag on itself", tag("Name"), "instance/"+inst.Doc.InstanceID)
	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{other.Doc.InstanceID}}); err == nil || !strings.Contains(err.Error(), "no authorisation model for ec2:TerminateInstances") {
		t.Errorf("an unmodelled action was not refused: %v", err)
	}
	cw := cloudwatch.New(cloudwatch.Options{Region: Region, BaseEndpoint: aws.String(b.AWS.URL), Credentials: rc, RetryMaxAttempts: 1})
	if _, err := cw.DescribeAlarms(ctx, &cloudwatch.DescribeAlarmsInput{AlarmNames: []string{"web-5xx"}}); err != nil {
		t.Errorf("cloudwatch:DescribeAlarms: %v", err)
	}

	// S3 stays moto's, with the 404/403 rule added.
	us3 := s3.New(s3.Options{Region: Region, BaseEndpoint: aws.String(b.AWS.URL), UsePathStyle: true, Credentials: rc, RetryMaxAttempts: 1})
	status := func(key string) int {
		_, err := us3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		var re *smithyhttp.ResponseError
		if errors.As(err, &re) {
			return re.HTTPStatusCode()
		}
		if err != nil {
			t.Fatalf("GetObject %s: %v", key, err)
		}
		return http.StatusOK
	}
	if s := status("releases/demo/channels/prod.json"); s != http.StatusNotFound {
		t.Errorf("a missing channel with s3:ListBucket: HTTP %d, want 404", s)
	}
	if s := status("other/x"); s != http.StatusForbidden {
		t.Errorf("outside the prefix: HTTP %d, want 403", s)
	}
	// The ListBucket of the policy before this issue (StringLike on
	// s3:prefix, which GetObject does not carry): S3 answers 403.
	old := strings.Replace(instancePolicy(t, bucket, "releases"), `"StringLikeIfExists"`, `"StringLike"`, 1)
	if _, err := adminIAM(b).PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("enforced-role"), PolicyName: aws.String("instance"), PolicyDocument: aws.String(old)}); err != nil {
		t.Fatal(err)
	}
	if s := status("releases/demo/channels/prod.json"); s != http.StatusForbidden {
		t.Errorf("a missing channel, ListBucket only under s3:prefix: HTTP %d, want 403", s)
	}
}

// moto's SigV4 check decodes the query before it canonicalises it, so an
// S3 listing with a "/" in its prefix (sent as %2F) fails straight to
// moto; through the proxy (which signs it again, in moto's form, with the
// caller's own keys) it passes, as on AWS.
func TestMotoS3QuerySignatureGap(t *testing.T) {
	b := enforcedBed(t)
	ctx := testCtx(t)
	admin := s3.New(s3.Options{Region: Region, BaseEndpoint: aws.String(b.Moto.URL), UsePathStyle: true, Credentials: b.credentials()})
	if _, err := admin.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("query-gap")}); err != nil {
		t.Fatal(err)
	}
	list := func(url string) error {
		c := s3.New(s3.Options{Region: Region, BaseEndpoint: aws.String(url), UsePathStyle: true, Credentials: b.credentials(), RetryMaxAttempts: 1})
		_, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("query-gap"), Prefix: aws.String("a/b/c.json"), MaxKeys: aws.Int32(1)})
		return err
	}
	if err := list(b.Moto.URL); errCode(err) != "SignatureDoesNotMatch" {
		t.Errorf("moto now checks such a signature right (%v): drop motoS3Signature", err)
	}
	if err := list(b.AWS.URL); err != nil {
		t.Errorf("through the proxy: %v", err)
	}
}

// The same gap with a percent-encoded path: an object key with a ":"
// (a host document named by aws:userid) fails moto's signature check;
// through the proxy, whose S3 requests are signed again as moto reads
// them, it works.
func TestMotoS3PathSignatureGap(t *testing.T) {
	b := enforcedBed(t)
	ctx := testCtx(t)
	admin := s3.New(s3.Options{Region: Region, BaseEndpoint: aws.String(b.Moto.URL), UsePathStyle: true, Credentials: b.credentials()})
	if _, err := admin.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("path-gap")}); err != nil {
		t.Fatal(err)
	}
	put := func(url string) error {
		c := s3.New(s3.Options{Region: Region, BaseEndpoint: aws.String(url), UsePathStyle: true, Credentials: b.credentials(), RetryMaxAttempts: 1})
		_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("path-gap"), Key: aws.String("hosts/AROAEXAMPLE:i-0abc.json"), Body: strings.NewReader("{}")})
		return err
	}
	if err := put(b.Moto.URL); errCode(err) != "SignatureDoesNotMatch" {
		t.Errorf("moto now checks such a signature right (%v): motoMisreads may drop encoded paths", err)
	}
	if err := put(b.AWS.URL); err != nil {
		t.Errorf("through the proxy: %v", err)
	}
}
