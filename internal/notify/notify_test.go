package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/sns"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

var peers testbed.Lazy

func TestMain(m *testing.M) {
	code := m.Run()
	peers.Close()
	os.Exit(code)
}

var host = Host{Application: "shop", DeploymentGroup: "web", AgentVersion: "1.2.3",
	Identity: api.Identity{InstanceID: "i-0abc", Region: "us-east-1", AccountID: "123456789012", AvailabilityZone: "us-east-1a"}}

// What each status change means to people: one event, two, or none.
func TestFromTransition(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	rolled := api.Deployment{ID: "d-1", Kind: api.KindDeploy, Revision: "v2", Status: api.StatusRolledBack, Checkpoint: "cp-1", RolledBackTo: "v1",
		Error: "ValidateService failed", Rungs: []api.Rung{{Name: "revision", Status: api.StepFailed}, {Name: "volumes", Status: api.StepSucceeded}}}
	cpFailed := api.Deployment{ID: "d-2", Kind: api.KindDeploy, Status: api.StatusFailed, Error: "no rollback point",
		Steps: []api.Step{{Name: "Checkpoint", Status: api.StepFailed, Error: "CreateSnapshots: throttled"}}}
	boot := api.Deployment{ID: "d-3", Kind: api.KindDeploy, Status: api.StatusRollingBack, Assessment: api.AssessmentBoot, Error: "unhealthy after boot"}
	cd := api.Deployment{ID: "d-4", Kind: api.KindCodeDeploy, Status: api.StatusSucceeded, CodeDeploy: &api.CodeDeployRef{DeploymentID: "d-CD"}}
	for _, c := range []struct {
		d    api.Deployment
		from api.DeploymentStatus
		want []Type
	}{
		{rolled, api.StatusRollingBack, []Type{RolledBack}},
		{cpFailed, api.StatusRunning, []Type{CheckpointFailed, DeploymentFailed}},
		{boot, api.StatusSucceeded, []Type{BootAssessmentFailed}},
		{cd, api.StatusRunning, []Type{DeploymentSucceeded}},
		{api.Deployment{Status: api.StatusRunning}, api.StatusQueued, nil},
		{api.Deployment{Status: api.StatusRollingBack}, api.StatusRunning, nil},
		{api.Deployment{Status: api.StatusNeedsOperator, Rungs: []api.Rung{{Name: "root", Status: api.StepFailed}}}, api.StatusRollingBack, []Type{NeedsOperator}},
		{rolled, api.StatusRolledBack, nil},
	} {
		evs := FromTransition(host, c.d, c.from, now)
		var got []Type
		for _, e := range evs {
			got = append(got, e.Event)
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s %s→%s: %v, want %v", c.d.ID, c.from, c.d.Status, got, c.want)
		}
	}
	e := FromTransition(host, rolled, api.StatusRollingBack, now)[0]
	if e.Rung != "volumes" || e.RolledBackTo != "v1" || e.State != "ROLLED_BACK" || e.InstanceID != "i-0abc" || e.CheckpointID != "cp-1" ||
		e.InstanceARN() != "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc" || e.Event.DetailType() != DetailTypeDeployment {
		t.Errorf("rolled back: %+v", e)
	}
	if s := e.Subject(); len(s) > 100 || !strings.Contains(s, "ROLLED BACK (volumes rung)") {
		t.Errorf("subject %q", s)
	}
	if c := FromTransition(host, cpFailed, api.StatusRunning, now)[0]; c.Reason != "CreateSnapshots: throttled" || c.Event.DetailType() != DetailTypeCheckpoint {
		t.Errorf("checkpoint failed: %+v", c)
	}
	if c := FromTransition(host, cd, api.StatusRunning, now)[0]; c.CodeDeployDeploymentID != "d-CD" {
		t.Errorf("codedeploy: %+v", c)
	}
}

// awsJSON runs awscli against moto and decodes its JSON answer.
func awsJSON(t *testing.T, bed *testbed.Bed, out any, args ...string) {
	t.Helper()
	// awscli 1.x sends SQS to queue.amazonaws.com despite
	// AWS_ENDPOINT_URL: the endpoint is given on the command line.
	cmd := exec.Command("aws", append([]string{"--endpoint-url", bed.Moto.URL}, append(args, "--output", "json")...)...)
	cmd.Env = bed.CLIEnv()
	b, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
}

