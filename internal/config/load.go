package config

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/engine/rung"
	"github.com/rollback-agent/rollback-agent/internal/yamlx"
)

// DefaultPath is where the daemon looks without --config.
const DefaultPath = "/etc/rollback-agent/agent.yaml"

// The name patterns leave the length to validName: a counted repetition
// such as {0,62} compiles to one instruction per count, which every
// agentctl start would pay for.
var (
	namePattern     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	instancePattern = regexp.MustCompile(`^(i|mi)-[0-9a-f]{8,17}$`)
	regionPattern   = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
	volumeIDPattern = regexp.MustCompile(`^vol-[0-9a-f]{8,17}$`)
)

// validName reports whether s is an application or check name: 1-63
// letters, digits, '.', '_' or '-', starting with a letter or digit.
func validName(s string) bool { return len(s) <= 63 && namePattern.MatchString(s) }

// Load reads and validates the file at path. Every problem in the file is
// reported in one *yamlx.Error; warnings are returned separately.
func Load(path string) (*Config, []string, error) {
	data, err := yamlx.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse decodes and validates data as agent.yaml, naming file in messages.
func Parse(file string, data []byte) (*Config, []string, error) {
	root, err := yamlx.Parse(file, data)
	if err != nil {
		return nil, nil, err
	}
	probs := &yamlx.Problems{File: file}
	if yamlx.IsNull(root) {
		probs.ErrorAt(yamlx.Pos{Line: 1, Col: 1}, "the file is empty: at least application must be set")
		return nil, nil, probs.Err()
	}
	cfg := Default()
	dec := &yamlx.Decoder{Problems: probs, Positions: map[string]yamlx.Pos{}}
	dec.Decode(root, cfg, "")
	// Paths under state_dir follow it unless set on their own.
	if _, set := dec.Positions["sources.inbox"]; !set && cfg.StateDir != Default().StateDir && filepath.IsAbs(cfg.StateDir) {
		cfg.Sources.Inbox = filepath.Join(cfg.StateDir, "inbox")
	}
	if cfg.DeploymentGroup == "" {
		cfg.DeploymentGroup = cfg.Application
	}
	v := validator{cfg: cfg, pos: dec.Positions, p: probs}
	v.validate()
	if err := probs.Err(); err != nil {
		return nil, probs.Warnings(), err
	}
	return cfg, probs.Warnings(), nil
}

// IsConfigError reports whether err is a problem with the file's content
// (as opposed to, say, a missing file), for the EX_CONFIG exit status.
func IsConfigError(err error) bool {
	var ye *yamlx.Error
	return errors.As(err, &ye)
}

type validator struct {
	cfg *Config
	pos map[string]yamlx.Pos
	p   *yamlx.Problems
}

// at returns the position of path, or of its closest parent that was set,
// so that a missing key is reported where its section starts.
func (v *validator) at(path string) yamlx.Pos {
	for path != "" {
		if p, ok := v.pos[path]; ok {
			return p
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return yamlx.Pos{Line: 1, Col: 1}
}

func (v *validator) errorf(path, format string, args ...any) {
	v.p.ErrorAt(v.at(path), "%s: %s", path, fmt.Sprintf(format, args...))
}

func (v *validator) absPath(path, value string, allowEmpty bool) {
	if value == "" {
		if !allowEmpty {
			v.errorf(path, "must be set")
		}
		return
	}
	if !filepath.IsAbs(value) {
		v.errorf(path, "%q must be an absolute path", value)
	}
}

func (v *validator) positive(path string, d time.Duration, allowZero bool) {
	if d < 0 || (d == 0 && !allowZero) {
		v.errorf(path, "must be greater than 0, got %s", d)
	}
}

func (v *validator) validate() {
	c := v.cfg
	if c.Application == "" {
		v.errorf("application", "must be set (it names this host's app in tags, AMI names and S3 keys)")
	} else if !validName(c.Application) {
		v.errorf("application", "%q: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", c.Application)
	}
	v.absPath("state_dir", c.StateDir, false)
	v.absPath("socket", c.Socket, false)
	if c.SocketGroup == "" {
		v.errorf("socket_group", "must be set (a group name or numeric gid)")
	}
	if c.InstanceID != "" && !instancePattern.MatchString(c.InstanceID) {
		v.errorf("instance_id", "%q is not an instance id (i-0123456789abcdef0)", c.InstanceID)
	}
	if c.Region != "" && !regionPattern.MatchString(c.Region) {
		v.errorf("region", "%q is not a region name (us-east-1)", c.Region)
	}
	if (c.InstanceID == "") != (c.Region == "") {
		v.errorf("instance_id", "instance_id and region are set together (on-prem hosts) or both left empty (read from IMDS)")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		v.errorf("log_level", "%q: want debug, info, warn or error", c.LogLevel)
	}
	v.validateSources()
	v.validateCheckpoint()
	r := c.Retention
	if r.KeepCheckpoints < 1 {
		v.errorf("retention.keep_checkpoints", "must be at least 1, got %d", r.KeepCheckpoints)
	}
	v.positive("retention.max_age", r.MaxAge, true)
	if r.KeepReleases < 1 {
		v.errorf("retention.keep_releases", "must be at least 1, got %d", r.KeepReleases)
	}
	if r.KeepHistory < 1 {
		v.errorf("retention.keep_history", "must be at least 1, got %d", r.KeepHistory)
	}
	l := c.Limits
	if l.MaxUnpackedBytes < 1<<20 {
		v.errorf("limits.max_unpacked_bytes", "must be at least 1MiB")
	}
	if l.MaxFiles < 1 {
		v.errorf("limits.max_files", "must be at least 1, got %d", l.MaxFiles)
	}
	if l.MaxFileBytes < 1 || l.MaxFileBytes > l.MaxUnpackedBytes {
		v.errorf("limits.max_file_bytes", "must be between 1 and limits.max_unpacked_bytes")
	}
	if l.HookOutputBytes < 4096 {
		v.errorf("limits.hook_output_bytes", "must be at least 4KiB")
	}
	v.positive("limits.hook_kill_grace", l.HookKillGrace, false)
	if l.HookCgroup != "" && !filepath.IsAbs(l.HookCgroup) {
		v.errorf("limits.hook_cgroup", "must be an absolute path in the cgroup v2 file system, got %q", l.HookCgroup)
	}
	if l.DownloadIdleTimeout < time.Second {
		v.errorf("limits.download_idle_timeout", "must be at least 1s, got %s", l.DownloadIdleTimeout)
	}
	if l.DownloadMinRate < 1024 {
		v.errorf("limits.download_min_rate", "must be at least 1KiB (per second)")
	}
	v.validateHealth()
	v.validateLadder()
	if c.Rollback.MaxClimbsPerBoot < 1 {
		v.errorf("rollback.max_climbs_per_boot", "must be at least 1, got %d", c.Rollback.MaxClimbsPerBoot)
	}
	if c.Rollback.MaxClimbsPerDay < c.Rollback.MaxClimbsPerBoot {
		v.errorf("rollback.max_climbs_per_day", "must be at least max_climbs_per_boot (%d), got %d", c.Rollback.MaxClimbsPerBoot, c.Rollback.MaxClimbsPerDay)
	}
	v.positive("rollback.checkpoint_wait", c.Rollback.CheckpointWait, false)
	v.positive("rollback.restore_warmup", c.Rollback.RestoreWarmup, true)
	v.positive("devices.attach_timeout", c.Devices.AttachTimeout, false)
	v.positive("devices.detach_timeout", c.Devices.DetachTimeout, false)
	v.absPath("boot.id_file", c.Boot.IDFile, false)
	if c.Trust.RequireSignature && len(c.Trust.PublicKeys) == 0 {
		v.errorf("trust.require_signature", "is true but trust.public_keys is empty: no bundle could ever be accepted")
	}
	v.absPath("devices.by_id_dir", c.Devices.ByIDDir, false)
	v.validateFleet()
	v.validateNotify()
	v.validateMetrics()
}

func (v *validator) validateSources() {
	s := v.cfg.Sources
	v.absPath("sources.inbox", s.Inbox, true)
	if s.Channel != "" {
		u, err := url.Parse(s.Channel)
		if err != nil || u.Scheme != "s3" || u.Host == "" || !strings.HasSuffix(u.Path, ".json") {
			v.errorf("sources.channel", "%q: want s3://bucket/prefix/<app>/channels/<name>.json", s.Channel)
		}
	}
	if s.PollInterval < time.Second {
		v.errorf("sources.poll_interval", "must be at least 1s, got %s", s.PollInterval)
	}
}

func (v *validator) validateCheckpoint() {
	c := v.cfg.Checkpoint
	seen := map[api.CheckpointKind]bool{}
	for i, k := range c.BeforeDeploy {
		p := fmt.Sprintf("checkpoint.before_deploy[%d]", i)
		switch {
		case k != api.KindEBS && k != api.KindAMI:
			v.errorf(p, "%q: want ebs or ami", k)
		case seen[k]:
			v.errorf(p, "%q is listed twice", k)
		}
		seen[k] = true
	}
	v.positive("checkpoint.create_timeout", c.CreateTimeout, false)
	for i, m := range c.Freeze {
		v.absPath(fmt.Sprintf("checkpoint.freeze[%d]", i), m, false)
		if m == "/" {
			v.errorf(fmt.Sprintf("checkpoint.freeze[%d]", i), "the root filesystem cannot be frozen: the agent itself runs on it")
		}
	}
}

func (v *validator) validateHealth() {
	h := &v.cfg.Health
	v.positive("health.interval", h.Interval, false)
	v.positive("health.grace", h.Grace, true)
	if h.SuccessesNeeded < 1 {
		v.errorf("health.successes_needed", "must be at least 1, got %d", h.SuccessesNeeded)
	}
	if h.FailuresAllowed < 1 {
		v.errorf("health.failures_allowed", "must be at least 1, got %d", h.FailuresAllowed)
	}
	v.positive("health.assess_timeout", h.AssessTimeout, false)
	v.positive("health.watch_window", h.WatchWindow, true)
	names := map[string]bool{}
	for i := range h.Checks {
		v.validateCheck(fmt.Sprintf("health.checks[%d]", i), &h.Checks[i], names)
	}
}

func (v *validator) validateCheck(p string, c *Check, names map[string]bool) {
	switch {
	case c.Name == "":
		v.errorf(p+".name", "every check needs a name")
	case !validName(c.Name):
		v.errorf(p+".name", "%q: use letters, digits, '.', '_' or '-'", c.Name)
	case names[c.Name]:
		v.errorf(p+".name", "%q is used by another check", c.Name)
	}
	names[c.Name] = true
	kinds := 0
	if c.HTTP != nil {
		kinds++
		u, err := url.Parse(c.HTTP.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.errorf(p+".http.url", "%q is not an http(s) URL", c.HTTP.URL)
		}
		if c.HTTP.ExpectStatus == (StatusRange{}) {
			c.HTTP.ExpectStatus = StatusRange{Lo: 200, Hi: 299}
		}
		c.HTTP.Timeout = defaultTimeout(v, p+".http.timeout", c.HTTP.Timeout, 2*time.Second)
	}
	if c.TCP != nil {
		kinds++
		if _, port, err := splitHostPort(c.TCP.Address); err != nil || port == "" {
			v.errorf(p+".tcp.address", "%q: want host:port", c.TCP.Address)
		}
		c.TCP.Timeout = defaultTimeout(v, p+".tcp.timeout", c.TCP.Timeout, time.Second)
	}
	if c.Command != nil {
		kinds++
		if len(c.Command.Argv) == 0 || c.Command.Argv[0] == "" {
			v.errorf(p+".command.argv", "must name a program")
		}
		c.Command.Timeout = defaultTimeout(v, p+".command.timeout", c.Command.Timeout, 10*time.Second)
	}
	if c.Systemd != nil {
		kinds++
		if c.Systemd.Unit == "" {
			v.errorf(p+".systemd.unit", "must name a unit")
		}
	}
	if c.CloudWatchAlarm != nil {
		kinds++
		if len(c.CloudWatchAlarm.AlarmNames) == 0 {
			v.errorf(p+".cloudwatch_alarm.alarm_names", "must name at least one alarm")
		}
		switch c.CloudWatchAlarm.InsufficientData {
		case "":
			c.CloudWatchAlarm.InsufficientData = "healthy"
		case "healthy", "unhealthy":
		default:
			v.errorf(p+".cloudwatch_alarm.insufficient_data", "%q: want healthy or unhealthy", c.CloudWatchAlarm.InsufficientData)
		}
	}
	if kinds != 1 {
		v.errorf(p, "a check has exactly one of http, tcp, command, systemd, cloudwatch_alarm (found %d)", kinds)
	}
}

func defaultTimeout(v *validator, path string, d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	v.positive(path, d, false)
	return d
}

func splitHostPort(addr string) (string, string, error) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return "", "", fmt.Errorf("missing port")
	}
	return addr[:i], addr[i+1:], nil
}

func (v *validator) validateLadder() {
	last := -1
	for i, r := range v.cfg.Rollback.Ladder {
		p := fmt.Sprintf("rollback.ladder[%d]", i)
		idx := rung.Index(r)
		switch {
		case idx < 0:
			v.errorf(p, "%q: want revision, volumes or root", r)
		case idx <= last:
			v.errorf(p, "%q: rungs are listed once, in climbing order (revision, volumes, root)", r)
		default:
			last = idx
		}
	}
}
