// Package config holds the schema of agent.yaml, its defaults, and a strict
// loader that reports every problem at once with its line.
package config

import (
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/engine/rung"
)

// The doc tags feed the generated config reference in the README.

// Config is the whole of agent.yaml.
type Config struct {
	Application string `yaml:"application" doc:"Application name; tags every AWS resource and names AMIs."`
	StateDir    string `yaml:"state_dir" doc:"Journal, releases, downloads and hook logs live here."`
	Socket      string `yaml:"socket" doc:"Unix socket of the local API (agentctl)."`
	SocketGroup string `yaml:"socket_group" doc:"Group (name or numeric gid) whose members may read the API; root may do everything."`
	InstanceID  string `yaml:"instance_id" doc:"Empty: read from IMDSv2. Set it (with region) on on-prem hosts."`
	Region      string `yaml:"region" doc:"Empty: read from IMDSv2."`
	LogLevel    string `yaml:"log_level" doc:"debug, info, warn or error."`
	// DeploymentGroup is what hooks see as DEPLOYMENT_GROUP_NAME.
	DeploymentGroup string `yaml:"deployment_group" doc:"DEPLOYMENT_GROUP_NAME given to hooks; empty: the application name."`

	Sources    Sources    `yaml:"sources"`
	Checkpoint Checkpoint `yaml:"checkpoint"`
	Retention  Retention  `yaml:"retention"`
	Health     Health     `yaml:"health"`
	Rollback   Rollback   `yaml:"rollback"`
	Boot       Boot       `yaml:"boot"`
	Trust      Trust      `yaml:"trust"`
	Devices    Devices    `yaml:"devices"`
	Limits     Limits     `yaml:"limits"`
	Fleet      Fleet      `yaml:"fleet"`
	Notify     Notify     `yaml:"notify"`
	Metrics    Metrics    `yaml:"metrics"`
}

// Limits bound what one deployment may take.
type Limits struct {
	MaxUnpackedBytes ByteSize      `yaml:"max_unpacked_bytes" doc:"A bundle may unpack to at most this much (2GiB)."`
	MaxFiles         int           `yaml:"max_files" doc:"A bundle may hold at most this many entries."`
	MaxFileBytes     ByteSize      `yaml:"max_file_bytes" doc:"One file of a bundle may be at most this big."`
	HookOutputBytes  ByteSize      `yaml:"hook_output_bytes" doc:"Each lifecycle event's output file is capped at this size."`
	HookKillGrace    time.Duration `yaml:"hook_kill_grace" doc:"After a hook's timeout: SIGTERM, then SIGKILL after this."`
	HookCgroup       string        `yaml:"hook_cgroup" doc:"Empty: hooks' cgroups are made under the agent's own cgroup. Else an existing cgroup v2 directory, not holding the agent, to make them under. Read at start."`
	// A GET from S3 that trickles must not hold its reader forever (issue
	// 17 item 13): no byte for DownloadIdleTimeout, or slower on the whole
	// than DownloadMinRate, ends it.
	DownloadIdleTimeout time.Duration `yaml:"download_idle_timeout" doc:"An S3 download that receives no byte for this long fails."`
	DownloadMinRate     ByteSize      `yaml:"download_min_rate" doc:"An S3 download fails once it has taken longer than download_idle_timeout plus its size at this rate (bytes per second)."`
}

// Sources says where deployments come from.
type Sources struct {
	Inbox        string        `yaml:"inbox" doc:"Folder watched for bundles; empty disables it."`
	Channel      string        `yaml:"channel" doc:"S3 release channel: s3://bucket/prefix/<app>/channels/<name>.json; empty disables it."`
	PollInterval time.Duration `yaml:"poll_interval" doc:"How often the channel is polled (with jitter)."`
}

// Checkpoint is the rollback-point policy.
type Checkpoint struct {
	BeforeDeploy []api.CheckpointKind `yaml:"before_deploy" doc:"Kinds taken before each deployment: ebs, ami; [] for none."`
	Volumes      VolumeSelector       `yaml:"volumes" doc:"all, data, or a list of volume ids."`
	Freeze       []string             `yaml:"freeze" doc:"Data mount points frozen (fsfreeze) around the snapshot call only."`
	Required     bool                 `yaml:"required" doc:"No rollback point, no deploy."`
	// CreateTimeout bounds the create calls with their retries (throttling,
	// snapshot rate limits), not the snapshots' completion.
	CreateTimeout time.Duration `yaml:"create_timeout" doc:"How long the create calls may keep retrying (throttling, rate limits) before the checkpoint fails."`
	// PackageManagers enables the apt/dnf hooks the packages ship: they ask
	// for a checkpoint before every package transaction.
	PackageManagers bool `yaml:"package_managers" doc:"Take a checkpoint before every apt or dnf transaction (the hooks the packages ship)."`
}

