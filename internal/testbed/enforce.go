package testbed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/rollback-agent/rollback-agent/internal/testbed/iamauth"
)

// IAM enforcement on the bed. What moto 5.2.1 enforces with
// INITIAL_NO_AUTH_ACTION_COUNT (moto/core/authorization.py,
// moto/iam/access_control.py; pinned by enforce_test.go):
//
//   - authentication: an unknown access key, a wrong session token or a
//     bad signature is refused (EC2: AuthFailure);
//   - S3: the action (GetObject, PutObject, ListBucket, HeadObject as
//     GetObject, ?versionId as GetObjectVersion...) on the bucket or
//     object ARN, against the policies' Action and Resource;
//   - everything else: the action only, against the resource "*": a
//     statement scoped to ARNs never matches, so moto refuses EC2 calls
//     that AWS allows (ec2:CreateSnapshots on arn:aws:ec2:*:*:instance/*);
//   - CloudWatch under the credential scope's name (monitoring:), not the
//     IAM prefix (cloudwatch:), so cloudwatch:DescribeAlarms never matches;
//   - no conditions at all for identity policies (an unmet StringEquals
//     still allows), no tag-on-create (ec2:CreateTags), and no 403 for a
//     missing key without s3:ListBucket (moto answers 404);
//   - sts:AssumeRole of a role trusting a service principal fails with
//     HTTP 500 (a TypeError in the trust check).
//
// So for the principals it hands credentials to, the bed decides EC2 and
// CloudWatch calls itself (iamauth, with the resources and condition keys
// the request carries, ec2auth.go) and passes what it allowed to moto
// signed as its administrator; S3 and STS stay moto's, with the 404→403
// rule of S3 added; and the bed assumes an instance profile's role the
// way EC2 does, as the service, with moto's checks paused for that one
// call.

// bootstrapCalls is INITIAL_NO_AUTH_ACTION_COUNT: the requests moto lets
// through before it enforces IAM, the three that make the administrator.
const bootstrapCalls = 3

// adminUser is the IAM user the bed and its tools sign as.
const adminUser = "testbed-admin"

