package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/client"
	"github.com/rollback-agent/rollback-agent/internal/notify"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// awsMoto is awscli against moto with the endpoint on the command line:
// awscli 1.x sends SQS to queue.amazonaws.com despite AWS_ENDPOINT_URL.
func awsMoto(t *testing.T, bed *testbed.Bed, out any, args ...string) {
	t.Helper()
	awscli(t, bed, out, append([]string{"--endpoint-url", bed.Moto.URL}, args...)...)
}

// sink is an SQS queue events reach through SNS or EventBridge.
type sink struct {
	t   *testing.T
	bed *testbed.Bed
	url string
	arn string
}

func newSink(t *testing.T, bed *testbed.Bed, name string) *sink {
	t.Helper()
	var q struct{ QueueUrl string }
	awsMoto(t, bed, &q, "sqs", "create-queue", "--queue-name", name)
	var a struct{ Attributes map[string]string }
	awsMoto(t, bed, &a, "sqs", "get-queue-attributes", "--queue-url", q.QueueUrl, "--attribute-names", "QueueArn")
	return &sink{t: t, bed: bed, url: q.QueueUrl, arn: a.Attributes["QueueArn"]}
}

// drain reads (and deletes) what the queue holds now.
func (s *sink) drain() []string {
	s.t.Helper()
	var out struct {
		Messages []struct{ Body, ReceiptHandle string }
	}
	// An empty queue answers nothing at all.
	if raw := awscliRaw(s.t, s.bed, "--endpoint-url", s.bed.Moto.URL, "sqs", "receive-message", "--queue-url", s.url, "--max-number-of-messages", "10"); strings.TrimSpace(raw) != "" {
		if err := json.Unmarshal([]byte(raw), &out); err != nil {
			s.t.Fatalf("sqs receive-message: %v\n%s", err, raw)
		}
	}
	var bodies []string
	for _, m := range out.Messages {
		bodies = append(bodies, m.Body)
		awsMoto(s.t, s.bed, nil, "sqs", "delete-message", "--queue-url", s.url, "--receipt-handle", m.ReceiptHandle)
	}
	return bodies
}

// notifyTargets makes an SNS topic whose SQS subscription takes only
// rolled_back events (a filter policy on the event attribute), and an
// EventBridge bus whose rule sends rolled_back events to another queue.
func notifyTargets(t *testing.T, bed *testbed.Bed, name string) (topic string, snsSink, ebSink *sink) {
	t.Helper()
	snsSink, ebSink = newSink(t, bed, name+"-sns"), newSink(t, bed, name+"-eb")
	var tp struct{ TopicArn string }
	awsMoto(t, bed, &tp, "sns", "create-topic", "--name", name)
	awsMoto(t, bed, nil, "sns", "subscribe", "--topic-arn", tp.TopicArn, "--protocol", "sqs", "--notification-endpoint", snsSink.arn,
		"--attributes", `{"FilterPolicy":"{\"event\":[\"rolled_back\"]}"}`)
	awsMoto(t, bed, nil, "events", "create-event-bus", "--name", name)
	awsMoto(t, bed, nil, "events", "put-rule", "--name", name+"-rollbacks", "--event-bus-name", name,
		"--event-pattern", `{"source":["rollback-agent"],"detail":{"event":["rolled_back"]}}`)
	awsMoto(t, bed, nil, "events", "put-targets", "--rule", name+"-rollbacks", "--event-bus-name", name, "--targets", "Id=q,Arn="+ebSink.arn)
	return tp.TopicArn, snsSink, ebSink
}

// metricsOf parses Prometheus text with the Prometheus project's parser.
func metricsOf(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("the Prometheus text parser refuses the agent's metrics: %v\n%s", err, text)
	}
	return fams
}