// queue makes an SQS queue and returns its URL and ARN.
func queue(t *testing.T, bed *testbed.Bed, name string) (string, string) {
	t.Helper()
	var q struct{ QueueUrl string }
	awsJSON(t, bed, &q, "sqs", "create-queue", "--queue-name", name)
	var a struct{ Attributes map[string]string }
	awsJSON(t, bed, &a, "sqs", "get-queue-attributes", "--queue-url", q.QueueUrl, "--attribute-names", "QueueArn")
	return q.QueueUrl, a.Attributes["QueueArn"]
}

// receive reads the messages of a queue (awscli), waiting until n came.
func receive(t *testing.T, bed *testbed.Bed, url string, n int) []string {
	t.Helper()
	var bodies []string
	testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("%d message(s) in %s", n, url), func() error {
		var out struct {
			Messages []struct{ Body, ReceiptHandle string }
		}
		awsJSON(t, bed, &out, "sqs", "receive-message", "--queue-url", url, "--max-number-of-messages", "10")
		for _, m := range out.Messages {
			bodies = append(bodies, m.Body)
			awsJSON(t, bed, nil, "sqs", "delete-message", "--queue-url", url, "--receipt-handle", m.ReceiptHandle)
		}
		if len(bodies) < n {
			return fmt.Errorf("%d so far", len(bodies))
		}
		return nil
	})
	return bodies
}

// results collects the dispatcher's outcomes.
type results struct {
	mu  sync.Mutex
	got map[string][]error
	ch  chan struct{}
}

func newResults() *results { return &results{got: map[string][]error{}, ch: make(chan struct{}, 64)} }

func (r *results) on(target string, _ Event, err error) {
	r.mu.Lock()
	r.got[target] = append(r.got[target], err)
	r.mu.Unlock()
	r.ch <- struct{}{}
}

func (r *results) wait(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-r.ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("only %v outcomes", r.got)
		}
	}
}

// One event reaches SQS through an SNS topic (subscription) and through
// an EventBridge bus (rule → target), in moto, read back with awscli: the
// SNS message and the EventBridge detail are the event's JSON.
func TestSNSAndEventBridgeDeliverToSQS(t *testing.T) {
	bed := peers.Get(t)
	snsURL, snsQ := queue(t, bed, "notify-sns")
	ebURL, ebQ := queue(t, bed, "notify-eb")
	var topic struct{ TopicArn string }
	awsJSON(t, bed, &topic, "sns", "create-topic", "--name", "deployments")
	awsJSON(t, bed, nil, "sns", "subscribe", "--topic-arn", topic.TopicArn, "--protocol", "sqs", "--notification-endpoint", snsQ)
	awsJSON(t, bed, nil, "events", "create-event-bus", "--name", "fleet")
	awsJSON(t, bed, nil, "events", "put-rule", "--name", "rollbacks", "--event-bus-name", "fleet",
		"--event-pattern", `{"source":["rollback-agent"],"detail-type":["`+DetailTypeDeployment+`"]}`)
	awsJSON(t, bed, nil, "events", "put-targets", "--rule", "rollbacks", "--event-bus-name", "fleet", "--targets", "Id=q,Arn="+ebQ)

	cfg := bed.AWSConfig()
	cfg.BaseEndpoint = aws.String(bed.AWS.URL)
	res := newResults()
	d := New(Options{Targets: []Target{SNS{Client: sns.NewFromConfig(cfg), Topic: topic.TopicArn}, EventBridge{Client: eventbridge.NewFromConfig(cfg), Bus: "fleet"}},
		Attempts: 2, Backoff: 10 * time.Millisecond, OnResult: res.on})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)
	rolled := api.Deployment{ID: "d-ROLLED001", Kind: api.KindDeploy, Revision: "v2", Status: api.StatusRolledBack, RolledBackTo: "v1",
		Rungs: []api.Rung{{Name: "revision", Status: api.StepSucceeded}}}
	for _, e := range FromTransition(host, rolled, api.StatusRollingBack, time.Now()) {
		d.Publish(e)
	}
	res.wait(t, 2)
	for target, errs := range res.got {
		if len(errs) != 1 || errs[0] != nil {
			t.Errorf("%s: %v", target, errs)
		}
	}
	var envelope struct{ Message, Subject string }
	if err := json.Unmarshal([]byte(receive(t, bed, snsURL, 1)[0]), &envelope); err != nil {
		t.Fatal(err)
	}
	var fromSNS Event
	if err := json.Unmarshal([]byte(envelope.Message), &fromSNS); err != nil {
		t.Fatalf("SNS message %q: %v", envelope.Message, err)
	}
	if fromSNS.Event != RolledBack || fromSNS.Rung != "revision" || fromSNS.DeploymentID != "d-ROLLED001" || !strings.Contains(envelope.Subject, "ROLLED BACK") {
		t.Errorf("from SNS: %+v (subject %q)", fromSNS, envelope.Subject)
	}
	var fromEB struct {
		Source     string   `json:"source"`
		DetailType string   `json:"detail-type"`
		Resources  []string `json:"resources"`
		Detail     Event    `json:"detail"`
	}
	if err := json.Unmarshal([]byte(receive(t, bed, ebURL, 1)[0]), &fromEB); err != nil {
		t.Fatal(err)
	}
	if fromEB.Source != Source || fromEB.DetailType != DetailTypeDeployment || fromEB.Detail.Event != RolledBack || fromEB.Detail.RolledBackTo != "v1" ||
		len(fromEB.Resources) != 1 || fromEB.Resources[0] != "arn:aws:ec2:us-east-1:123456789012:instance/i-0abc" {
		t.Errorf("from EventBridge: %+v", fromEB)
	}
}