// bootstrapAdmin makes the administrator in moto's unauthenticated window.
func bootstrapAdmin(ctx context.Context, motoURL string) (aws.Credentials, error) {
	c := iam.New(iam.Options{Region: Region, BaseEndpoint: aws.String(motoURL), RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, "")})
	if _, err := c.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(adminUser)}); err != nil {
		return aws.Credentials{}, wrap("IAM enforcement: CreateUser "+adminUser, err)
	}
	doc := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`
	if _, err := c.PutUserPolicy(ctx, &iam.PutUserPolicyInput{UserName: aws.String(adminUser), PolicyName: aws.String("everything"), PolicyDocument: aws.String(doc)}); err != nil {
		return aws.Credentials{}, wrap("IAM enforcement: PutUserPolicy", err)
	}
	k, err := c.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(adminUser)})
	if err != nil {
		return aws.Credentials{}, wrap("IAM enforcement: CreateAccessKey", err)
	}
	return aws.Credentials{AccessKeyID: aws.ToString(k.AccessKey.AccessKeyId), SecretAccessKey: aws.ToString(k.AccessKey.SecretAccessKey), Source: "testbed-admin"}, nil
}

// Principal is an identity the bed handed credentials to.
type Principal struct {
	ARN     string // arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION or arn:aws:iam::ACCOUNT:user/NAME
	Account string
	Role    string // role name, for an assumed role
	User    string // user name, for a user
	// SourceInstance is the ARN of the instance whose profile the
	// credentials came from: ec2:SourceInstanceARN of its requests.
	SourceInstance string
	// UserID is aws:userid: ROLE-ID:SESSION-NAME for an assumed role (the
	// session name of an instance profile's is the instance id), the
	// user's unique id for a user.
	UserID string
	Creds  aws.Credentials
}

// enforcer is the bed's side of IAM enforcement.
type enforcer struct {
	b      *Bed
	iam    *iam.Client
	signer *v4.Signer

	mu      sync.Mutex
	byKey   map[string]*Principal
	decided map[string]int // "ec2:CreateSnapshots allow" → count
}

func newEnforcer(b *Bed) *enforcer {
	return &enforcer{
		b:       b,
		iam:     iam.New(iam.Options{Region: Region, BaseEndpoint: aws.String(b.Moto.URL), Credentials: b.credentials()}),
		signer:  v4.NewSigner(),
		byKey:   map[string]*Principal{},
		decided: map[string]int{},
	}
}

// count records a decision.
func (e *enforcer) count(action string, d iamauth.Decision) {
	e.mu.Lock()
	e.decided[action+" "+d.String()]++
	e.mu.Unlock()
}

// IAMDecisions returns how often the bed decided each action itself, by
// "ACTION allow" or "ACTION implicit deny": a test proves with it that its
// calls were judged, not waved through.
func (b *Bed) IAMDecisions() map[string]int {
	out := map[string]int{}
	if b.enf == nil {
		return out
	}
	b.enf.mu.Lock()
	defer b.enf.mu.Unlock()
	for k, v := range b.enf.decided {
		out[k] = v
	}
	return out
}

func (e *enforcer) register(p *Principal) {
	e.mu.Lock()
	e.byKey[p.Creds.AccessKeyID] = p
	e.mu.Unlock()
}

func (e *enforcer) lookup(key string) *Principal {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.byKey[key]
}

// EnforcesIAM reports whether the bed was started with EnforceIAM.
func (b *Bed) EnforcesIAM() bool { return b.enf != nil }

// NewUser makes an IAM user with the managed policies attached and an
// access key, and registers it, so the proxy enforces its policies. The
// workstation's identity in the tests.
func (b *Bed) NewUser(ctx context.Context, name string, policyARNs ...string) (*Principal, error) {
	c := iam.New(iam.Options{Region: Region, BaseEndpoint: aws.String(b.Moto.URL), Credentials: b.credentials()})
	u, err := c.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(name)})
	if err != nil {
		return nil, wrap("CreateUser "+name, err)
	}
	for _, arn := range policyARNs {
		if _, err := c.AttachUserPolicy(ctx, &iam.AttachUserPolicyInput{UserName: aws.String(name), PolicyArn: aws.String(arn)}); err != nil {
			return nil, wrap("AttachUserPolicy "+arn, err)
		}
	}
	k, err := c.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(name)})
	if err != nil {
		return nil, wrap("CreateAccessKey "+name, err)
	}
	arn := aws.ToString(u.User.Arn)
	p := &Principal{ARN: arn, Account: accountOf(arn), User: name, UserID: aws.ToString(u.User.UserId),
		Creds: aws.Credentials{AccessKeyID: aws.ToString(k.AccessKey.AccessKeyId), SecretAccessKey: aws.ToString(k.AccessKey.SecretAccessKey)}}
	if b.enf != nil {
		b.enf.register(p)
	}
	return p, nil
}

// Env is an environment for a process acting as p (agentctl on a
// workstation): the bed's environment with p's keys.
func (p *Principal) Env(base []string) []string {
	env := withoutCredentials(base)
	env = append(env, "AWS_ACCESS_KEY_ID="+p.Creds.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+p.Creds.SecretAccessKey)
	if p.Creds.SessionToken != "" {
		env = append(env, "AWS_SESSION_TOKEN="+p.Creds.SessionToken)
	}
	return env
}

func accountOf(arn string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) < 5 {
		return ""
	}
	return parts[4]
}

// policies loads the identity policies of a principal from moto, fresh
// for every request: a test may change them between calls.
func (e *enforcer) policies(ctx context.Context, p *Principal) ([]*iamauth.Document, error) {
	var docs []string
	var attached []string
	switch {
	case p.Role != "":
		names, err := e.iam.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: aws.String(p.Role)})
		if err != nil {
			return nil, fmt.Errorf("ListRolePolicies %s: %w", p.Role, err)
		}
		for _, n := range names.PolicyNames {
			out, err := e.iam.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(p.Role), PolicyName: aws.String(n)})
			if err != nil {
				return nil, fmt.Errorf("GetRolePolicy %s %s: %w", p.Role, n, err)
			}
			docs = append(docs, aws.ToString(out.PolicyDocument))
		}
		out, err := e.iam.ListAttachedRolePolicies(ctx, &iam.ListAttachedRolePoliciesInput{RoleName: aws.String(p.Role)})
		if err != nil {
			return nil, fmt.Errorf("ListAttachedRolePolicies %s: %w", p.Role, err)
		}
		for _, a := range out.AttachedPolicies {
			attached = append(attached, aws.ToString(a.PolicyArn))
		}
	case p.User != "":
		names, err := e.iam.ListUserPolicies(ctx, &iam.ListUserPoliciesInput{UserName: aws.String(p.User)})
		if err != nil {
			return nil, fmt.Errorf("ListUserPolicies %s: %w", p.User, err)
		}
		for _, n := range names.PolicyNames {
			out, err := e.iam.GetUserPolicy(ctx, &iam.GetUserPolicyInput{UserName: aws.String(p.User), PolicyName: aws.String(n)})
			if err != nil {
				return nil, fmt.Errorf("GetUserPolicy %s %s: %w", p.User, n, err)
			}
			docs = append(docs, aws.ToString(out.PolicyDocument))
		}
		out, err := e.iam.ListAttachedUserPolicies(ctx, &iam.ListAttachedUserPoliciesInput{UserName: aws.String(p.User)})
		if err != nil {
			return nil, fmt.Errorf("ListAttachedUserPolicies %s: %w", p.User, err)
		}
		for _, a := range out.AttachedPolicies {
			attached = append(attached, aws.ToString(a.PolicyArn))
		}
	}
	for _, arn := range attached {
		pol, err := e.iam.GetPolicy(ctx, &iam.GetPolicyInput{PolicyArn: aws.String(arn)})
		if err != nil {
			return nil, fmt.Errorf("GetPolicy %s: %w", arn, err)
		}
		v, err := e.iam.GetPolicyVersion(ctx, &iam.GetPolicyVersionInput{PolicyArn: aws.String(arn), VersionId: pol.Policy.DefaultVersionId})
		if err != nil {
			return nil, fmt.Errorf("GetPolicyVersion %s: %w", arn, err)
		}
		docs = append(docs, aws.ToString(v.PolicyVersion.Document))
	}
	var out []*iamauth.Document
	for _, d := range docs {
		// IAM returns documents URL-encoded.
		if dec, err := url.QueryUnescape(d); err == nil {
			d = dec
		}
		doc, err := iamauth.Parse(d)
		if err != nil {
			return nil, err
		}
		out = append(out, doc)
	}
	return out, nil
}

var accessKeyRE = regexp.MustCompile(`Credential=([^/,\s]+)/`)

// authorize is the proxy's authorizer with IAM enforced.
func (e *enforcer) authorize(r *http.Request, body []byte, op Op) (*reply, bool, func(*call, *reply) *reply) {
	m := accessKeyRE.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		return nil, false, nil
	}
	p := e.lookup(m[1])
	if p == nil {
		// The bed's own EC2 calls through the proxy are signed again too:
		// a route that edits the request (motogaps.go) breaks the
		// signature, which moto checks with IAM enforced. Any other key
		// is moto's to refuse.
		if m[1] == e.b.creds.AccessKeyID && (op.Service == "ec2" || (op.Service == "s3" && motoMisreads(r))) {
			return nil, true, nil
		}
		return nil, false, nil
	}
	// The session token must be the one issued with the key, as moto
	// checks for the calls it authenticates itself.
	if p.Creds.SessionToken != "" && r.Header.Get("X-Amz-Security-Token") != p.Creds.SessionToken {
		return writeDenied(op, http.StatusForbidden, "AuthFailure", "AWS was not able to validate the provided access credentials"), false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var reqs []iamauth.Request
	var err error
	switch op.Service {
	case "ec2":
		form, perr := url.ParseQuery(string(body))
		if perr != nil {
			return writeDenied(op, http.StatusBadRequest, "InvalidParameterValue", perr.Error()), false, nil
		}
		reqs, err = e.ec2Requests(ctx, p, op.Action, form)
	case "monitoring":
		form, _ := url.ParseQuery(string(body))
		reqs = e.cloudwatchRequests(p, op.Action, form)
	case "sns", "events":
		// moto checks these against "*" only: the bed decides
		// (notifyauth.go).
		if op.Service == "sns" {
			form, _ := url.ParseQuery(string(body))
			reqs, err = e.snsRequests(p, op.Action, form)
		} else {
			reqs, err = e.eventsRequests(p, op.Action, body)
		}
		if err != nil {
			return internalError("IAM enforcement of "+op.String(), err), false, nil
		}
		docs, err := e.policies(ctx, p)
		if err != nil {
			return internalError("IAM enforcement: the policies of "+p.ARN, err), false, nil
		}
		return e.decide(p, op, reqs, docs), true, nil
	case "s3":
		// A PUT is decided by the bed (moto substitutes no policy
		// variable, notifyauth.go) and signed again as the
		// administrator; the rest moto enforces itself, on the caller's
		// signature, signed again (with the caller's own keys) only where
		// moto would misread it (motoS3Signature).
		if rq, ok := e.s3PutRequest(p, r); ok {
			docs, err := e.policies(ctx, p)
			if err != nil {
				return internalError("IAM enforcement: the policies of "+p.ARN, err), false, nil
			}
			if deny := e.decide(p, op, []iamauth.Request{rq}, docs); deny != nil {
				return deny, false, nil
			}
			r.Header.Set(decidedHeader, "1")
			return nil, true, nil
		}
		var after func(*call, *reply) *reply
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && strings.HasSuffix(op.Action, " object") {
			after = e.s3NotFound(p, r)
		}
		return nil, motoMisreads(r), after
	default:
		return nil, false, nil
	}
	if err != nil {
		return internalError("IAM enforcement of "+op.String(), err), false, nil
	}
	docs, err := e.policies(ctx, p)
	if err != nil {
		return internalError("IAM enforcement: the policies of "+p.ARN, err), false, nil
	}
	for _, rq := range reqs {
		rq.Principal = p.ARN
		d, _, err := iamauth.Evaluate(docs, rq)
		if err != nil {
			return internalError("IAM enforcement of "+op.String(), err), false, nil
		}
		e.count(rq.Action, d)
		if d != iamauth.Allow {
			return deniedReply(op, rq, d), false, nil
		}
	}
	return nil, true, nil
}

// deniedReply is AWS's answer to a request IAM denies, in the service's
// protocol. The message has the shape AWS gives (minus EC2's encoded
// authorization message): it names the principal, the action and the
// resource.
func deniedReply(op Op, rq iamauth.Request, d iamauth.Decision) *reply {
	why := "because no identity-based policy allows the " + rq.Action + " action"
	if d == iamauth.ExplicitDeny {
		why = "with an explicit deny in an identity-based policy"
	}
	msg := fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s %s", rq.Principal, rq.Action, rq.Resource, why)
	if op.Service == "ec2" {
		return ec2Error(http.StatusForbidden, "UnauthorizedOperation", "You are not authorized to perform this operation. "+msg)
	}
	return writeDenied(op, http.StatusForbidden, "AccessDenied", msg)
}

// writeDenied is an error answer in op's protocol.
func writeDenied(op Op, status int, code, msg string) *reply {
	switch op.Service {
	case "ec2":
		return ec2Error(status, code, msg)
	case "monitoring":
		// awsQuery errors: ErrorResponse/Error.
		body := fmt.Sprintf(`<ErrorResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>testbed-%d</RequestId></ErrorResponse>`,
			code, xmlEscape(msg), time.Now().UnixNano())
		return &reply{Status: status, Header: http.Header{"Content-Type": {"text/xml"}}, Body: []byte(body)}
	}
	b, _ := json.Marshal(map[string]string{"__type": code, "message": msg})
	return &reply{Status: status, Header: http.Header{"Content-Type": {"application/x-amz-json-1.1"}}, Body: b}
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

// sign signs an upstream request again: an EC2 or CloudWatch request as
// the bed's administrator (the bed decided it), an S3 request with the
// caller's own keys in the form moto checks (motoS3Signature), for the
// service and region of its original signature.
func (e *enforcer) sign(req *http.Request, body []byte) error {
	svc, region := "ec2", Region
	if m := credentialScope.FindStringSubmatch(req.Header.Get("Authorization")); m != nil {
		svc = m[1]
	}
	if m := regexp.MustCompile(`Credential=[^/]+/[0-9]+/([^/]+)/`).FindStringSubmatch(req.Header.Get("Authorization")); m != nil {
		region = m[1]
	}
	if svc == "s3" {
		creds := e.b.creds
		if m := accessKeyRE.FindStringSubmatch(req.Header.Get("Authorization")); m != nil && req.Header.Get(decidedHeader) == "" {
			if p := e.lookup(m[1]); p != nil {
				creds = p.Creds
			}
		}
		req.Header.Del(decidedHeader)
		return motoS3Signature(req, body, creds, region, time.Now())
	}
	for _, h := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-Sha256"} {
		req.Header.Del(h)
	}
	sum := sha256.Sum256(body)
	creds := e.b.creds
	return e.signer.SignHTTP(req.Context(), creds, req, hex.EncodeToString(sum[:]), svc, region, time.Now())
}

// cloudwatchRequests: DescribeAlarms on each named alarm, or on every
// alarm when none is named.
func (e *enforcer) cloudwatchRequests(p *Principal, action string, f url.Values) []iamauth.Request {
	base := map[string][]string{"aws:RequestedRegion": {Region}}
	prefix := "arn:aws:cloudwatch:" + Region + ":" + p.Account + ":alarm:"
	names := listParam(f, "AlarmNames.member")
	if len(names) == 0 {
		return []iamauth.Request{{Action: "cloudwatch:" + action, Resource: prefix + "*", Context: base}}
	}
	var out []iamauth.Request
	for _, n := range names {
		out = append(out, iamauth.Request{Action: "cloudwatch:" + action, Resource: prefix + n, Context: base})
	}
	return out
}

// s3NotFound applies S3's rule for a missing key to moto's answer: 404
// only to a caller with s3:ListBucket on the bucket, 403 to anyone else
// (S3 API reference, GetObject and HeadObject: "If you don't have the
// s3:ListBucket permission, Amazon S3 returns an HTTP status code 403
// Access Denied error"). The bed evaluates ListBucket with the request's
// context, which has no s3:prefix.
func (e *enforcer) s3NotFound(p *Principal, r *http.Request) func(*call, *reply) *reply {
	return func(c *call, rep *reply) *reply {
		if rep.Status != http.StatusNotFound || strings.Contains(string(rep.Body), "NoSuchBucket") {
			return rep
		}
		bucket, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if r.Method == http.MethodHead && !e.bucketExists(c.Ctx, bucket) {
			return rep
		}
		docs, err := e.policies(c.Ctx, p)
		if err != nil {
			return internalError("IAM enforcement: the policies of "+p.ARN, err)
		}
		rq := iamauth.Request{Principal: p.ARN, Action: "s3:ListBucket", Resource: "arn:aws:s3:::" + bucket,
			Context: map[string][]string{"aws:RequestedRegion": {Region}}}
		d, _, err := iamauth.Evaluate(docs, rq)
		if err != nil {
			return internalError("IAM enforcement of s3:ListBucket", err)
		}
		e.count(rq.Action, d)
		if d == iamauth.Allow {
			return rep
		}
		body := []byte{}
		if r.Method != http.MethodHead {
			body = fmt.Appendf(nil, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>testbed</RequestId></Error>`)
		}
		return &reply{Status: http.StatusForbidden, Header: http.Header{"Content-Type": {"application/xml"}}, Body: body}
	}
}

// bucketExists asks moto, as the administrator.
func (e *enforcer) bucketExists(ctx context.Context, bucket string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, e.b.Moto.URL+"/"+url.PathEscape(bucket), nil)
	if err != nil {
		return false
	}
	req.Host = strings.TrimPrefix(e.b.Moto.URL, "http://")
	if err := e.signS3(req); err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (e *enforcer) signS3(req *http.Request) error {
	sum := sha256.Sum256(nil)
	req.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(sum[:]))
	return e.signer.SignHTTP(req.Context(), e.b.creds, req, hex.EncodeToString(sum[:]), "s3", Region, time.Now())
}
