package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// stack is the CloudFormation stack of packaging/cloudformation in the
// bed with IAM enforced, created with awscli as a user would.
type stack struct {
	bed    *testbed.Bed
	name   string
	params map[string]string
	out    map[string]string
}

// templatePath is the template the stack is made from.
func templatePath(t *testing.T) string {
	t.Helper()
	root, err := testbed.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "packaging", "cloudformation", "rollback-agent.yaml")
}

// newStack creates the stack; params override ApplicationName=demo,
// ReleaseBucket=NAME-releases and ReleasePrefix=releases.
func newStack(t *testing.T, name string, params map[string]string) *stack {
	t.Helper()
	bed := enforcedPeers.Get(t)
	p := map[string]string{"ApplicationName": "demo", "ReleaseBucket": name + "-releases", "ReleasePrefix": "releases"}
	for k, v := range params {
		p[k] = v
	}
	args := []string{"cloudformation", "create-stack", "--stack-name", name, "--template-body", "file://" + templatePath(t),
		"--capabilities", "CAPABILITY_IAM", "--tags", "Key=rollback-agent:test,Value=" + name, "--parameters"}
	for k, v := range p {
		args = append(args, "ParameterKey="+k+",ParameterValue="+v)
	}
	awscli(t, bed, nil, args...)
	awscli(t, bed, nil, "cloudformation", "wait", "stack-create-complete", "--stack-name", name)
	var desc struct {
		Stacks []struct {
			StackStatus string
			Outputs     []struct{ OutputKey, OutputValue string }
		}
	}
	awscli(t, bed, &desc, "cloudformation", "describe-stacks", "--stack-name", name)
	if len(desc.Stacks) != 1 || desc.Stacks[0].StackStatus != "CREATE_COMPLETE" {
		t.Fatalf("stack %s: %+v", name, desc)
	}
	s := &stack{bed: bed, name: name, params: p, out: map[string]string{}}
	for _, o := range desc.Stacks[0].Outputs {
		s.out[o.OutputKey] = o.OutputValue
	}
	if p["CreateHealthAlarm"] == "true" {
		s.fillAlarmGap(t)
	}
	return s
}

// alarmName is the name the template gives HealthAlarm.
func (s *stack) alarmName() string { return s.params["ApplicationName"] + "-Errors" }

// fillAlarmGap: moto 5.2.1 accepts AWS::CloudWatch::Alarm in a template
// and creates nothing (pinned here: when moto creates it, this goes). The
// alarm is made as the template describes it (HealthAlarm's properties,
// with AlarmMetricName and the other parameters at their defaults).
func (s *stack) fillAlarmGap(t *testing.T) {
	t.Helper()
	var alarms struct{ MetricAlarms []struct{ AlarmName string } }
	awscli(t, s.bed, &alarms, "cloudwatch", "describe-alarms", "--alarm-names", s.alarmName())
	if len(alarms.MetricAlarms) != 0 {
		t.Fatalf("moto now creates AWS::CloudWatch::Alarm from a template: drop fillAlarmGap")
	}
	awscli(t, s.bed, nil, "cloudwatch", "put-metric-alarm", "--alarm-name", s.alarmName(), "--namespace", "rollback-agent",
		"--metric-name", "Errors", "--statistic", "Sum", "--period", "60", "--evaluation-periods", "1", "--threshold", "1",
		"--comparison-operator", "GreaterThanOrEqualToThreshold", "--treat-missing-data", "notBreaching")
}