// flaky fails its first n sends.
type flaky struct {
	mu    sync.Mutex
	n     int
	sends int
}

func (f *flaky) Name() string { return "flaky" }
func (f *flaky) Send(context.Context, Event, []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sends++
	if f.sends <= f.n {
		return errors.New("injected failure")
	}
	return nil
}

// Attempts are bounded: a target that fails less often than that
// delivers; one that always fails is reported once per event, after the
// last attempt; a full queue drops and reports.
func TestDispatcherBoundsItsAttempts(t *testing.T) {
	res := newResults()
	ok, bad := &flaky{n: 2}, &flaky{n: 100}
	d := New(Options{Targets: []Target{ok}, Attempts: 3, Backoff: time.Millisecond, OnResult: res.on})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)
	d.Publish(Event{Event: DeploymentSucceeded})
	res.wait(t, 1)
	if errs := res.got["flaky"]; len(errs) != 1 || errs[0] != nil || ok.sends != 3 {
		t.Errorf("flaky twice, 3 attempts: %v after %d sends", errs, ok.sends)
	}
	res2 := newResults()
	d2 := New(Options{Targets: []Target{bad}, Attempts: 3, Backoff: time.Millisecond, OnResult: res2.on, Queue: 1})
	go d2.Run(ctx)
	d2.Publish(Event{Event: NeedsOperator})
	res2.wait(t, 1)
	if errs := res2.got["flaky"]; len(errs) != 1 || errs[0] == nil || bad.sends != 3 {
		t.Errorf("always failing: %v after %d sends", errs, bad.sends)
	}
	// Not running: the queue of one fills and the next event is dropped.
	res3 := newResults()
	d3 := New(Options{Targets: []Target{ok}, Queue: 1, OnResult: res3.on})
	d3.Publish(Event{Event: DeploymentFailed})
	d3.Publish(Event{Event: DeploymentFailed})
	res3.wait(t, 1)
	if errs := res3.got["flaky"]; len(errs) != 1 || errs[0] == nil || !strings.Contains(errs[0].Error(), "queue full") {
		t.Errorf("full queue: %v", errs)
	}
}

// The command gets the event's JSON on stdin; one that exits non-zero or
// outlives its timeout fails, with its output.
func TestCommandTarget(t *testing.T) {
	dir := t.TempDir()
	got := filepath.Join(dir, "event.json")
	e := Event{Version: EventVersion, Event: RolledBack, DeploymentID: "d-X", InstanceID: "i-1"}
	body, _ := json.Marshal(e)
	c := Command{Argv: []string{"/bin/sh", "-c", "cat > " + got + "; echo \"$ROLLBACK_AGENT_EVENT\" >> " + got}, Timeout: 10 * time.Second}
	if err := c.Send(context.Background(), e, body); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(got)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var back Event
	if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &back) != nil || back.DeploymentID != "d-X" || lines[1] != "rolled_back" {
		t.Errorf("the command read %q", b)
	}
	fail := Command{Argv: []string{"/bin/sh", "-c", "echo no route to pager >&2; exit 3"}, Timeout: 10 * time.Second}
	if err := fail.Send(context.Background(), e, body); err == nil || !strings.Contains(err.Error(), "no route to pager") {
		t.Errorf("failing command: %v", err)
	}
	// Its child keeps stdout open: the whole group is killed at the timeout.
	slow := Command{Argv: []string{"/bin/sh", "-c", "sleep 60 & sleep 60"}, Timeout: 200 * time.Millisecond}
	if err := slow.Send(context.Background(), e, body); err == nil || !strings.Contains(err.Error(), "killed after 200ms") {
		t.Errorf("slow command: %v", err)
	}
}
