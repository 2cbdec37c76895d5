package iamauth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func load(t *testing.T, rel string) *Document {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

const (
	self  = "arn:aws:ec2:us-east-1:123456789012:instance/i-0aaaaaaaaaaaaaaaa"
	other = "arn:aws:ec2:us-east-1:123456789012:instance/i-0bbbbbbbbbbbbbbbb"
)

func ctx(kv ...string) map[string][]string {
	m := map[string][]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = append(m[kv[i]], strings.Split(kv[i+1], "|")...)
	}
	return m
}

// The shipped instance policy, evaluated as AWS documents the elements it
// uses: the instance resource only for the calling instance, tags on
// create, the restore-intent key only, and ListBucket without a prefix.
func TestShippedInstancePolicy(t *testing.T) {
	p := []*Document{load(t, "packaging/iam/instance-policy.json")}
	for _, c := range []struct {
		name             string
		action, resource string
		ctx              map[string][]string
		want             Decision
	}{
		{"snapshot its own instance", "ec2:CreateSnapshots", self, ctx("ec2:SourceInstanceARN", self, "ec2:InstanceID", "i-0aaaaaaaaaaaaaaaa"), Allow},
		{"snapshot another instance", "ec2:CreateSnapshots", other, ctx("ec2:SourceInstanceARN", self, "ec2:InstanceID", "i-0bbbbbbbbbbbbbbbb"), ImplicitDeny},
		{"credentials not from an instance", "ec2:CreateSnapshots", self, ctx("ec2:InstanceID", "i-0aaaaaaaaaaaaaaaa"), ImplicitDeny},
		{"new snapshot tagged managed", "ec2:CreateSnapshots", "arn:aws:ec2:us-east-1::snapshot/*", ctx("aws:RequestTag/rollback-agent:managed", "true", "aws:TagKeys", "rollback-agent:managed|rollback-agent:app"), Allow},
		{"new snapshot without the tag", "ec2:CreateSnapshots", "arn:aws:ec2:us-east-1::snapshot/*", ctx("aws:TagKeys", "Name"), ImplicitDeny},
		{"tag on create", "ec2:CreateTags", "arn:aws:ec2:us-east-1::snapshot/*", ctx("ec2:CreateAction", "CreateSnapshots", "aws:TagKeys", "Name"), Allow},
		{"intent tag on itself", "ec2:CreateTags", self, ctx("ec2:SourceInstanceARN", self, "ec2:InstanceID", "i-0aaaaaaaaaaaaaaaa", "aws:TagKeys", "rollback-agent:restore-intent"), Allow},
		{"another tag on itself", "ec2:CreateTags", self, ctx("ec2:SourceInstanceARN", self, "ec2:InstanceID", "i-0aaaaaaaaaaaaaaaa", "aws:TagKeys", "Name"), ImplicitDeny},
		{"intent tag, no keys", "ec2:DeleteTags", self, ctx("ec2:SourceInstanceARN", self, "ec2:InstanceID", "i-0aaaaaaaaaaaaaaaa"), ImplicitDeny},
		{"our keys on a volume", "ec2:CreateTags", "arn:aws:ec2:us-east-1:123456789012:volume/vol-1", ctx("aws:TagKeys", "rollback-agent:managed|rollback-agent:replaced-by"), Allow},
		{"their key on a volume", "ec2:CreateTags", "arn:aws:ec2:us-east-1:123456789012:volume/vol-1", ctx("aws:TagKeys", "rollback-agent:managed|Name"), ImplicitDeny},
		{"attach a managed volume", "ec2:AttachVolume", "arn:aws:ec2:us-east-1:123456789012:volume/vol-1", ctx("aws:ResourceTag/rollback-agent:managed", "true"), Allow},
		{"attach someone's volume", "ec2:AttachVolume", "arn:aws:ec2:us-east-1:123456789012:volume/vol-1", ctx(), ImplicitDeny},
		{"delete a managed snapshot", "ec2:DeleteSnapshot", "arn:aws:ec2:us-east-1::snapshot/snap-1", ctx("aws:ResourceTag/rollback-agent:managed", "true"), Allow},
		{"delete someone's snapshot", "ec2:DeleteSnapshot", "arn:aws:ec2:us-east-1::snapshot/snap-1", ctx("aws:ResourceTag/rollback-agent:managed", "false"), ImplicitDeny},
		{"list for a 404 (no prefix)", "s3:ListBucket", "arn:aws:s3:::RELEASE_BUCKET", ctx(), Allow},
		{"list the prefix", "s3:ListBucket", "arn:aws:s3:::RELEASE_BUCKET", ctx("s3:prefix", "RELEASE_PREFIX/demo/"), Allow},
		{"list another prefix", "s3:ListBucket", "arn:aws:s3:::RELEASE_BUCKET", ctx("s3:prefix", "secrets/"), ImplicitDeny},
		{"read a release", "s3:GetObject", "arn:aws:s3:::RELEASE_BUCKET/RELEASE_PREFIX/demo/channels/prod.json", ctx(), Allow},
		{"read outside the prefix", "s3:GetObject", "arn:aws:s3:::RELEASE_BUCKET/other/x", ctx(), ImplicitDeny},
		{"describe", "ec2:DescribeVolumes", "*", ctx(), Allow},
		{"terminate", "ec2:TerminateInstances", self, ctx("ec2:SourceInstanceARN", self, "ec2:InstanceID", "i-0aaaaaaaaaaaaaaaa"), ImplicitDeny},
	} {
		d, s, err := Evaluate(p, Request{Action: c.action, Resource: c.resource, Context: c.ctx})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if d != c.want {
			sid := ""
			if s != nil {
				sid = s.Sid
			}
			t.Errorf("%s: %v (statement %q), want %v", c.name, d, sid, c.want)
		}
	}
}

