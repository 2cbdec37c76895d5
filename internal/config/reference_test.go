package config_test

import (
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/config"
)

// TestReferenceDefaultsMatchValidation keeps the per-check defaults the
// generated reference shows equal to what Parse fills in.
func TestReferenceDefaultsMatchValidation(t *testing.T) {
	src := `application: demo
health:
  checks:
    - {name: web, http: {url: "http://127.0.0.1:8080/health"}}
    - {name: port, tcp: {address: "127.0.0.1:8080"}}
    - {name: script, command: {argv: [/bin/true]}}
    - {name: errors, cloudwatch_alarm: {alarm_names: [a]}}
`
	cfg, _, err := config.Parse("agent.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Health.Checks
	got := map[string]string{
		"health.checks[].http.expect_status":                 c[0].HTTP.ExpectStatus.String(),
		"health.checks[].http.timeout":                       c[0].HTTP.Timeout.String(),
		"health.checks[].tcp.timeout":                        c[1].TCP.Timeout.String(),
		"health.checks[].command.timeout":                    c[2].Command.Timeout.String(),
		"health.checks[].cloudwatch_alarm.insufficient_data": c[3].CloudWatchAlarm.InsufficientData,
	}
	docs := config.ReferenceDocs()
	for key, val := range got {
		want := docs[key].Default
		if d, err := time.ParseDuration(want); err == nil {
			want = d.String()
		}
		if val != want {
			t.Errorf("%s: Parse fills in %q, the reference says %q", key, val, docs[key].Default)
		}
	}
	for key, d := range docs {
		if d.Default != "" {
			if _, ok := got[key]; !ok {
				t.Errorf("%s: the reference names a default %q that this test does not check", key, d.Default)
			}
		}
	}
}
