package iam

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// shipped are the policy files the packaging ships, with the IAM limit
// each must fit: all are managed policies (the CloudFormation template
// makes them so), 6,144 characters without whitespace. Source: IAM User
// Guide, "IAM and AWS STS quotas", IAM object quotas.
var shipped = []struct {
	file  string
	limit int
}{
	{"packaging/iam/instance-policy.json", 6144},
	{"packaging/iam/workstation-policy.json", 6144},
	{"packaging/iam/kms-policy.json", 6144},
}

// motoValidate runs moto's IAMPolicyDocumentValidator (the checks IAM's
// CreatePolicy and PutRolePolicy make, as moto implements them) on each
// file and returns its verdict per file: "ok" or the error.
func motoValidate(t *testing.T, files ...string) map[string]string {
	t.Helper()
	script := `
import json, sys
from moto.iam.policy_validation import IAMPolicyDocumentValidator
out = {}
for f in sys.argv[1:]:
    try:
        IAMPolicyDocumentValidator(open(f).read()).validate()
        out[f] = "ok"
    except Exception as e:
        out[f] = type(e).__name__ + ": " + str(e)
print(json.dumps(out))
`
	cmd := exec.Command("python3", append([]string{"-c", script}, files...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("moto's policy validator (moto 5.x in the machine's Python) did not run: %v\n%s", err, stderr.String())
	}
	var out map[string]string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("moto validator output: %v\n%s", err, b)
	}
	return out
}

// cfnLint wraps each policy in a template as an AWS::IAM::ManagedPolicy
// and runs cfn-lint once on all of them (it takes seconds to start); it
// returns cfn-lint's findings per file ("" for none). extra templates are
// linted in the same run, keyed by their own path.
func cfnLint(t *testing.T, policies []string, extra ...string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	byTemplate := map[string]string{}
	var templates []string
	for i, f := range policies {
		doc, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var policy any
		if err := json.Unmarshal(doc, &policy); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		tpl := map[string]any{
			"AWSTemplateFormatVersion": "2010-09-09",
			"Resources": map[string]any{"Policy": map[string]any{
				"Type":       "AWS::IAM::ManagedPolicy",
				"Properties": map[string]any{"PolicyDocument": policy},
			}},
		}
		b, _ := json.MarshalIndent(tpl, "", "  ")
		path := filepath.Join(dir, fmt.Sprintf("%d-%s", i, filepath.Base(f)))
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		byTemplate[path] = f
		templates = append(templates, path)
	}
	for _, e := range extra {
		byTemplate[e] = e
		templates = append(templates, e)
	}
	cmd := exec.Command("cfn-lint", append([]string{"--format", "parseable", "--"}, templates...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if _, isExit := err.(*exec.ExitError); err != nil && !isExit {
		t.Fatalf("cfn-lint (1.x, in the machine's Python) did not run: %v", err)
	}
	if err != nil && stdout.Len() == 0 {
		t.Fatalf("cfn-lint failed without findings: %v\n%s", err, stderr.String())
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if line == "" {
			continue
		}
		// parseable: file:line:column:endline:endcolumn:rule:message
		file, _, _ := strings.Cut(line, ":")
		key, ok := byTemplate[file]
		if !ok {
			t.Fatalf("cfn-lint reported on a file it was not given: %s", line)
		}
		out[key] += line + "\n"
	}
	return out
}

// IAM accepts the shipped policies: moto's validator and cfn-lint find
// nothing, and each fits IAM's size limit. The policy the issue found
// broken is rejected by both, so the check can fail.
func TestPoliciesPassIndependentValidators(t *testing.T) {
	var files []string
	for _, s := range shipped {
		files = append(files, filepath.Join(repoRoot(), s.file))
	}
	old := "testdata/instance-policy-v0.json"
	verdicts := motoValidate(t, append(files, old)...)
	lint := cfnLint(t, append(files, old))
	for i, s := range shipped {
		f := files[i]
		if verdicts[f] != "ok" {
			t.Errorf("moto's validator rejects %s: %s", s.file, verdicts[f])
		}
		if lint[f] != "" {
			t.Errorf("cfn-lint finds problems in %s:\n%s", s.file, lint[f])
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(strings.Join(strings.Fields(string(b)), "")); n > s.limit {
			t.Errorf("%s has %d characters without whitespace; IAM allows %d", s.file, n, s.limit)
		}
	}
	if !strings.Contains(verdicts[old], "MalformedPolicyDocument") || !strings.Contains(verdicts[old], "SourceInstanceARN") {
		t.Errorf("moto's validator accepts the old policy: %s", verdicts[old])
	}
	if strings.Count(lint[old], "E3510") != 2 {
		t.Errorf("cfn-lint does not report E3510 twice on the old policy:\n%s", lint[old])
	}
}
