package config

import (
	"errors"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/engine/rung"
	"github.com/rollback-agent/rollback-agent/internal/yamlx"
)

// fuzzDesignExample is the design's example agent.yaml: the fuzzer starts
// from a file that is valid, so its mutations reach the validator and not
// only the YAML parser.
const fuzzDesignExample = `application: demo
state_dir: /var/lib/rollback-agent
socket: /run/rollback-agent/agent.sock
socket_group: rollback-agent
instance_id: ""
region: ""
sources:
  inbox: /var/lib/rollback-agent/inbox
  channel: ""
  poll_interval: 30s
checkpoint:
  before_deploy: [ebs]
  volumes: all
  freeze: []
  required: true
retention: {keep_checkpoints: 5, max_age: 720h, keep_releases: 5}
health:
  checks:
    - {name: web, http: {url: "http://127.0.0.1:8080/health", expect_status: 200, timeout: 2s}}
    - {name: port, tcp: {address: "127.0.0.1:8080", timeout: 1s}}
    - {name: script, command: {argv: [/usr/local/bin/check], timeout: 10s}}
    - {name: unit, systemd: {unit: myapp.service}}
    - {name: errors, cloudwatch_alarm: {alarm_names: [myapp-5xx]}}
  interval: 2s
  grace: 5s
  successes_needed: 2
  failures_allowed: 3
  assess_timeout: 60s
  watch_window: 5m
rollback: {automatic: true, ladder: [revision, volumes]}
boot: {assess: true}
trust: {public_keys: [], require_signature: false}
devices: {by_id_dir: /dev/disk/by-id}
`

// fuzzConfigSeeds are the design example and broken variants of it, one
// per family of mistake, so each validator branch has a nearby input.
func fuzzConfigSeeds() []string {
	broken := func(old, new string) string { return strings.Replace(fuzzDesignExample, old, new, 1) }
	return []string{
		fuzzDesignExample,
		"application: demo\n",
		"application: demo\ninstance_id: i-0123456789abcdef0\nregion: eu-west-1\nlimits: {max_unpacked_bytes: 2MiB, max_files: 50, max_file_bytes: 1MiB}\n",
		broken("application: demo", "aplication: demo"),
		broken("poll_interval: 30s", "poll_interval: 30 seconds"),
		broken("volumes: all", "volumes: [vol-1, vol-0123456789abcdef0, 7]"),
		broken("ladder: [revision, volumes]", "ladder: [root, revision, revision, sideways]"),
		broken("state_dir: /var/lib/rollback-agent", "state_dir: var/lib"),
		broken("expect_status: 200", "expect_status: 200-99"),
		broken("checks:\n", "checks: &c\n") + "extra: *c\n",
		broken("required: true", "required: yes please"),
		broken("keep_checkpoints: 5", "keep_checkpoints: 99999999999999999999"),
		broken("boot: {assess: true}", "boot: {assess: true"),
		"application: demo\n---\napplication: other\n",
		"<<: {application: demo}\n",
		"? [a, b]\n: c\n",
		"application: !!binary aGVsbG8=\n",
		"\t application: demo\n",
		"",
		"~\n",
		"[1, 2]\n",
	}
}

// FuzzParse checks that no input makes Parse panic, that every refusal is
// a *yamlx.Error whose problems each point at a line (what --check-config
// prints, and what an operator needs), and that an accepted config holds
// the invariants the daemon relies on without checking again.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzConfigSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// A panic fails this input, not the whole test binary: the rest of
		// the package's tests still run and report.
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Parse panicked (the daemon would crash instead of exiting 78): %v\n%s", r, debug.Stack())
			}
		}()
		cfg, warnings, err := Parse("agent.yaml", data)
		if err != nil {
			checkRefusal(t, cfg, err)
			return
		}
		if cfg == nil {
			t.Fatal("nil config without an error")
		}
		for _, w := range warnings {
			if !strings.HasPrefix(w, "agent.yaml:") {
				t.Fatalf("warning does not name the file: %q", w)
			}
		}
		checkAccepted(t, cfg)
		// Parsing is a pure function of the bytes: the daemon's reload
		// compares configs, so a second parse must agree with the first.
		again, _, err := Parse("agent.yaml", data)
		if err != nil {
			t.Fatalf("second parse failed: %v", err)
		}
		if again.Application != cfg.Application || again.StateDir != cfg.StateDir || !slices.Equal(again.Rollback.Ladder, cfg.Rollback.Ladder) {
			t.Fatalf("two parses differ: %+v vs %+v", cfg, again)
		}
	})
}

func checkRefusal(t *testing.T, cfg *Config, err error) {
	t.Helper()
	if cfg != nil {
		t.Fatalf("a config came back with an error: %v", err)
	}
	var ye *yamlx.Error
	if !errors.As(err, &ye) {
		t.Fatalf("error is %T, want *yamlx.Error: %v", err, err)
	}
	if !IsConfigError(err) {
		t.Fatalf("IsConfigError is false for %v: the daemon would not exit 78", err)
	}
	errs := 0
	for _, p := range ye.Problems {
		if p.Warning {
			continue
		}
		errs++
		if p.Pos.Line < 1 || p.Pos.Col < 1 {
			t.Fatalf("problem without a line and column: %q in\n%v", p.Msg, err)
		}
		if strings.TrimSpace(p.Msg) == "" {
			t.Fatalf("problem at %s without a message", p.Pos)
		}
	}
	if errs == 0 {
		t.Fatalf("*yamlx.Error without an error problem: %v", err)
	}
}

// checkAccepted asserts what validate promises about an accepted file.
func checkAccepted(t *testing.T, c *Config) {
	t.Helper()
	if !validName(c.Application) {
		t.Fatalf("accepted application %q", c.Application)
	}
	for name, p := range map[string]string{"state_dir": c.StateDir, "socket": c.Socket, "boot.id_file": c.Boot.IDFile, "devices.by_id_dir": c.Devices.ByIDDir} {
		if !filepath.IsAbs(p) {
			t.Fatalf("accepted relative %s %q", name, p)
		}
	}
	if c.Sources.Inbox != "" && !filepath.IsAbs(c.Sources.Inbox) {
		t.Fatalf("accepted relative sources.inbox %q", c.Sources.Inbox)
	}
	l := c.Limits
	if l.MaxFiles < 1 || l.MaxFileBytes < 1 || l.MaxFileBytes > l.MaxUnpackedBytes {
		t.Fatalf("accepted limits %+v", l)
	}
	if c.Health.Interval <= 0 || c.Health.AssessTimeout <= 0 || c.Health.SuccessesNeeded < 1 || c.Health.FailuresAllowed < 1 {
		t.Fatalf("accepted health %+v", c.Health)
	}
	last := -1
	for _, r := range c.Rollback.Ladder {
		i := rung.Index(r)
		if i <= last {
			t.Fatalf("accepted ladder %v", c.Rollback.Ladder)
		}
		last = i
	}
	if c.Trust.RequireSignature && len(c.Trust.PublicKeys) == 0 {
		t.Fatal("accepted require_signature without keys")
	}
	names := map[string]bool{}
	for _, ch := range c.Health.Checks {
		if ch.Name == "" || names[ch.Name] {
			t.Fatalf("accepted check name %q twice or empty", ch.Name)
		}
		names[ch.Name] = true
	}
}
