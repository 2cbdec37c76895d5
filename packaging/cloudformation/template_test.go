// Package cloudformation_test checks packaging/cloudformation/rollback-agent.yaml
// with tools nobody here wrote (cfn-lint, shellcheck) and against the
// policy files: the template must carry exactly the policies of
// packaging/iam/, and its user data must call install.sh with options
// install.sh takes. The stack itself is created in moto by the e2e tests
// (internal/e2e/stack_test.go).
package cloudformation_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"

	"github.com/rollback-agent/rollback-agent/internal/docs"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	r, err := docs.RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// template is the parsed template.
func template(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging/cloudformation/rollback-agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Short-form tags (!Sub) would need a CloudFormation-aware parser:
	// the template keeps to plain YAML.
	if regexp.MustCompile(`(?m)^[^#]*\s!(Sub|Ref|GetAtt|If|Equals|Not|Base64|Join|Select|Split)\b`).Match(b) {
		t.Fatal("the template uses short-form intrinsic functions (!Sub...): use the long form (Fn::Sub) so it stays plain YAML")
	}
	var tpl map[string]any
	if err := yaml.Unmarshal(b, &tpl); err != nil {
		t.Fatalf("rollback-agent.yaml: %v", err)
	}
	return tpl
}

func resource(t *testing.T, tpl map[string]any, name string) map[string]any {
	t.Helper()
	r, ok := tpl["Resources"].(map[string]any)[name].(map[string]any)
	if !ok {
		t.Fatalf("the template has no resource %s", name)
	}
	return r
}

func props(t *testing.T, tpl map[string]any, name string) map[string]any {
	t.Helper()
	return resource(t, tpl, name)["Properties"].(map[string]any)
}

// resolver evaluates the intrinsic functions the template's policies and
// user data use, as CloudFormation does, for one set of parameters and
// conditions.
type resolver struct {
	params     map[string]string
	conditions map[string]bool
	refs       map[string]string // Ref of a resource: its physical id
}

var subVar = regexp.MustCompile(`\$\{([^}]*)\}`)

// noValue stands for AWS::NoValue: the containing property or list entry
// goes away.
type noValue struct{}

func (r *resolver) resolve(t *testing.T, v any) any {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		if len(v) == 1 {
			for k, arg := range v {
				switch k {
				case "Ref":
					name := arg.(string)
					if name == "AWS::NoValue" {
						return noValue{}
					}
					if p, ok := r.params[name]; ok {
						return p
					}
					if ref, ok := r.refs[name]; ok {
						return ref
					}
					t.Fatalf("Ref %s: not a parameter or a known resource", name)
				case "Fn::Sub":
					return r.sub(t, arg)
				case "Fn::If":
					args := arg.([]any)
					c, ok := r.conditions[args[0].(string)]
					if !ok {
						t.Fatalf("Fn::If on unknown condition %v", args[0])
					}
					if c {
						return r.resolve(t, args[1])
					}
					return r.resolve(t, args[2])
				case "Fn::Base64":
					return r.resolve(t, arg)
				}
			}
		}
		out := map[string]any{}
		for k, x := range v {
			if y := r.resolve(t, x); y != (noValue{}) {
				out[k] = y
			}
		}
		return out
	case []any:
		var out []any
		for _, x := range v {
			if y := r.resolve(t, x); y != (noValue{}) {
				out = append(out, y)
			}
		}
		return out
	}
	return v
}

// sub is Fn::Sub: ${Name} is a parameter, a resource or an entry of the
// variable map; ${!Literal} is ${Literal}.
func (r *resolver) sub(t *testing.T, arg any) string {
	t.Helper()
	text, vars := "", map[string]any{}
	switch a := arg.(type) {
	case string:
		text = a
	case []any:
		text = a[0].(string)
		vars = a[1].(map[string]any)
	}
	return subVar.ReplaceAllStringFunc(text, func(m string) string {
		name := m[2 : len(m)-1]
		if strings.HasPrefix(name, "!") {
			return "${" + name[1:] + "}"
		}
		if v, ok := vars[name]; ok {
			return fmt.Sprint(r.resolve(t, v))
		}
		if p, ok := r.params[name]; ok {
			return p
		}
		if ref, ok := r.refs[name]; ok {
			return ref
		}
		t.Fatalf("Fn::Sub %q: ${%s} is neither a parameter, a resource nor a variable", text, name)
		return ""
	})
}

