package metrics

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"
)

// Parse reads the exposition format with the Prometheus project's own
// parser: what it accepts, Prometheus and node_exporter read.
func Parse(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("the Prometheus text parser refuses it: %v\n%s", err, text)
	}
	return fams
}

// counterValue is the value of name's sample whose labels are exactly kv.
func counterValue(fams map[string]*dto.MetricFamily, name string, kv ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(kv)/2 {
			continue
		}
		match := true
		for i, l := range m.GetLabel() {
			if l.GetName() != kv[2*i] || l.GetValue() != kv[2*i+1] {
				match = false
			}
		}
		if match {
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

func TestCountersParse(t *testing.T) {
	c := NewCounters()
	c.Add(Deployments, "kind", "deploy", "status", "rolled_back")
	c.Add(Deployments, "kind", "deploy", "status", "rolled_back")
	c.Add(Rollbacks, "rung", "revision", "result", "succeeded")
	c.Add(NotificationFailures, "target", `a "quoted"\name`+"\n")
	c.Init(CheckpointFailures, "reason", "deploy")
	c.Init(Notifications, "target", "sns")
	c.Init(HostDocumentWrites, "result", "written")
	c.Init(Deployments, "kind", "deploy", "status", "rolled_back")
	var b strings.Builder
	c.Write(&b)
	fams := Parse(t, b.String())
	for _, name := range []string{Deployments, Rollbacks, CheckpointFailures, Notifications, NotificationFailures, HostDocumentWrites} {
		if f := fams[name]; f == nil || f.GetType() != dto.MetricType_COUNTER || f.GetHelp() == "" {
			t.Errorf("family %s: %v", name, f)
		}
	}
	if v, ok := counterValue(fams, Deployments, "kind", "deploy", "status", "rolled_back"); !ok || v != 2 {
		t.Errorf("deployments: %v %v", v, ok)
	}
	if v, ok := counterValue(fams, NotificationFailures, "target", `a "quoted"\name`+"\n"); !ok || v != 1 {
		t.Errorf("escaped label: %v %v\n%s", v, ok, b.String())
	}
	if v, ok := counterValue(fams, CheckpointFailures, "reason", "deploy"); !ok || v != 0 {
		t.Errorf("an Init'ed series: %v %v", v, ok)
	}
	if c.Value(Rollbacks, "rung", "revision", "result", "succeeded") != 1 {
		t.Error("Value")
	}
}

// Own keeps only the agent's families: node_exporter serves its own go_
// and process_ metrics, and a textfile repeating them is an error there.
func TestOwnKeepsTheAgentsFamilies(t *testing.T) {
	text := "# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines 7\n" +
		"# HELP rollback_agent_healthy y\n# TYPE rollback_agent_healthy gauge\nrollback_agent_healthy 1\n"
	own := Own(text)
	fams := Parse(t, own)
	if len(fams) != 1 || fams["rollback_agent_healthy"] == nil {
		t.Errorf("Own kept %v:\n%s", fams, own)
	}
}

func TestListenerAndTextfile(t *testing.T) {
	text := "# HELP rollback_agent_up u\n# TYPE rollback_agent_up gauge\nrollback_agent_up 1\n"
	l, err := Listen("127.0.0.1:0", func(context.Context) string { return text }, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	go l.Serve()
	defer l.Close(context.Background())
	resp, err := http.Get("http://" + l.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ContentType || Parse(t, string(b))["rollback_agent_up"] == nil {
		t.Errorf("GET /metrics: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	if resp, err := http.Post("http://"+l.Addr()+"/metrics", "text/plain", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %v %v", resp.StatusCode, err)
	}
	if resp, err := http.Get("http://" + l.Addr() + "/"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /: %v %v", resp.StatusCode, err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "rollback_agent.prom")
	for range 2 {
		if err := WriteTextfile(path, text); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(path)
	entries, _ := os.ReadDir(dir)
	fi, _ := os.Stat(path)
	if string(got) != text || len(entries) != 1 || fi.Mode().Perm() != 0o644 {
		t.Errorf("textfile %q, %d entries, mode %v", got, len(entries), fi.Mode())
	}
	if err := WriteTextfile(filepath.Join(dir, "missing", "x.prom"), text); err == nil || !strings.Contains(err.Error(), "metrics.textfile") {
		t.Errorf("into a missing directory: %v", err)
	}
}