// Retention bounds what is kept.
type Retention struct {
	KeepCheckpoints int           `yaml:"keep_checkpoints" doc:"Newest checkpoints kept (the last good and pinned ones are always kept)."`
	MaxAge          time.Duration `yaml:"max_age" doc:"Checkpoints older than this are pruned."`
	KeepReleases    int           `yaml:"keep_releases" doc:"Unpacked revisions kept on disk (current and last good always kept)."`
	KeepHistory     int           `yaml:"keep_history" doc:"Deployment records (and their hook logs) kept."`
}

// Health is the health assessment.
type Health struct {
	Checks          []Check       `yaml:"checks" doc:"Health checks; each has a name and exactly one of http, tcp, command, systemd, cloudwatch_alarm."`
	Interval        time.Duration `yaml:"interval" doc:"Time between check rounds."`
	Grace           time.Duration `yaml:"grace" doc:"Wait before the first round."`
	SuccessesNeeded int           `yaml:"successes_needed" doc:"Passing rounds in a row for healthy."`
	FailuresAllowed int           `yaml:"failures_allowed" doc:"Failing rounds in a row for unhealthy."`
	AssessTimeout   time.Duration `yaml:"assess_timeout" doc:"An assessment not healthy by then is unhealthy."`
	WatchWindow     time.Duration `yaml:"watch_window" doc:"Keep checking this long after a deployment succeeds."`
}

// Check is one health check.
type Check struct {
	Name            string           `yaml:"name"`
	HTTP            *HTTPCheck       `yaml:"http"`
	TCP             *TCPCheck        `yaml:"tcp"`
	Command         *CommandCheck    `yaml:"command"`
	Systemd         *SystemdCheck    `yaml:"systemd"`
	CloudWatchAlarm *CloudWatchCheck `yaml:"cloudwatch_alarm"`
}

// HTTPCheck passes when the URL answers with the expected status.
type HTTPCheck struct {
	URL          string        `yaml:"url"`
	ExpectStatus StatusRange   `yaml:"expect_status" doc:"A status (200) or a range (200-299)."`
	BodyContains string        `yaml:"body_contains"`
	Timeout      time.Duration `yaml:"timeout"`
}

// TCPCheck passes when the address accepts a connection.
type TCPCheck struct {
	Address string        `yaml:"address"`
	Timeout time.Duration `yaml:"timeout"`
}

// CommandCheck passes when the command exits 0.
type CommandCheck struct {
	Argv    []string      `yaml:"argv"`
	Timeout time.Duration `yaml:"timeout"`
}

// SystemdCheck passes when the unit is active.
type SystemdCheck struct {
	Unit string `yaml:"unit"`
}

// CloudWatchCheck fails when any alarm is in ALARM.
type CloudWatchCheck struct {
	AlarmNames       []string `yaml:"alarm_names"`
	InsufficientData string   `yaml:"insufficient_data" doc:"healthy (default) or unhealthy."`
}

// Rollback says what the agent may do by itself.
type Rollback struct {
	Automatic bool           `yaml:"automatic" doc:"Roll back by itself when health fails."`
	Ladder    []api.RungName `yaml:"ladder" doc:"Rungs the agent may climb by itself: revision, volumes, root."`
	// The limits stop a host that keeps failing from climbing forever (a
	// root rung reboots: without them, a reboot loop).
	MaxClimbsPerBoot int `yaml:"max_climbs_per_boot" doc:"Automatic climbs allowed per boot; beyond it: needs_operator."`
	MaxClimbsPerDay  int `yaml:"max_climbs_per_day" doc:"Automatic climbs allowed per 24 hours; beyond it: needs_operator."`
	// CheckpointWait bounds how long the volumes and root rungs wait for
	// the checkpoint they restore to complete: a first snapshot of a large
	// volume can take hours and an AMI up to a day, and meanwhile the
	// application is down.
	CheckpointWait time.Duration `yaml:"checkpoint_wait" doc:"How long the volumes and root rungs wait for their checkpoint to complete; beyond it: needs_operator, saying what to run once it completes."`
	// RestoreWarmup: volumes made from snapshots fetch each block from
	// S3 on first read, so the assessment after a restore may see checks
	// time out on a healthy application.
	RestoreWarmup time.Duration `yaml:"restore_warmup" doc:"After a volume or root restore, how long the assessment lets checks fail before counting them (restored volumes read slowly until warm); 0: no allowance."`
}