// placeholders resolves the template's parameters to the policy files'
// placeholders, so a resolved policy is comparable with its file.
func placeholders() *resolver {
	return &resolver{
		params: map[string]string{"ReleaseBucket": "RELEASE_BUCKET", "ReleasePrefix": "RELEASE_PREFIX", "ApplicationName": "APP_NAME",
			"EbsKmsKeyArn": "arn:aws:kms:*:*:key/EBS_KMS_KEY_ID", "ReleaseBucketKmsKeyArn": "arn:aws:kms:*:*:key/S3_KMS_KEY_ID",
			"NotifyTopicArn": "arn:aws:sns:*:*:NOTIFY_TOPIC", "NotifyEventBus": "NOTIFY_EVENT_BUS"},
		refs:       map[string]string{"InstanceRole": "ROLLBACK_AGENT_INSTANCE_ROLE"},
		conditions: map[string]bool{"HasEbsKey": true, "HasBucketKey": true, "HasNotifyTopic": true, "HasNotifyEventBus": true},
	}
}

func policyFile(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging/iam", name))
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}

func canonical(t *testing.T, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The template grants what the policy files grant, no more and no less:
// the instance role carries instance-policy.json, the workstation managed
// policy is workstation-policy.json, and the two KMS policies together are
// kms-policy.json.
func TestTemplateCarriesThePolicyFiles(t *testing.T) {
	tpl := template(t)
	r := placeholders()
	role := props(t, tpl, "InstanceRole")
	if _, ok := role["Policies"]; ok {
		t.Error("the instance role has inline policies: its grants belong in InstancePolicy, the file's copy")
	}
	// The policies name the role (AWS::IAM::ManagedPolicy Roles), rather
	// than the role its policies: moto 5.2.1's AWS::IAM::Role ignores
	// ManagedPolicyArns, and stores Policies as Python text, not JSON.
	if _, ok := role["ManagedPolicyArns"]; ok {
		t.Error("the instance role lists ManagedPolicyArns: attach through the policies' Roles")
	}
	for _, p := range []string{"InstancePolicy", "EbsKmsPolicy", "BucketKmsPolicy"} {
		if got := canonical(t, props(t, tpl, p)["Roles"]); got != canonical(t, []any{map[string]any{"Ref": "InstanceRole"}}) {
			t.Errorf("%s is attached to %s, want the instance role", p, got)
		}
	}
	for _, c := range []struct {
		what string
		got  any
		file string
	}{
		{"InstancePolicy", props(t, tpl, "InstancePolicy")["PolicyDocument"], "instance-policy.json"},
		{"WorkstationPolicy", props(t, tpl, "WorkstationPolicy")["PolicyDocument"], "workstation-policy.json"},
	} {
		got, want := canonical(t, r.resolve(t, c.got)), canonical(t, policyFile(t, c.file))
		if got != want {
			t.Errorf("%s is not packaging/iam/%s (placeholders resolved):\n got: %s\nwant: %s", c.what, c.file, got, want)
		}
	}
	var kms []any
	for _, name := range []string{"EbsKmsPolicy", "BucketKmsPolicy"} {
		doc := r.resolve(t, props(t, tpl, name)["PolicyDocument"]).(map[string]any)
		kms = append(kms, doc["Statement"].([]any)...)
	}
	want := policyFile(t, "kms-policy.json")["Statement"].([]any)
	norm := func(stmts []any) string {
		var out []string
		for _, s := range stmts {
			m := s.(map[string]any)
			if a, ok := m["Action"].([]any); ok {
				var acts []string
				for _, x := range a {
					acts = append(acts, x.(string))
				}
				sort.Strings(acts)
				m["Action"] = acts
			}
			out = append(out, canonical(t, m))
		}
		sort.Strings(out)
		return strings.Join(out, "\n")
	}
	if got, w := norm(kms), norm(want); got != w {
		t.Errorf("the KMS policies are not packaging/iam/kms-policy.json:\n got: %s\nwant: %s", got, w)
	}
	trust := canonical(t, role["AssumeRolePolicyDocument"])
	if !strings.Contains(trust, `"Service": "ec2.amazonaws.com"`) || strings.Contains(trust, `"AWS"`) {
		t.Errorf("the instance role must trust EC2 and nobody else:\n%s", trust)
	}
}

// cfn-lint (1.x, in the machine's Python) finds nothing in the template.
func TestTemplatePassesCfnLint(t *testing.T) {
	tpl := filepath.Join(repoRoot(t), "packaging/cloudformation/rollback-agent.yaml")
	cmd := exec.Command("cfn-lint", "--format", "parseable", "--", tpl)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if _, isExit := err.(*exec.ExitError); err != nil && !isExit {
		t.Fatalf("cfn-lint (1.x, in the machine's Python) did not run: %v", err)
	}
	if err != nil || stdout.Len() > 0 {
		t.Errorf("cfn-lint finds problems in the template (%v):\n%s%s", err, stdout.String(), stderr.String())
	}
	// And it does find them: a template whose role grants an action that
	// does not exist is reported, so a clean run means something.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	b, _ := os.ReadFile(tpl)
	if err := os.WriteFile(bad, bytes.Replace(b, []byte("- ec2:CreateSnapshots\n"), []byte("- ec2:CreateSnapshotz\n"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command("cfn-lint", "--format", "parseable", "--", bad).Output()
	if !bytes.Contains(out, []byte("W3037:'createsnapshotz' is not one of")) {
		t.Errorf("cfn-lint does not report a made-up action; its clean verdict proves nothing:\n%.2000s", out)
	}
}

// userData resolves the launch template's user data for one set of
// parameters.
func userData(t *testing.T, tpl map[string]any, alarm bool) string {
	t.Helper()
	r := &resolver{
		params: map[string]string{"ReleaseBucket": "my-releases", "ReleasePrefix": "releases", "ApplicationName": "myapp",
			"Channel": "prod", "DataMountPoint": "/data", "AgentPackage": "", "Ladder": "revision,volumes"},
		refs:       map[string]string{"HealthAlarm": "myapp-Errors"},
		conditions: map[string]bool{"DefaultPackage": true, "MakeAlarm": alarm, "HasDataVolume": true, "HasEbsKey": false},
	}
	data := props(t, tpl, "LaunchTemplate")["LaunchTemplateData"].(map[string]any)
	return r.resolve(t, data["UserData"]).(string)
}

// The user data is a shell script shellcheck accepts, and it calls
// install.sh with options install.sh takes and the stack's values.
func TestTemplateUserDataRunsInstallSh(t *testing.T) {
	if _, err := exec.LookPath("shellcheck"); err != nil {
		t.Fatal("shellcheck is not installed: run `make ostools` (make test does)")
	}
	tpl := template(t)
	help, err := exec.Command("bash", filepath.Join(repoRoot(t), "scripts/install.sh"), "--help").Output()
	if err != nil {
		t.Fatalf("install.sh --help: %v", err)
	}
	for _, alarm := range []bool{false, true} {
		script := userData(t, tpl, alarm)
		file := filepath.Join(t.TempDir(), "user-data.sh")
		if err := os.WriteFile(file, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("shellcheck", file).CombinedOutput(); err != nil {
			t.Errorf("shellcheck on the user data (alarm %v): %v\n%s\n%s", alarm, err, out, script)
		}
		for _, opt := range regexp.MustCompile(`(?m)^\s+(--[a-z-]+)`).FindAllStringSubmatch(script, -1) {
			if !bytes.Contains(help, []byte(opt[1]+" ")) {
				t.Errorf("the user data passes %s, which install.sh --help does not list", opt[1])
			}
		}
		for _, want := range []string{
			"aws s3 cp --only-show-errors 's3://my-releases/releases/rollback-agent/install.sh' /run/rollback-agent-install.sh",
			"--package 's3://my-releases/releases/rollback-agent/rollback-agent.rpm'",
			"--application 'myapp'",
			"--channel 's3://my-releases/releases/myapp/channels/prod.json'",
			"--ladder 'revision,volumes'",
		} {
			if !strings.Contains(script, want) {
				t.Errorf("the user data lacks %q:\n%s", want, script)
			}
		}
		if got := strings.Contains(script, "alarm='myapp-Errors'"); got != alarm {
			t.Errorf("alarm %v: the user data names the alarm: %v\n%s", alarm, got, script)
		}
	}
	// The installer and package the user data fetches sit under the
	// release prefix: the instance policy lets the role read nothing else.
	if !reflect.DeepEqual(props(t, tpl, "LaunchTemplate")["LaunchTemplateData"].(map[string]any)["MetadataOptions"],
		map[string]any{"HttpEndpoint": "enabled", "HttpTokens": "required", "HttpPutResponseHopLimit": uint64(2)}) {
		t.Errorf("the launch template must ask for IMDSv2 only with a hop limit of 2: %v",
			props(t, tpl, "LaunchTemplate")["LaunchTemplateData"].(map[string]any)["MetadataOptions"])
	}
}