// sample is the value of name{labels} (exactly those labels), -1 if none.
func sample(fams map[string]*dto.MetricFamily, name string, kv ...string) float64 {
	for _, m := range fams[name].GetMetric() {
		if len(m.GetLabel()) != len(kv)/2 {
			continue
		}
		ok := true
		for i, l := range m.GetLabel() {
			if l.GetName() != kv[2*i] || l.GetValue() != kv[2*i+1] {
				ok = false
			}
		}
		if ok {
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET %s: %d %q", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return string(b)
}

// rollbackPair deploys a healthy v1 and a v2 whose ValidateService fails,
// which the agent rolls back by itself; it returns v2's record.
func rollbackPair(t *testing.T, h *host) api.Deployment {
	t.Helper()
	dest := filepath.Join(h.dir, "opt", "app")
	v1 := h.bundle("v1", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "1"}}})
	v2 := h.bundle("v2", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "2"}}, Hooks: map[string]string{"ValidateService": "echo v2 is broken >&2; exit 1"}})
	if r := h.ctl("deploy", v1, "--wait"); r.code != 0 {
		t.Fatalf("deploy v1: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	h.ctl("deploy", v2, "--wait")
	d := lastDeployment(h)
	if d.Revision != "v2" || d.Status != api.StatusRolledBack {
		t.Fatalf("v2 ended %s: %s", d.Status, d.Error)
	}
	return d
}

// A rollback delivers one SNS message and one EventBridge event (read
// back from SQS with awscli), the notify command gets every event on
// stdin, and the counters of the metrics say it, on the HTTP listener,
// in the node_exporter textfile and on the socket, as the Prometheus
// parser reads them.
func TestRollbackNotifiesAndCounts(t *testing.T) {
	bed := peers.Get(t)
	topic, snsSink, ebSink := notifyTargets(t, bed, "e2e-rollbacks")
	dir := t.TempDir()
	events := filepath.Join(dir, "events.ndjson")
	textfile := filepath.Join(dir, "rollback_agent.prom")
	port, _ := testbed.FreePort()
	h := newHost(t, fmt.Sprintf(`checkpoint: {before_deploy: []}
notify:
  sns_topic_arn: %s
  eventbridge_bus: e2e-rollbacks
  command: [/bin/sh, -c, 'cat >> %s']
metrics:
  listen: 127.0.0.1:%d
  textfile: %s
  textfile_interval: 1h
`, topic, events, port, textfile))
	h.start()
	d := rollbackPair(t, h)

	var fromSNS, fromEB []string
	testutil.WaitFor(t, 60*time.Second, "the rollback on SNS and EventBridge", func() error {
		fromSNS, fromEB = append(fromSNS, snsSink.drain()...), append(fromEB, ebSink.drain()...)
		if len(fromSNS) < 1 || len(fromEB) < 1 {
			return fmt.Errorf("%d from SNS, %d from EventBridge", len(fromSNS), len(fromEB))
		}
		return nil
	})
	// Everything is delivered once the command has both events (it is the
	// last target): nothing more may come.
	testutil.WaitFor(t, 60*time.Second, "both events at the command", func() error {
		if n := len(readEvents(t, events)); n < 2 {
			return fmt.Errorf("%d events", n)
		}
		return nil
	})
	fromSNS, fromEB = append(fromSNS, snsSink.drain()...), append(fromEB, ebSink.drain()...)
	if len(fromSNS) != 1 || len(fromEB) != 1 {
		t.Fatalf("%d SNS messages and %d EventBridge events for one rollback, want one each:\n%v\n%v", len(fromSNS), len(fromEB), fromSNS, fromEB)
	}
	var envelope struct{ Message, Subject string }
	var viaSNS notify.Event
	if err := json.Unmarshal([]byte(fromSNS[0]), &envelope); err != nil || json.Unmarshal([]byte(envelope.Message), &viaSNS) != nil {
		t.Fatalf("SNS message %s: %v", fromSNS[0], err)
	}
	var viaEB struct {
		Source     string       `json:"source"`
		DetailType string       `json:"detail-type"`
		Detail     notify.Event `json:"detail"`
	}
	if err := json.Unmarshal([]byte(fromEB[0]), &viaEB); err != nil {
		t.Fatal(err)
	}
	for what, e := range map[string]notify.Event{"SNS": viaSNS, "EventBridge": viaEB.Detail} {
		if e.Event != notify.RolledBack || e.DeploymentID != d.ID || e.Rung != "revision" || e.Revision != "v2" || e.InstanceID != h.inst.Doc.InstanceID || e.Application != "demo" {
			t.Errorf("%s: %+v", what, e)
		}
	}
	if viaEB.Source != "rollback-agent" || viaEB.DetailType != notify.DetailTypeDeployment || !strings.Contains(envelope.Subject, "ROLLED BACK (revision rung)") {
		t.Errorf("EventBridge %s / %s, SNS subject %q", viaEB.Source, viaEB.DetailType, envelope.Subject)
	}
	got := readEvents(t, events)
	if len(got) != 2 || got[0].Event != notify.DeploymentSucceeded || got[1].Event != notify.RolledBack || got[1].RolledBackTo == "" {
		t.Errorf("the command got %+v", got)
	}

	// The counters, read by the Prometheus parser.
	check := func(where string, fams map[string]*dto.MetricFamily) {
		t.Helper()
		for _, c := range []struct {
			name string
			kv   []string
			want float64
		}{
			{"rollback_agent_deployments_total", []string{"kind", "deploy", "status", "rolled_back"}, 1},
			{"rollback_agent_deployments_total", []string{"kind", "deploy", "status", "succeeded"}, 1},
			{"rollback_agent_rollbacks_total", []string{"rung", "revision", "result", "succeeded"}, 1},
			{"rollback_agent_rollbacks_total", []string{"rung", "volumes", "result", "succeeded"}, 0},
			{"rollback_agent_notifications_total", []string{"target", "sns"}, 2},
			{"rollback_agent_notifications_total", []string{"target", "eventbridge"}, 2},
			{"rollback_agent_notifications_total", []string{"target", "command"}, 2},
			{"rollback_agent_notification_failures_total", []string{"target", "sns"}, 0},
			{"rollback_agent_checkpoint_failures_total", []string{"reason", "deploy"}, 0},
		} {
			if got := sample(fams, c.name, c.kv...); got != c.want {
				t.Errorf("%s: %s%v = %v, want %v", where, c.name, c.kv, got, c.want)
			}
		}
	}
	testutil.WaitFor(t, 30*time.Second, "the listener's counters", func() error {
		if got := sample(metricsOf(t, scrape(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))), "rollback_agent_notifications_total", "target", "command"); got != 2 {
			return fmt.Errorf("command notifications %v", got)
		}
		return nil
	})
	listener := metricsOf(t, scrape(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port)))
	check("metrics.listen", listener)
	if listener["go_goroutines"] == nil || listener["rollback_agent_info"] == nil {
		t.Errorf("the listener lacks the gauges: %v", listener)
	}
	var tf map[string]*dto.MetricFamily
	testutil.WaitFor(t, 30*time.Second, "the textfile's counters", func() error {
		b, err := os.ReadFile(textfile)
		if err != nil {
			return err
		}
		tf = metricsOf(t, string(b))
		if got := sample(tf, "rollback_agent_notifications_total", "target", "command"); got != 2 {
			return fmt.Errorf("command notifications %v", got)
		}
		return nil
	})
	check("metrics.textfile", tf)
	for name := range tf {
		if !strings.HasPrefix(name, "rollback_agent_") {
			t.Errorf("the textfile holds %s, which node_exporter serves itself", name)
		}
	}
	c := client.New(h.socket)
	defer c.Close()
	resp, err := c.Raw(context.Background(), http.MethodGet, api.PathMetrics, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	check("the socket's /v1/metrics", metricsOf(t, string(b)))
}