// Boot is what happens on every start with a new boot id.
type Boot struct {
	Assess bool `yaml:"assess" doc:"Assess the current revision after every boot."`
	// IDFile is where the kernel's boot id is read (containers and tests
	// may point it elsewhere).
	IDFile string `yaml:"id_file" doc:"Where the boot id is read; a new id means a new boot."`
}

// Trust is the signature policy for bundles.
type Trust struct {
	PublicKeys       []string `yaml:"public_keys" doc:"minisign public keys (base64 lines or files)."`
	RequireSignature bool     `yaml:"require_signature" doc:"Refuse bundles without a valid signature."`
}

// Devices tells how volumes map to block devices.
type Devices struct {
	ByIDDir string `yaml:"by_id_dir" doc:"Where the nvme-Amazon_Elastic_Block_Store_vol... links live."`
	// AttachTimeout bounds how long a restore waits for a volume it
	// attached to show up: EC2 leaves an attachment at a device name the
	// guest still holds "attaching" until the instance reboots.
	AttachTimeout time.Duration `yaml:"attach_timeout" doc:"How long an attached volume may stay attaching (or without its block device) before the restore detaches it and attaches it at another device name."`
	// DetachTimeout bounds how long a restore waits for a detach EC2
	// keeps busy (something on the host still uses the volume).
	DetachTimeout time.Duration `yaml:"detach_timeout" doc:"How long a restore waits for a detach that stays busy (the volume still in use on the host) before it fails, saying what uses it."`
}

// Default returns the configuration used for every key the file leaves out.
func Default() *Config {
	return &Config{
		Application: "",
		StateDir:    "/var/lib/rollback-agent",
		Socket:      "/run/rollback-agent/agent.sock",
		SocketGroup: "rollback-agent",
		LogLevel:    "info",
		Sources: Sources{
			Inbox:        "/var/lib/rollback-agent/inbox",
			PollInterval: 30 * time.Second,
		},
		Checkpoint: Checkpoint{
			BeforeDeploy:  []api.CheckpointKind{api.KindEBS},
			Volumes:       VolumeSelector{Mode: VolumesAll},
			Required:      true,
			CreateTimeout: 3 * time.Minute,
		},
		Retention: Retention{KeepCheckpoints: 5, MaxAge: 720 * time.Hour, KeepReleases: 5, KeepHistory: 200},
		Limits: Limits{
			MaxUnpackedBytes: 2 << 30,
			MaxFiles:         100000,
			MaxFileBytes:     1 << 30,
			HookOutputBytes:  10 << 20,
			HookKillGrace:    5 * time.Second,
			// 64KiB/s: a 100 MiB bundle may take 27 minutes, a link far
			// slower than that is not one to deploy over.
			DownloadIdleTimeout: time.Minute,
			DownloadMinRate:     64 << 10,
		},
		Health: Health{
			Interval:        2 * time.Second,
			Grace:           5 * time.Second,
			SuccessesNeeded: 2,
			FailuresAllowed: 3,
			AssessTimeout:   60 * time.Second,
			WatchWindow:     5 * time.Minute,
		},
		Rollback: Rollback{Automatic: true, Ladder: []api.RungName{rung.Revision, rung.Volumes}, MaxClimbsPerBoot: 3, MaxClimbsPerDay: 10, CheckpointWait: 30 * time.Minute, RestoreWarmup: 5 * time.Minute},
		Boot:     Boot{Assess: true, IDFile: "/proc/sys/kernel/random/boot_id"},
		Devices:  Devices{ByIDDir: "/dev/disk/by-id", AttachTimeout: time.Minute, DetachTimeout: 5 * time.Minute},
		Fleet:    fleetDefaults(),
		Notify:   notifyDefaults(),
		Metrics:  metricsDefaults(),
	}
}
