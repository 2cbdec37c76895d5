package config

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Fleet is the host document the agent publishes beside its channel.
type Fleet struct {
	Publish   bool          `yaml:"publish" doc:"With sources.channel set, publish this host's state as <prefix>/<app>/hosts/<id>.json beside the channel (agentctl fleet, promote --after)."`
	Heartbeat time.Duration `yaml:"heartbeat" doc:"The host document is rewritten at least this often (with a health round when idle); agentctl fleet calls a host stale after three."`
}

// Notify says where the agent tells people about deployments.
type Notify struct {
	SNSTopicARN    string        `yaml:"sns_topic_arn" doc:"SNS topic each event is published to (sns:Publish); empty: none."`
	EventBridgeBus string        `yaml:"eventbridge_bus" doc:"EventBridge bus (name or ARN) each event is put on (events:PutEvents); empty: none."`
	Command        []string      `yaml:"command" doc:"A program (argv, no shell) run for each event with its JSON on stdin; empty: none."`
	CommandTimeout time.Duration `yaml:"command_timeout" doc:"notify.command is killed after this."`
	Attempts       int           `yaml:"attempts" doc:"Deliveries tried per event and target before it is counted failed (at least 1)."`
}

// Metrics says where the Prometheus text is served besides the socket.
type Metrics struct {
	Listen string `yaml:"listen" doc:"host:port serving GET /metrics over HTTP; empty: off. A loopback address unless allow_non_loopback."`
	// AllowNonLoopback is the explicit setting a non-loopback address
	// needs: the metrics name the instance, app and revisions, and the
	// listener has no authentication.
	AllowNonLoopback bool          `yaml:"allow_non_loopback" doc:"Let metrics.listen bind an address other than loopback (no authentication: firewall it)."`
	Textfile         string        `yaml:"textfile" doc:"node_exporter textfile collector file (*.prom) kept current; empty: off."`
	TextfileInterval time.Duration `yaml:"textfile_interval" doc:"The textfile is rewritten at least this often (and on every status change)."`
}

// snsTopicARN is an SNS topic ARN (SNS API reference, CreateTopic: names
// of up to 256 letters, digits, '-' and '_', '.fifo' for FIFO topics).
var snsTopicARN = regexp.MustCompile(`^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$`)

// eventBusName is an event bus name or ARN (EventBridge API reference,
// PutEvents EventBusName: 1-1600 characters, a name or an ARN).
var eventBusName = regexp.MustCompile(`^([A-Za-z0-9._\-/]{1,256}|arn:aws[a-z-]*:events:[a-z0-9-]+:[0-9]{12}:event-bus/[A-Za-z0-9._\-/]{1,256})$`)

func (v *validator) validateFleet() {
	f := v.cfg.Fleet
	if f.Heartbeat < time.Minute {
		v.errorf("fleet.heartbeat", "must be at least 1m, got %s (each write is a billed S3 PUT per host)", f.Heartbeat)
	}
}

func (v *validator) validateNotify() {
	n := v.cfg.Notify
	if n.SNSTopicARN != "" && !snsTopicARN.MatchString(n.SNSTopicARN) {
		v.errorf("notify.sns_topic_arn", "%q is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)", n.SNSTopicARN)
	}
	if n.EventBridgeBus != "" && !eventBusName.MatchString(n.EventBridgeBus) {
		v.errorf("notify.eventbridge_bus", "%q is not an event bus name or ARN", n.EventBridgeBus)
	}
	if len(n.Command) > 0 {
		v.absPath("notify.command[0]", n.Command[0], false)
	}
	v.positive("notify.command_timeout", n.CommandTimeout, false)
	if n.Attempts < 1 || n.Attempts > 10 {
		v.errorf("notify.attempts", "must be between 1 and 10, got %d", n.Attempts)
	}
}

func (v *validator) validateMetrics() {
	m := v.cfg.Metrics
	if m.Listen != "" {
		host, port, err := net.SplitHostPort(m.Listen)
		switch {
		case err != nil || port == "":
			v.errorf("metrics.listen", "%q: want host:port (127.0.0.1:9273)", m.Listen)
		case !m.AllowNonLoopback && !isLoopback(host):
			v.errorf("metrics.listen", "%q is not a loopback address: the metrics name this instance, its app and revisions, and the listener has no authentication; set metrics.allow_non_loopback: true to serve them there", m.Listen)
		}
	}
	if m.Textfile != "" {
		v.absPath("metrics.textfile", m.Textfile, false)
		if !strings.HasSuffix(m.Textfile, ".prom") {
			v.errorf("metrics.textfile", "%q: node_exporter's textfile collector reads only files ending in .prom", m.Textfile)
		}
		if filepath.Base(m.Textfile) == ".prom" {
			v.errorf("metrics.textfile", "%q: name the file", m.Textfile)
		}
	}
	v.positive("metrics.textfile_interval", m.TextfileInterval, false)
}

// isLoopback reports whether host names only loopback addresses: an IP
// in 127.0.0.0/8 or ::1, or "localhost".
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// fleetDefaults, notifyDefaults and metricsDefaults are Default()'s.
func fleetDefaults() Fleet { return Fleet{Publish: true, Heartbeat: 10 * time.Minute} }

func notifyDefaults() Notify { return Notify{CommandTimeout: 10 * time.Second, Attempts: 3} }

func metricsDefaults() Metrics { return Metrics{TextfileInterval: 30 * time.Second} }

// Targets names where notifications go, for logs.
func (n Notify) Targets() string {
	var out []string
	if n.SNSTopicARN != "" {
		out = append(out, "sns "+n.SNSTopicARN)
	}
	if n.EventBridgeBus != "" {
		out = append(out, "eventbridge "+n.EventBridgeBus)
	}
	if len(n.Command) > 0 {
		out = append(out, fmt.Sprintf("command %q", n.Command[0]))
	}
	return strings.Join(out, ", ")
}