func readEvents(t *testing.T, path string) []notify.Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []notify.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var e notify.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("the command got a line that is not an event: %v: %s", err, sc.Text())
		}
		out = append(out, e)
	}
	return out
}

// Notification targets that all fail (a topic and a bus that do not
// exist, a command that exits 1) change nothing of the deployments: v1
// succeeds and v2 rolls back as without them; the failures are counted.
func TestFailingNotificationTargetsChangeNothing(t *testing.T) {
	port, _ := testbed.FreePort()
	h := newHost(t, fmt.Sprintf(`checkpoint: {before_deploy: []}
notify:
  sns_topic_arn: arn:aws:sns:us-east-1:123456789012:no-such-topic
  eventbridge_bus: no-such-bus
  command: [/bin/sh, -c, 'echo pager unreachable >&2; exit 1']
  attempts: 2
metrics:
  listen: 127.0.0.1:%d
`, port))
	h.start()
	d := rollbackPair(t, h)
	if d.Error == "" || len(d.Rungs) != 1 || d.Rungs[0].Status != api.StepSucceeded {
		t.Errorf("v2 with failing notifications: %+v", d)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	testutil.WaitFor(t, 90*time.Second, "every failure counted", func() error {
		fams := metricsOf(t, scrape(t, url))
		for _, target := range []string{"sns", "eventbridge", "command"} {
			if got := sample(fams, "rollback_agent_notification_failures_total", "target", target); got != 2 {
				return fmt.Errorf("%s failures %v", target, got)
			}
		}
		return nil
	})
	fams := metricsOf(t, scrape(t, url))
	if got := sample(fams, "rollback_agent_notifications_total", "target", "sns"); got != 0 {
		t.Errorf("sns delivered %v", got)
	}
	if st := h.status(); st.State != api.StateIdle || st.Current == nil || st.Current.Revision != "v1" {
		t.Errorf("after the rollback: %s, current %+v", st.State, st.Current)
	}
	if out := h.agent.Output(); !strings.Contains(out, "notify: delivery failed; the deployment is not affected") || !strings.Contains(out, "pager unreachable") {
		t.Errorf("the agent's log does not say the deliveries failed")
	}
}