// instancePolicy is packaging/iam/instance-policy.json as the stack
// fills it in.
func (s *stack) instancePolicy(t *testing.T) map[string]any {
	t.Helper()
	root, _ := testbed.RepoRoot()
	b, err := os.ReadFile(filepath.Join(root, "packaging", "iam", "instance-policy.json"))
	if err != nil {
		t.Fatal(err)
	}
	pairs := []string{"RELEASE_BUCKET", s.params["ReleaseBucket"], "RELEASE_PREFIX", s.params["ReleasePrefix"], "APP_NAME", s.params["ApplicationName"]}
	// Without a topic or bus, the template leaves their placeholders.
	if v := s.params["NotifyTopicArn"]; v != "" {
		pairs = append(pairs, "arn:aws:sns:*:*:NOTIFY_TOPIC", v)
	}
	if v := s.params["NotifyEventBus"]; v != "" {
		pairs = append(pairs, "NOTIFY_EVENT_BUS", v)
	}
	text := strings.NewReplacer(pairs...).Replace(string(b))
	var doc map[string]any
	if err := json.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// role is the instance role's name.
func (s *stack) role() string { return s.out["InstanceRoleName"] }

// setInstancePolicy makes doc the default version of the stack's
// instance policy; t.Cleanup puts the stack's back. IAM keeps five
// versions of a policy: the others go first.
func (s *stack) setInstancePolicy(t *testing.T, doc map[string]any) {
	t.Helper()
	arn := s.out["InstancePolicyArn"]
	put := func(d map[string]any) {
		var vs struct {
			Versions []struct {
				VersionId        string
				IsDefaultVersion bool
			}
		}
		awscli(t, s.bed, &vs, "iam", "list-policy-versions", "--policy-arn", arn)
		for _, v := range vs.Versions {
			if !v.IsDefaultVersion {
				awscli(t, s.bed, nil, "iam", "delete-policy-version", "--policy-arn", arn, "--version-id", v.VersionId)
			}
		}
		b, _ := json.Marshal(d)
		awscli(t, s.bed, nil, "iam", "create-policy-version", "--policy-arn", arn, "--policy-document", string(b), "--set-as-default")
	}
	put(doc)
	t.Cleanup(func() { put(s.instancePolicy(t)) })
}

// policyDocument is the default version of a managed policy.
func (s *stack) policyDocument(t *testing.T, arn string) map[string]any {
	t.Helper()
	var p struct {
		Policy struct{ DefaultVersionId string }
	}
	awscli(t, s.bed, &p, "iam", "get-policy", "--policy-arn", arn)
	var v struct {
		PolicyVersion struct{ Document map[string]any }
	}
	awscli(t, s.bed, &v, "iam", "get-policy-version", "--policy-arn", arn, "--version-id", p.Policy.DefaultVersionId)
	return v.PolicyVersion.Document
}

// without returns the policy with action taken out of the statement sid
// (the statement goes when it had no other action).
func without(t *testing.T, doc map[string]any, sid, action string) map[string]any {
	t.Helper()
	b, _ := json.Marshal(doc)
	var out map[string]any
	json.Unmarshal(b, &out)
	stmts := out["Statement"].([]any)
	for i, st := range stmts {
		m := st.(map[string]any)
		if m["Sid"] != sid {
			continue
		}
		var acts []any
		switch a := m["Action"].(type) {
		case string:
			acts = []any{a}
		case []any:
			acts = a
		}
		n := slices.DeleteFunc(slices.Clone(acts), func(x any) bool { return x == action })
		if len(n) == len(acts) {
			t.Fatalf("statement %s does not grant %s", sid, action)
		}
		if len(n) == 0 {
			out["Statement"] = slices.Delete(stmts, i, i+1)
			return out
		}
		m["Action"] = n
		return out
	}
	t.Fatalf("no statement %s", sid)
	return nil
}

// newHost launches an instance from the stack's launch template (its
// profile's credentials come from IMDS) with loop-device volumes, and
// writes the agent's config: the stack's channel plus extra.
func (s *stack) newHost(t *testing.T, extra string) *host {
	t.Helper()
	h := newHostOn(t, s.bed, testbed.InstanceOptions{LaunchTemplateID: s.out["LaunchTemplateId"], DataPlane: true}, "")
	if h.inst.Profile == nil || h.inst.Profile.Role != s.role() {
		t.Fatalf("the instance has no credentials of the stack's role: %+v", h.inst.Profile)
	}
	for _, kv := range h.env {
		if strings.HasPrefix(kv, "AWS_ACCESS_KEY_ID=") {
			t.Fatalf("the agent would run with static keys (%s), not the instance profile", kv)
		}
	}
	h.writeConfig(fmt.Sprintf("sources: {channel: %q, poll_interval: 1s}\n%s", s.out["ChannelUrl"], extra))
	return h
}

// workstation is an IAM user with the stack's workstation policy: agentctl
// push and promote run with its keys, and moto enforces its S3 grants.
type workstationUser struct {
	s    *stack
	env  []string
	key  string // signing key
	pub  string
	bins testbed.Binaries
}

func (s *stack) workstation(t *testing.T) *workstationUser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u, err := s.bed.NewUser(ctx, s.name+"-workstation", s.out["WorkstationPolicyArn"])
	if err != nil {
		t.Fatal(err)
	}
	w := &workstationUser{s: s, env: append(u.Env(s.bed.BaseEnv()), "AWS_REGION="+testbed.Region), bins: peers.Binaries(t)}
	dir := t.TempDir()
	w.key, w.pub = filepath.Join(dir, "release.key"), filepath.Join(dir, "release.pub")
	mustWork(t, w.ctl(t, "keygen", "--secret-key", w.key, "--public-key", w.pub), "keygen")
	return w
}

func (w *workstationUser) ctl(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(w.bins.Agentctl, args...)
	cmd.Env = w.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run agentctl %v: %v", args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// push uploads dir as version and moves the channel prod to it.
func (w *workstationUser) push(t *testing.T, dir, version, dest string) {
	t.Helper()
	mustWork(t, w.ctl(t, "push", dir, "--bucket", w.s.params["ReleaseBucket"], "--prefix", w.s.params["ReleasePrefix"], "--app", "demo",
		"--version", version, "--sign-key", w.key, "--channel", "prod", "--destination", dest), "push "+version)
}

// doctor runs agentctl doctor -o json on the host.
func (h *host) doctor(t *testing.T) (int, map[string][]string) {
	t.Helper()
	r := h.ctl("doctor", "-o", "json", "--timeout", "2m")
	var rep struct {
		Checks []struct{ Name, Result, Detail, Fix string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor -o json: %v\n%s\n%s", err, r.stdout, r.stderr)
	}
	lines := map[string][]string{}
	for _, c := range rep.Checks {
		lines[c.Name] = append(lines[c.Name], c.Result+": "+c.Detail+" | fix: "+c.Fix)
	}
	return r.code, lines
}

// awscliRaw runs the aws command against moto and returns its output.
func awscliRaw(t *testing.T, bed *testbed.Bed, args ...string) string {
	t.Helper()
	cmd := exec.Command("aws", append(args, "--output", "json")...)
	cmd.Env = bed.CLIEnv()
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("aws %s: %v", strings.Join(args, " "), err)
	}
	return string(b)
}
