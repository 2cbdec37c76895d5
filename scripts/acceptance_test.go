// Package scripts_test runs scripts/aws-acceptance.sh: its refusals, and
// its AWS side against the test bed (moto behind the project's proxy),
// where the steps that need a real host are skipped by design and say so.
package scripts_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

var peers testbed.Lazy

func TestMain(m *testing.M) {
	code := m.Run()
	peers.Close()
	os.Exit(code)
}

func script(t *testing.T) string {
	t.Helper()
	root, err := testbed.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "scripts", "aws-acceptance.sh")
}

// run is one run of the script.
type run struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    bytes.Buffer
	lines  chan string
	done   chan struct{}
	exit   int
	waited error
}

// start runs the script with env; its stdout and stderr are kept, and
// each line is sent on lines too.
func start(t *testing.T, env []string, args ...string) *run {
	t.Helper()
	r := &run{lines: make(chan string, 1024), done: make(chan struct{})}
	r.cmd = exec.Command("bash", append([]string{script(t)}, args...)...)
	r.cmd.Env = env
	pr, pw := io.Pipe()
	r.cmd.Stdout, r.cmd.Stderr = pw, pw
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			r.mu.Lock()
			r.out.WriteString(sc.Text() + "\n")
			r.mu.Unlock()
			select {
			case r.lines <- sc.Text():
			default:
			}
		}
		close(r.lines)
	}()
	go func() {
		r.waited = r.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(r.waited, &ee) {
			r.exit = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				r.exit = 128 + int(ws.Signal())
			}
		}
		pw.Close()
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

func (r *run) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// wait waits for the end of the run and returns its exit status.
func (r *run) wait(t *testing.T, bound time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(bound):
		r.cmd.Process.Kill()
		<-r.done
		t.Fatalf("the script did not end within %s:\n%s", bound, r.output())
	}
	for range r.lines {
	}
	return r.exit
}

// noCredentials is an environment in which the SDKs find no credentials.
func noCredentials(extra ...string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(), "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_EC2_METADATA_DISABLED=true", "AWS_REGION=us-east-1"}
	return append(env, extra...)
}

// Without --yes-create-resources the script prints the cost estimate and
// refuses before asking AWS anything: here AWS is an address where
// nothing listens, and the answer comes at once.
func TestAcceptanceRefusesWithoutTheFlag(t *testing.T) {
	r := start(t, noCredentials("AWS_ENDPOINT_URL=http://127.0.0.1:9"), "--package", "/nonexistent.rpm")
	code := r.wait(t, time.Minute)
	out := r.output()
	if code != 2 || !strings.Contains(out, "refusing: this creates billable resources") || !strings.Contains(out, "--yes-create-resources") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	if !strings.HasPrefix(out, "acceptance: cost estimate") || !strings.Contains(out, "total ") {
		t.Errorf("the cost estimate does not come first:\n%s", out)
	}
}

// With the flag but no credentials, it refuses too (after the estimate).
func TestAcceptanceRefusesWithoutCredentials(t *testing.T) {
	bins := peers.Binaries(t)
	r := start(t, noCredentials(), "--yes-create-resources", "--package", script(t), "--agentctl", bins.Agentctl)
	code := r.wait(t, 2*time.Minute)
	out := r.output()
	if code != 2 || !strings.Contains(out, "refusing: no working AWS credentials") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	if strings.Contains(out, "run ra-accept-") {
		t.Errorf("it started a run without credentials:\n%s", out)
	}
}

var runID = regexp.MustCompile(`acceptance: \[[0-9]+s\] run (ra-accept-[0-9]+-[0-9]+):`)

