package iam

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

var policiesJSON struct {
	once sync.Once
	data *ServiceData
	err  error
}

// serviceData loads cfn-lint's copy of the Service Authorization Reference
// from the machine's Python (cfn-lint is in the image; never installed by
// the tests).
func serviceData(t *testing.T) *ServiceData {
	t.Helper()
	policiesJSON.once.Do(func() {
		out, err := exec.Command("python3", "-c",
			"import os, cfnlint.data.AdditionalSpecs as m; print(os.path.join(os.path.dirname(m.__file__), 'Policies.json'))").Output()
		if err != nil {
			policiesJSON.err = err
			if ee, ok := err.(*exec.ExitError); ok {
				policiesJSON.err = &pyError{err, string(ee.Stderr)}
			}
			return
		}
		policiesJSON.data, policiesJSON.err = LoadServiceData(strings.TrimSpace(string(out)))
	})
	if policiesJSON.err != nil {
		t.Fatalf("cfn-lint 1.x must be installed in the machine's Python (its Policies.json is AWS's service data): %v", policiesJSON.err)
	}
	return policiesJSON.data
}

type pyError struct {
	err    error
	stderr string
}

func (e *pyError) Error() string { return e.err.Error() + ": " + e.stderr }

// everyCall is what the two binaries call, without the scan (which takes
// seconds): enough to exercise every row of the resource table.
func everyCall() []Call {
	var calls []Call
	for _, sc := range []string{
		"ec2.CreateSnapshots", "ec2.CreateImage", "ec2.CreateReplaceRootVolumeTask", "ec2.CreateVolume", "ec2.AttachVolume",
		"ec2.DetachVolume", "ec2.CreateTags", "ec2.DeleteTags", "ec2.DeleteSnapshot", "ec2.DeleteVolume", "ec2.DeregisterImage",
		"ec2.DescribeVolumes", "ec2.DescribeSnapshots", "ec2.DescribeImages", "ec2.DescribeInstances", "ec2.DescribeTags",
		"ec2.DescribeReplaceRootVolumeTasks", "s3.GetObject", "s3.GetObject.VersionId", "cloudwatch.DescribeAlarms", "sts.GetCallerIdentity",
	} {
		parts := strings.Split(sc, ".")
		c := Call{Service: parts[0], Operation: parts[1], Pos: "x.go:1", Via: "call"}
		if len(parts) == 3 {
			c.Field, c.Via = parts[2], "field"
		}
		calls = append(calls, c)
	}
	return calls
}

