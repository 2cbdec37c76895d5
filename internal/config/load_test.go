package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/yamlx"
)

func TestDesignExampleLoads(t *testing.T) {
	// The design's example agent.yaml, verbatim apart from the application.
	src := `application: demo
state_dir: /var/lib/rollback-agent
socket: /run/rollback-agent/agent.sock
socket_group: rollback-agent
instance_id: ""            # empty: from IMDS (set it on on-prem hosts)
region: ""                 # empty: from IMDS
sources:
  inbox: /var/lib/rollback-agent/inbox
  channel: ""              # s3://bucket/prefix/<app>/channels/<name>.json
  poll_interval: 30s
checkpoint:
  before_deploy: [ebs]     # any of ebs, ami; [] for none
  volumes: all             # all | data | [vol-...]
  freeze: []               # data mount points to fsfreeze around the snapshot call
  required: true           # no rollback point, no deploy
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
rollback: {automatic: true, ladder: [revision, volumes]}   # add root: may reboot the host
boot: {assess: true}
trust: {public_keys: [], require_signature: false}         # minisign public keys
devices: {by_id_dir: /dev/disk/by-id}
`
	c, warns, err := Parse("agent.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	if c.Sources.PollInterval != 30*time.Second || c.Retention.MaxAge != 720*time.Hour || c.Health.WatchWindow != 5*time.Minute {
		t.Errorf("durations: %+v %+v", c.Sources, c.Retention)
	}
	if len(c.Health.Checks) != 5 || c.Health.Checks[0].HTTP.ExpectStatus != (StatusRange{200, 200}) ||
		c.Health.Checks[4].CloudWatchAlarm.InsufficientData != "healthy" {
		t.Errorf("checks: %+v", c.Health.Checks)
	}
	if c.Checkpoint.Volumes.Mode != VolumesAll || !c.Checkpoint.Required {
		t.Errorf("checkpoint: %+v", c.Checkpoint)
	}
}

func TestDefaultsAndDerivedInbox(t *testing.T) {
	c, _, err := Parse("a.yaml", []byte("application: shop\nstate_dir: /srv/ra\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Sources.Inbox != "/srv/ra/inbox" {
		t.Errorf("inbox follows state_dir: %q", c.Sources.Inbox)
	}
	if c.Socket != "/run/rollback-agent/agent.sock" || c.Health.SuccessesNeeded != 2 || c.Rollback.Ladder[1] != "volumes" {
		t.Errorf("defaults not applied: %+v", c)
	}
	c, _, err = Parse("a.yaml", []byte("application: shop\ncheckpoint: {volumes: [vol-0123456789abcdef0]}\nhealth: {checks: [{name: x, http: {url: 'http://h/', expect_status: 200-399}}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Checkpoint.Volumes.Mode != VolumesList || c.Checkpoint.Volumes.IDs[0] != "vol-0123456789abcdef0" {
		t.Errorf("volume list: %+v", c.Checkpoint.Volumes)
	}
	if r := c.Health.Checks[0].HTTP.ExpectStatus; !r.Contains(302) || r.Contains(404) {
		t.Errorf("status range %v", r)
	}
}

// Every problem in the file comes back at once, each with file:line:col.
func TestEveryProblemReportedWithItsLine(t *testing.T) {
	src := `application: "bad app!"
state_dir: relative
socket: /run/x.sock
polll: 3
sources:
  poll_interval: fast
checkpoint:
  before_deploy: [ebs, zfs, ebs]
  volumes: some
  freeze: [/]
health:
  successes_needed: "two"
  interval: 0s
  checks:
    - {name: web, http: {url: "ftp://x"}}
    - name: web
      tcp: {address: "nohost"}
      command: {argv: [/bin/true]}
rollback: {automatic: yes, ladder: [volumes, revision, sideways]}
trust: {require_signature: true}
instance_id: i-0123456789abcdef0
limits: {hook_cgroup: cgroups/hooks}
`
	_, _, err := Parse("/etc/rollback-agent/agent.yaml", []byte(src))
	var ye *yamlx.Error
	if !errors.As(err, &ye) || !IsConfigError(err) {
		t.Fatalf("want *yamlx.Error, got %v", err)
	}
	want := []string{
		`agent.yaml:1:14: application: "bad app!"`,
		`agent.yaml:2:12: state_dir: "relative" must be an absolute path`,
		`agent.yaml:4:1: unknown key "polll"`,
		`agent.yaml:6:18: sources.poll_interval: "fast" is not a duration`,
		`agent.yaml:8:24: checkpoint.before_deploy[1]: "zfs"`,
		`agent.yaml:8:29: checkpoint.before_deploy[2]: "ebs" is listed twice`,
		`agent.yaml:9:12: checkpoint.volumes: want all, data or a list`,
		`agent.yaml:10:12: checkpoint.freeze[0]: the root filesystem cannot be frozen`,
		`agent.yaml:12:21: health.successes_needed: want a whole number`,
		`agent.yaml:13:13: health.interval: must be greater than 0`,
		`agent.yaml:15:31: health.checks[0].http.url: "ftp://x" is not an http(s) URL`,
		`agent.yaml:16:13: health.checks[1].name: "web" is used by another check`,
		`agent.yaml:16:7: health.checks[1]: a check has exactly one of`,
		`agent.yaml:17:22: health.checks[1].tcp.address`,
		`agent.yaml:19:23: rollback.automatic: want true or false`,
		`agent.yaml:19:46: rollback.ladder[1]: "revision": rungs are listed once`,
		`agent.yaml:19:56: rollback.ladder[2]: "sideways"`,
		`agent.yaml:20:28: trust.require_signature: is true but trust.public_keys is empty`,
		`agent.yaml:21:14: instance_id: instance_id and region are set together`,
		`agent.yaml:22:23: limits.hook_cgroup: must be an absolute path`,
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q", w)
		}
	}
	if t.Failed() {
		t.Log(msg)
	}
	if !strings.HasPrefix(msg, "/etc/rollback-agent/agent.yaml: 20 problem(s)") {
		t.Errorf("header: %s", strings.SplitN(msg, "\n", 2)[0])
	}
}

func TestSyntaxErrorsAndEmptyFiles(t *testing.T) {
	for name, src := range map[string]string{
		"syntax":   "application: demo\n  bad: [indent\n",
		"empty":    "",
		"list":     "- a\n- b\n",
		"twodocs":  "application: a\n---\napplication: b\n",
		"dupkey":   "application: a\napplication: b\n",
		"alias":    "application: &x demo\nregion: *x\n",
		"mergekey": "base: &b {interval: 2s}\nhealth:\n  <<: *b\n",
	} {
		_, _, err := Parse("f.yaml", []byte(src))
		if err == nil || !IsConfigError(err) || !strings.Contains(err.Error(), "f.yaml:") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, _, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !errors.Is(err, os.ErrNotExist) || IsConfigError(err) {
		t.Errorf("missing file: %v", err)
	}
}