// The policy before this issue denies the 404 check (its ListBucket is
// conditioned on s3:prefix, which GetObject does not carry) and every
// action on the instance (its Resource is a variable IAM does not fill).
func TestPreviousInstancePolicyDenies(t *testing.T) {
	p := []*Document{load(t, "internal/docs/iam/testdata/instance-policy-v0.json")}
	for _, r := range []Request{
		{Action: "s3:ListBucket", Resource: "arn:aws:s3:::RELEASE_BUCKET"},
		{Action: "ec2:CreateSnapshots", Resource: self, Context: ctx("ec2:SourceInstanceARN", self)},
	} {
		if d, _, err := Evaluate(p, r); err != nil || d != ImplicitDeny {
			t.Errorf("%s on %s: %v %v, want implicit deny", r.Action, r.Resource, d, err)
		}
	}
}

func TestExplicitDenyWinsAndUnknownOperatorsFail(t *testing.T) {
	d, err := Parse(`{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"ec2:*","Resource":"*"},
		{"Sid":"NoTerminate","Effect":"Deny","Action":"ec2:TerminateInstances","Resource":"*"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if got, s, _ := Evaluate([]*Document{d}, Request{Action: "ec2:TerminateInstances", Resource: self}); got != ExplicitDeny || s.Sid != "NoTerminate" {
		t.Errorf("deny: %v", got)
	}
	if got, _, _ := Evaluate([]*Document{d}, Request{Action: "EC2:describeVolumes", Resource: "*"}); got != Allow {
		t.Errorf("actions are case-insensitive: %v", got)
	}
	odd, err := Parse(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:*","Resource":"*","Condition":{"DateGreaterThan":{"aws:CurrentTime":"2020-01-01T00:00:00Z"}}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Evaluate([]*Document{odd}, Request{Action: "ec2:DescribeVolumes", Resource: "*"}); err == nil {
		t.Error("an operator the bed does not implement was evaluated")
	}
	if _, err := Parse(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:*","Resource":"*","Frob":1}]}`); err == nil {
		t.Error("an unknown element parsed")
	}
}

func TestVariablesAndWildcards(t *testing.T) {
	r := Request{Context: ctx("aws:username", "alice")}
	for pat, want := range map[string]string{
		"arn:aws:s3:::b/${aws:username}/*":           "arn:aws:s3:::b/alice/*",
		"a${*}b${?}c${$}":                            "a*b?c$",
		"x/${aws:userid, 'nobody'}":                  "x/nobody",
		"plain":                                      "plain",
		"arn:aws:ec2:*:*:instance/${ec2:InstanceID}": "",
	} {
		got, ok := substitute(pat, r)
		if want == "" {
			if ok {
				t.Errorf("%s: a variable without a value substituted to %q", pat, got)
			}
			continue
		}
		if !ok || got != want {
			t.Errorf("substitute(%q) = %q, %v", pat, got, ok)
		}
	}
	for _, c := range []struct {
		p, s string
		want bool
	}{{"a*c", "abbbc", true}, {"a*c", "abbb", false}, {"a?c", "abc", true}, {"*", "", true}, {"a*b*c", "a-b-b-c", true}, {"", "x", false}} {
		if wildcard(c.p, c.s, false) != c.want {
			t.Errorf("wildcard(%q, %q) != %v", c.p, c.s, c.want)
		}
	}
}

func TestTrustPolicy(t *testing.T) {
	ec2, _ := Parse(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}`)
	lambda, _ := Parse(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":["lambda.amazonaws.com"]},"Action":"sts:AssumeRole"}]}`)
	if !ec2.AssumableBy("ec2.amazonaws.com") || lambda.AssumableBy("ec2.amazonaws.com") {
		t.Error("trust policy evaluation is wrong")
	}
}