func loadPolicy(t *testing.T, file string) *Policy {
	t.Helper()
	p, err := LoadPolicy(file)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// narrowed is the instance policy with pattern removed from the resources
// of the statement sid.
func narrowed(t *testing.T, sid, pattern string) *Policy {
	t.Helper()
	p := loadPolicy(t, filepath.Join(repoRoot(), "packaging/iam/instance-policy.json"))
	for i, s := range p.Statement {
		if s.Sid == sid {
			n := slices.DeleteFunc(slices.Clone(s.Resource), func(r string) bool { return r == pattern })
			if len(n) == len(s.Resource) {
				t.Fatalf("statement %s has no resource %s", sid, pattern)
			}
			if len(n) == 0 {
				// A statement needs a resource: narrow it to one that
				// matches nothing the code touches.
				n = strlist{"arn:aws:ec2:*:*:instance/i-00000000000000000"}
			}
			p.Statement[i].Resource = n
			return p
		}
	}
	t.Fatalf("no statement %s", sid)
	return nil
}

type strlist = strList

// The resource check fails when a statement's resource is narrowed away,
// naming the action, the resource type and the statement-less gap; and
// the shipped policy passes it.
func TestResourceCheckFailsWhenAStatementIsNarrowed(t *testing.T) {
	needs, err := Needs(everyCall())
	if err != nil {
		t.Fatal(err)
	}
	if err := serviceData(t).CheckNeeds(needs); err != nil {
		t.Fatalf("resource table vs AWS's service data:\n%v", err)
	}
	ok := Check(loadPolicy(t, filepath.Join(repoRoot(), "packaging/iam/instance-policy.json")), needs, nil)
	if len(ok.Missing) > 0 || len(ok.MissingResource) > 0 {
		t.Fatalf("the shipped instance policy fails the resource check:\n%s", ok)
	}
	for _, c := range []struct {
		sid, pattern string
		want         []string // action on type, as the report names them
	}{
		{"OnlyTheCallingInstance", "arn:aws:ec2:*:*:instance/*",
			[]string{"ec2:AttachVolume on its instance", "ec2:CreateImage on its instance", "ec2:CreateReplaceRootVolumeTask on its instance", "ec2:CreateSnapshots on its instance", "ec2:DetachVolume on its instance"}},
		{"NewCheckpointsAreTagged", "arn:aws:ec2:*::snapshot/*",
			[]string{"ec2:CreateImage on its snapshot", "ec2:CreateSnapshots on its snapshot"}},
		{"ReadReleasesUnderThePrefix", "arn:aws:s3:::RELEASE_BUCKET/RELEASE_PREFIX/*",
			[]string{"s3:GetObject on its object", "s3:GetObjectVersion on its object"}},
		{"RestoredVolumesAreTagged", "arn:aws:ec2:*:*:volume/*", []string{"ec2:CreateVolume on its volume"}},
	} {
		t.Run(c.sid, func(t *testing.T) {
			r := Check(narrowed(t, c.sid, c.pattern), needs, nil)
			if r.OK() || len(r.MissingResource) == 0 {
				t.Fatalf("narrowing %s away from %s passed the check", c.pattern, c.sid)
			}
			text := r.String()
			for _, w := range c.want {
				if !strings.Contains(text, "missing "+w+" resource") {
					t.Errorf("report does not name %q:\n%s", w, text)
				}
			}
			var got []string
			for _, g := range r.MissingResource {
				got = append(got, g.Need.Action+" on its "+g.Resource.Type)
			}
			slices.Sort(got)
			if got = slices.Compact(got); !slices.Equal(got, c.want) {
				t.Errorf("gaps = %v, want exactly %v", got, c.want)
			}
		})
	}
}

// The policy this issue found broken (the instance resource only through
// ${ec2:SourceInstanceARN}, which IAM does not substitute in Resource)
// fails the resource check on every action that needs the instance.
func TestThePreviousInstancePolicyFailsTheResourceCheck(t *testing.T) {
	needs, err := Needs(everyCall())
	if err != nil {
		t.Fatal(err)
	}
	r := Check(loadPolicy(t, "testdata/instance-policy-v0.json"), needs, nil)
	var instance []string
	for _, g := range r.MissingResource {
		if g.Resource.Type == "instance" {
			instance = append(instance, g.Need.Action)
		}
	}
	slices.Sort(instance)
	instance = slices.Compact(instance)
	want := []string{"ec2:AttachVolume", "ec2:CreateImage", "ec2:CreateReplaceRootVolumeTask", "ec2:CreateSnapshots", "ec2:CreateTags", "ec2:DeleteTags", "ec2:DetachVolume"}
	if !slices.Equal(instance, want) {
		t.Errorf("instance gaps of the old policy = %v, want %v\n%s", instance, want, r)
	}
}

func TestResourceMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, arn string
		want         bool
	}{
		{"*", "arn:aws:ec2:us-east-1:1:instance/i-1", true},
		{"arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:us-east-1:123456789012:instance/i-1", true},
		{"arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:us-east-1:123456789012:volume/vol-1", false},
		{"arn:aws:ec2:*::snapshot/*", "arn:aws:ec2:us-east-1::snapshot/*", true},
		{"arn:aws:s3:::B/P/*", "arn:aws:s3:::B/P/a/b/c.json", true},
		{"arn:aws:s3:::B/P/*", "arn:aws:s3:::B/Q/a", false},
		{"arn:aws:s3:::B", "arn:aws:s3:::B/P/a", false},
		{"arn:aws:ec2:*:*:instance/i-?", "arn:aws:ec2:r:1:instance/i-1", true},
		{"${ec2:SourceInstanceARN}", "arn:aws:ec2:r:1:instance/i-1", false},
		{"arn:aws:ec2:*:*:Instance/*", "arn:aws:ec2:r:1:instance/i-1", false},
		{"*", "*", true},
		{"arn:aws:ec2:*:*:instance/*", "*", false},
	} {
		if got := resourceMatch(c.pattern, c.arn); got != c.want {
			t.Errorf("resourceMatch(%q, %q) = %v", c.pattern, c.arn, got)
		}
	}
}

// The service data catches what the table must not contain: a type AWS
// does not list for the action, an ARN of another shape, and a misspelt
// action in a policy.
func TestServiceDataRejectsMadeUpResourcesAndActions(t *testing.T) {
	sd := serviceData(t)
	call := Call{Service: "ec2", Operation: "CreateSnapshots", Pos: "x.go:1"}
	for name, n := range map[string]Need{
		"type not listed": {Action: "ec2:CreateSnapshots", Call: call, Resources: []Resource{{"image", "arn:aws:ec2:us-east-1::image/*"}}},
		"wrong ARN shape": {Action: "ec2:CreateSnapshots", Call: call, Resources: []Resource{{"snapshot", "arn:aws:ec2:us-east-1:123456789012:snapshot/*"}}},
		"no such action":  {Action: "ec2:CreateSnapshotz", Call: call, Resources: []Resource{anyResource}},
		"star for scoped": {Action: "ec2:CreateSnapshots", Call: call, Resources: []Resource{anyResource}},
	} {
		if err := sd.CheckNeeds([]Need{n}); err == nil {
			t.Errorf("%s: accepted %+v", name, n)
		}
	}
	file := filepath.Join(t.TempDir(), "p.json")
	doc := `{"Version":"2012-10-17","Statement":[{"Sid":"A","Effect":"Allow","Action":["ec2:CreateSnapshotz","s3:Get*"],"Resource":"*"}]}`
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	err := sd.CheckActions(loadPolicy(t, file))
	if err == nil || !strings.Contains(err.Error(), "ec2:CreateSnapshotz") || strings.Contains(err.Error(), "s3:Get*") {
		t.Errorf("CheckActions = %v, want only ec2:CreateSnapshotz named", err)
	}
	for _, f := range []string{"instance-policy.json", "workstation-policy.json", "kms-policy.json"} {
		if err := sd.CheckActions(loadPolicy(t, filepath.Join(repoRoot(), "packaging/iam", f))); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