// bedEnv is the environment of a test-bed run: the bed's keys, AWS
// through its proxy (which plays what moto lacks: launch templates' instance
// profiles, faithful images).
func bedEnv(bed *testbed.Bed) []string {
	env := noCredentials()
	for _, kv := range bed.BaseEnv() {
		if strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	return env
}

// nothingLeft checks with awscli that the run left nothing in the bed.
func nothingLeft(t *testing.T, bed *testbed.Bed, run string) {
	t.Helper()
	app := "accept" + regexp.MustCompile(`[^0-9]`).ReplaceAllString(run, "")
	aws := func(args ...string) string {
		cmd := exec.Command("aws", append(args, "--output", "text")...)
		cmd.Env = bed.CLIEnv()
		b, err := cmd.CombinedOutput()
		if err != nil {
			return "error: " + string(b)
		}
		return strings.TrimSpace(string(b))
	}
	for what, out := range map[string]string{
		"instances": aws("ec2", "describe-instances", "--filters", "Name=tag:rollback-agent:acceptance,Values="+run,
			"Name=instance-state-name,Values=pending,running,stopping,stopped", "--query", "Reservations[].Instances[].InstanceId"),
		"addresses": aws("ec2", "describe-addresses", "--filters", "Name=tag:rollback-agent:acceptance,Values="+run, "--query", "Addresses[].AllocationId"),
		"images":    aws("ec2", "describe-images", "--owners", "self", "--filters", "Name=tag:rollback-agent:app,Values="+app, "--query", "Images[].ImageId"),
		"snapshots": aws("ec2", "describe-snapshots", "--owner-ids", "self", "--filters", "Name=tag:rollback-agent:app,Values="+app, "--query", "Snapshots[].SnapshotId"),
		"volumes":   aws("ec2", "describe-volumes", "--filters", "Name=tag:rollback-agent:app,Values="+app, "--query", "Volumes[].VolumeId"),
		"buckets":   aws("s3api", "list-buckets", "--query", "Buckets[?Name=='"+run+"'].Name"),
		"stacks":    aws("cloudformation", "list-stacks", "--query", "StackSummaries[?StackName=='"+run+"' && StackStatus!='DELETE_COMPLETE'].StackName"),
		"roles":     aws("iam", "list-roles", "--query", "Roles[?starts_with(RoleName, '"+run+"')].RoleName"),
		"policies":  aws("iam", "list-policies", "--scope", "Local", "--query", "Policies[?starts_with(PolicyName, '"+run+"')].PolicyName"),
	} {
		if out != "" {
			t.Errorf("the run left %s: %s", what, out)
		}
	}
}

// The AWS side of the acceptance run, against the test bed: the stack,
// the installer in S3, an instance from the launch template with an
// Elastic IP, v1 and a failing v2 pushed, and restore-instance moving the
// Elastic IP to a new instance; the host's steps are named as skipped;
// everything is deleted at the end.
func TestAcceptanceAgainstTheBed(t *testing.T) {
	bed := peers.Get(t)
	bins := peers.Binaries(t)
	r := start(t, bedEnv(bed), "--yes-create-resources", "--test-bed", "--agentctl", bins.Agentctl)
	code := r.wait(t, 10*time.Minute)
	out := r.output()
	t.Logf("the run:\n%s", out)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		"PASS: CloudFormation stack ", "PASS: installer in s3://", "PASS: instance i-", "PASS: workstation: v1 pushed",
		"PASS: workstation: v2 (its ValidateService fails) pushed", "PASS: restore-instance: i-",
		"SKIPPED (needs a real host; test bed by design): v2 fails and the agent rolls back to v1 by itself",
		"SKIPPED (needs a real host; test bed by design): a volume restore", "SKIPPED (needs a real host; test bed by design): a root restore",
		"cleanup done: nothing tagged",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the run did not say %q:\n%s", want, out)
		}
	}
	m := runID.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no run id in:\n%s", out)
	}
	nothingLeft(t, bed, m[1])
}

// Ctrl-C in the middle of a run deletes what was made so far, and the
// script exits 130.
func TestAcceptanceCleansUpOnCtrlC(t *testing.T) {
	bed := peers.Get(t)
	bins := peers.Binaries(t)
	r := start(t, bedEnv(bed), "--yes-create-resources", "--test-bed", "--agentctl", bins.Agentctl)
	var id string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for id == "" {
		select {
		case line, ok := <-r.lines:
			if !ok {
				t.Fatalf("the run ended before it made the instance:\n%s", r.output())
			}
			if strings.Contains(line, "PASS: instance i-") {
				id = runID.FindStringSubmatch(r.output())[1]
			}
		case <-ctx.Done():
			t.Fatalf("no instance made within 5 minutes:\n%s", r.output())
		}
	}
	// The stack, the bucket with the installer, an instance and an
	// Elastic IP exist now.
	if err := r.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	code := r.wait(t, 5*time.Minute)
	out := r.output()
	if code != 130 || !strings.Contains(out, "] interrupted") || !strings.Contains(out, "cleanup done: nothing tagged") {
		t.Errorf("exit %d after SIGINT:\n%s", code, out)
	}
	if strings.Contains(out, "PASS: restore-instance") {
		t.Errorf("the run went on after SIGINT:\n%s", out)
	}
	nothingLeft(t, bed, id)
}

// --help lists the flag; an unknown option is a usage error.
func TestAcceptanceUsage(t *testing.T) {
	r := start(t, noCredentials(), "--help")
	if code := r.wait(t, time.Minute); code != 0 || !strings.Contains(r.output(), "--yes-create-resources") {
		t.Errorf("--help: exit %d\n%s", code, r.output())
	}
	r = start(t, noCredentials(), "--frobnicate")
	if code := r.wait(t, time.Minute); code != 2 {
		t.Errorf("an unknown option: exit %d\n%s", code, r.output())
	}
}
