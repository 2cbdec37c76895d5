// Package metrics holds the agent's counters and takes the Prometheus text
// where collectors read it: an HTTP listener (Prometheus, the CloudWatch
// agent's Prometheus scraper) and node_exporter's textfile collector. The
// socket API serves the same text (GET /v1/metrics). The text is written
// by hand in the exposition format (a few counters need no client
// library); the tests parse it with the Prometheus project's own parser.
package metrics

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
)

// Counter names and their help, the agent's events since it started.
const (
	Deployments          = "rollback_agent_deployments_total"
	Rollbacks            = "rollback_agent_rollbacks_total"
	CheckpointFailures   = "rollback_agent_checkpoint_failures_total"
	Notifications        = "rollback_agent_notifications_total"
	NotificationFailures = "rollback_agent_notification_failures_total"
	HostDocumentWrites   = "rollback_agent_host_document_writes_total"
)

func help() map[string]string {
	return map[string]string{
		Deployments:          "Operations (deployments, rollbacks, restores, guards, CodeDeploy deployments) that ended, by kind and status.",
		Rollbacks:            "Rungs of the rollback ladder climbed, by rung and result.",
		CheckpointFailures:   "Checkpoints that could not be taken, by reason.",
		Notifications:        "Notifications delivered, by target.",
		NotificationFailures: "Notifications not delivered after every attempt (or dropped from a full queue), by target.",
		HostDocumentWrites:   "Writes of this host's document to S3, by result.",
	}
}

// Counters are monotonic counters with labels.
type Counters struct {
	mu sync.Mutex
	// m: name → rendered label set → value.
	m map[string]map[string]float64
}

// NewCounters returns counters; every family is written with its HELP
// and TYPE, and a series appears once counted or Init'ed.
func NewCounters() *Counters {
	return &Counters{m: map[string]map[string]float64{}}
}

// Add adds one to the counter name with label pairs (name, value, ...).
func (c *Counters) Add(name string, labels ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.m[name]
	if s == nil {
		s = map[string]float64{}
		c.m[name] = s
	}
	s[LabelSet(labels...)]++
}

// Init makes the counter name with label pairs exist at zero, so that a
// scraper sees the series before its first increase (and an alert on
// its increase fires on the first one).
func (c *Counters) Init(name string, labels ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.m[name]
	if s == nil {
		s = map[string]float64{}
		c.m[name] = s
	}
	if _, ok := s[LabelSet(labels...)]; !ok {
		s[LabelSet(labels...)] = 0
	}
}

// Value returns a counter's value (tests).
func (c *Counters) Value(name string, labels ...string) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[name][LabelSet(labels...)]
}

// Write renders every family in the text exposition format, sorted. A
// family with nothing counted yet is written with its HELP and TYPE only.
func (c *Counters) Write(w io.Writer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := help()
	names := make([]string, 0, len(h))
	for n := range h {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", n, h[n], n)
		sets := make([]string, 0, len(c.m[n]))
		for ls := range c.m[n] {
			sets = append(sets, ls)
		}
		sort.Strings(sets)
		for _, ls := range sets {
			fmt.Fprintf(w, "%s%s %g\n", n, ls, c.m[n][ls])
		}
	}
}

// LabelSet renders label pairs, escaping values as the format requires
// (backslash, double quote, newline).
func LabelSet(kv ...string) string {
	if len(kv) < 2 {
		return ""
	}
	parts := make([]string, 0, len(kv)/2)
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	for i := 0; i+1 < len(kv); i += 2 {
		parts = append(parts, fmt.Sprintf(`%s="%s"`, kv[i], esc.Replace(kv[i+1])))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// Own keeps the families named rollback_agent_* of a text: what a
// node_exporter textfile may hold (node_exporter serves its own go_ and
// process_ metrics, and a duplicate family is an error there).
func Own(text string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(text, "\n") {
		name := line
		if rest, ok := strings.CutPrefix(line, "# HELP "); ok {
			name = rest
		} else if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name = rest
		}
		if strings.HasPrefix(name, "rollback_agent_") {
			b.WriteString(line)
		}
	}
	return b.String()
}
