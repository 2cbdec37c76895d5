// Package api holds the JSON types and paths of the local socket API. It is
// shared by the server and the client and imports nothing of the project.
package api

import "time"

// SchemaVersion is carried by every body. It changes only when a field
// changes meaning; new fields may appear without a bump.
const SchemaVersion = 1

// Paths of the API.
const (
	PathStatus      = "/v1/status"
	PathDeployments = "/v1/deployments"
	PathRollback    = "/v1/rollback"
	PathCheckpoints = "/v1/checkpoints"
	PathHealth      = "/v1/health"
	PathEvents      = "/v1/events"
	PathMetrics     = "/v1/metrics"
	PathGuards      = "/v1/guards"
	// PathAcknowledge (POST, root): an operator saw the trouble that put
	// the agent in needs_operator (AcknowledgeRequest).
	PathAcknowledge = "/v1/acknowledge"
)

// HeaderServerVersion is set on every response.
const HeaderServerVersion = "Server-Version"

// Error codes of ErrorBody.Code.
const (
	CodeDenied         = "denied"          // peer may not do this
	CodeBrowserRequest = "browser_request" // Origin or Referer present
	CodeStarting       = "starting"        // readiness gate closed
	CodeNotFound       = "not_found"
	CodeBadRequest     = "bad_request"
	CodeConflict       = "conflict"
	CodeInternal       = "internal"
	CodeUnavailable    = "unavailable"
	CodeDisabled       = "disabled"           // the feature asked for is turned off in agent.yaml
	CodeTooLarge       = "too_large"          // request body over the API's limit
	CodeMethod         = "method_not_allowed" // the path exists, not with this method
	CodeTooMany        = "too_many"           // a user other than root holds too many connections or streams
)

// ErrorBody is the body of every non-2xx answer.
type ErrorBody struct {
	SchemaVersion int    `json:"schema_version"`
	Error         string `json:"error"`
	Code          string `json:"code"`
}

// AgentState is the state of the agent as a whole, in Status.State.
type AgentState string

// Agent states.
const (
	StateStarting      AgentState = "starting"
	StateIdle          AgentState = "idle"
	StateBusy          AgentState = "busy"
	StateNeedsOperator AgentState = "needs_operator"
	StateStopping      AgentState = "stopping"
)

// Status is GET /v1/status.
type Status struct {
	SchemaVersion int        `json:"schema_version"`
	Agent         Agent      `json:"agent"`
	Application   string     `json:"application"`
	State         AgentState `json:"state"`
	// Summary is the same human sentence as sd_notify STATUS.
	Summary  string       `json:"summary"`
	Identity Identity     `json:"identity"`
	Current  *RevisionRef `json:"current"`
	LastGood *RevisionRef `json:"last_good"`
	// Operation is the in-flight deployment, rollback or restore, if any.
	Operation   *Operation             `json:"operation"`
	Checkpoints CheckpointSummary      `json:"checkpoints"`
	Warnings    []string               `json:"warnings,omitempty"`
	Config      ConfigSummary          `json:"config"`
	Sources     map[string]SourceState `json:"sources,omitempty"`
	Health      *HealthSummary         `json:"health,omitempty"`
	Watch       *WatchWindow           `json:"watch,omitempty"`
	Operator    *OperatorAttention     `json:"needs_operator,omitempty"`
}

// Agent describes the daemon itself.
type Agent struct {
	Version   string    `json:"version"`
	Commit    string    `json:"commit"`
	GoVersion string    `json:"go_version"`
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	BootID    string    `json:"boot_id,omitempty"`
}

// Identity is who the agent is: the instance and its volumes.
type Identity struct {
	InstanceID       string `json:"instance_id"`
	Region           string `json:"region"`
	AvailabilityZone string `json:"availability_zone"`
	AccountID        string `json:"account_id"`
	InstanceType     string `json:"instance_type"`
	// Source is "imds" on EC2 or "config" on on-prem hosts.
	Source         string   `json:"source"`
	RootDeviceName string   `json:"root_device_name"`
	Volumes        []Volume `json:"volumes"`
}

// Volume is one EBS volume attached to the instance.
type Volume struct {
	VolumeID   string `json:"volume_id"`
	DeviceName string `json:"device_name"`
	Root       bool   `json:"root"`
	SizeGiB    int32  `json:"size_gib"`
	VolumeType string `json:"volume_type"`
	Iops       int32  `json:"iops,omitempty"`
	Throughput int32  `json:"throughput,omitempty"`
	Encrypted  bool   `json:"encrypted"`
	// LinuxDevice is the block device the volume appears as on this host,
	// empty when it could not be found (LinuxDeviceError says why).
	LinuxDevice      string `json:"linux_device,omitempty"`
	LinuxDeviceError string `json:"linux_device_error,omitempty"`
}

// RevisionRef names an installed revision.
type RevisionRef struct {
	DeploymentID string    `json:"deployment_id"`
	Revision     string    `json:"revision"`
	Digest       string    `json:"digest,omitempty"`
	InstalledAt  time.Time `json:"installed_at"`
}

// Operation is the work in flight.
type Operation struct {
	Kind         DeploymentKind   `json:"kind"`
	DeploymentID string           `json:"deployment_id,omitempty"`
	Status       DeploymentStatus `json:"status"`
	Step         string           `json:"step"`
	StartedAt    time.Time        `json:"started_at"`
}

// CheckpointSummary is the checkpoint part of the status.
type CheckpointSummary struct {
	Total   int         `json:"total"`
	Pending int         `json:"pending"`
	Newest  *Checkpoint `json:"newest,omitempty"`
}

// ConfigSummary says which config is in effect.
type ConfigSummary struct {
	Path     string    `json:"path"`
	LoadedAt time.Time `json:"loaded_at"`
	// ReloadError is set when the last SIGHUP reload failed and the
	// previous config is still in effect.
	ReloadError string `json:"reload_error,omitempty"`
}

// SourceState is the state of one deployment source (inbox, channel).
type SourceState struct {
	Enabled   bool      `json:"enabled"`
	Detail    string    `json:"detail,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
}

// HealthSummary is the last assessment.
type HealthSummary struct {
	Healthy    bool          `json:"healthy"`
	AssessedAt time.Time     `json:"assessed_at"`
	Reason     string        `json:"reason,omitempty"`
	Checks     []CheckResult `json:"checks"`
}

// CheckResult is one check's last result.
type CheckResult struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Healthy bool   `json:"healthy"`
	// Output says what happened in words safe for every reader of the
	// status: a status line, an exit status; URLs without passwords or
	// query values.
	Output string `json:"output,omitempty"`
	// Detail is what the check saw that may hold the application's
	// secrets (a command's output, the start of an HTTP body). The API
	// gives it to root only; others get DetailWithheld.
	Detail         string        `json:"detail,omitempty"`
	DetailWithheld bool          `json:"detail_withheld,omitempty"`
	Duration       time.Duration `json:"duration_ns"`
	At             time.Time     `json:"at"`
}

// WatchWindow is the post-deployment watch.
type WatchWindow struct {
	DeploymentID string    `json:"deployment_id"`
	Until        time.Time `json:"until"`
}

// OperatorAttention is set when the agent stopped and needs a human.
type OperatorAttention struct {
	DeploymentID string `json:"deployment_id,omitempty"`
	// Trouble names a problem of the agent's own record (journal-lost),
	// not of a deployment: it is cleared by acknowledging it
	// (agentctl acknowledge TROUBLE).
	Trouble string    `json:"trouble,omitempty"`
	What    string    `json:"what"`
	Next    string    `json:"next"`
	Since   time.Time `json:"since"`
}

// DeploymentStatus is where a deployment (or rollback, restore, guard)
// is in its lifecycle. Only the engine changes it, through one function
// checked against a table of allowed transitions (docs/design.md).
type DeploymentStatus string

// Deployment statuses.
const (
	StatusQueued        DeploymentStatus = "queued"
	StatusRunning       DeploymentStatus = "running"
	StatusSucceeded     DeploymentStatus = "succeeded"
	StatusFailed        DeploymentStatus = "failed"
	StatusRollingBack   DeploymentStatus = "rolling_back"
	StatusRolledBack    DeploymentStatus = "rolled_back"
	StatusNeedsOperator DeploymentStatus = "needs_operator"
)

// Terminal reports whether a deployment status is final: the operation
// ended (a succeeded deployment may still be rolled back by its watch
// window or a boot assessment, as a new climb of the same record).
func (s DeploymentStatus) Terminal() bool {
	switch s {
	case StatusSucceeded, StatusFailed, StatusRolledBack, StatusNeedsOperator:
		return true
	}
	return false
}

// StepStatus is the state of one step or one rung.
type StepStatus string

// Step states.
const (
	StepRunning   StepStatus = "running"
	StepSucceeded StepStatus = "succeeded"
	StepFailed    StepStatus = "failed"
	StepSkipped   StepStatus = "skipped"
)

// StepEffect says what a step does to the host, so that recovery and the
// sources read it from the record instead of knowing step names.
type StepEffect string

// Step effects. A record without one (written by an older agent) counts
// as EffectHost: recovery then rolls back rather than starting over,
// which is the safe side.
const (
	// EffectBundle: the step only reads the bundle (fetch, unpack,
	// validate); failing here rejects the bundle.
	EffectBundle StepEffect = "bundle"
	// EffectNone: the step changes nothing on the host (plans, intents,
	// AWS resources made for later use, a checkpoint before a restore).
	EffectNone StepEffect = "none"
	// EffectHost: the step may have changed the host (hooks, install,
	// unmount, detach...).
	EffectHost StepEffect = "host"
)

// DeploymentKind is what an operation does.
type DeploymentKind string

// Deployment kinds.
const (
	KindDeploy   DeploymentKind = "deploy"
	KindRollback DeploymentKind = "rollback"
	// KindRestore restores a checkpoint's data volumes; KindRestoreRoot its
	// root volume.
	KindRestore     DeploymentKind = "restore"
	KindRestoreRoot DeploymentKind = "restore-root"
	// KindGuard wraps a local change (a package upgrade) with a checkpoint
	// and a health check.
	KindGuard DeploymentKind = "guard"
)

// RungName names a rung of the rollback ladder. The names and their
// climbing order belong to the engine (internal/engine/rung).
type RungName string

// Deployment is one deployment (or manual rollback) and its steps.
type Deployment struct {
	ID       string           `json:"id"`
	Kind     DeploymentKind   `json:"kind"`
	Revision string           `json:"revision"`
	Digest   string           `json:"digest,omitempty"`
	Source   Source           `json:"source"`
	Status   DeploymentStatus `json:"status"`
	// Trigger says who asked: api, inbox, channel, recovery.
	Trigger    string    `json:"trigger"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	EndedAt    time.Time `json:"ended_at,omitzero"`
	Error      string    `json:"error,omitempty"`
	Steps      []Step    `json:"steps"`
	Rungs      []Rung    `json:"rungs,omitempty"`
	Warnings   []string  `json:"warnings,omitempty"`
	NoOp       bool      `json:"no_op,omitempty"`
	Checkpoint string    `json:"checkpoint,omitempty"`
	// Release is the deployment id whose unpacked revision this one
	// installs (itself for a deploy; the target for a rollback).
	Release string `json:"release,omitempty"`
	// RollbackTo is the deployment a manual rollback asked for; after an
	// automatic rollback, RolledBackTo names the revision reinstalled.
	RollbackTo   string `json:"rollback_to,omitempty"`
	RolledBackTo string `json:"rolled_back_to,omitempty"`
	// IgnoreApplicationStopFailures lets a deployment past a broken
	// ApplicationStop script of the previous revision (CodeDeploy's flag).
	IgnoreApplicationStopFailures bool `json:"ignore_application_stop_failures,omitempty"`
	// Volumes and Root are the plans of restore operations.
	Volumes []VolumeRestore `json:"volumes,omitempty"`
	Root    *RootRestore    `json:"root,omitempty"`
	// PreviousGood is the last good deployment when this one started: the
	// target of its rollback once it has itself become the last good one
	// (a failure in the watch window, at boot).
	PreviousGood string `json:"previous_good,omitempty"`
	// Health is the last assessment of this operation.
	Health *HealthSummary `json:"health,omitempty"`
	// Label and ExitCode are a guard's: what the change was and how the
	// command ended.
	Label    string `json:"label,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
	// CodeDeploy names the CodeDeploy deployment of a codedeploy record.
	CodeDeploy *CodeDeployRef `json:"codedeploy,omitempty"`
	// Assessment says which later assessment found a succeeded
	// deployment unhealthy: watch_window or boot (empty otherwise).
	Assessment string `json:"assessment,omitempty"`
}

// FailedStep is the deployment's own step (not a rung's) that failed
// last, nil when none did.
func (d *Deployment) FailedStep() *Step {
	for i := len(d.Steps) - 1; i >= 0; i-- {
		if s := &d.Steps[i]; s.Rung == "" && s.Status == StepFailed {
			return s
		}
	}
	return nil
}

// Rejected reports whether the deployment ended failed at a step that
// only reads its bundle: the bundle was refused before anything changed.
func (d *Deployment) Rejected() bool {
	s := d.FailedStep()
	return d.Status == StatusFailed && s != nil && s.Effect == EffectBundle
}

// Source is where a deployment's bundle came from.
type Source struct {
	Type      string `json:"type"` // file, dir, s3, inbox, channel, release
	Location  string `json:"location"`
	Bucket    string `json:"bucket,omitempty"`
	Key       string `json:"key,omitempty"`
	VersionID string `json:"version_id,omitempty"`
	ETag      string `json:"etag,omitempty"`
	Size      int64  `json:"size,omitempty"`
	// SHA256 is the digest the bundle must have: from a manifest the
	// agent verified, or measured when the inbox took an unsigned drop.
	// The fetch refuses any other bytes (then Size must match too).
	SHA256 string `json:"sha256,omitempty"`
	// Signer is the key (as minisign prints its id) whose signature over
	// the manifest vouched for the bundle; empty when it came unsigned.
	Signer string `json:"signer,omitempty"`
	// AllowUnsigned is root's --allow-unsigned: deploy this source without
	// a signature although trust.require_signature is true.
	AllowUnsigned bool `json:"allow_unsigned,omitempty"`
}

// Step is one journaled step of a deployment.
type Step struct {
	Name      string     `json:"name"`
	Status    StepStatus `json:"status"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   time.Time  `json:"ended_at,omitzero"`
	// Revision names whose scripts or files the step used, when that is
	// not the deployment's own (ApplicationStop runs the previous one's).
	Revision string `json:"revision,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Error    string `json:"error,omitempty"`
	// Rung is set for steps taken while climbing the rollback ladder.
	Rung RungName `json:"rung,omitempty"`
	// Effect is what the step does to the host (empty: EffectHost).
	Effect StepEffect `json:"effect,omitempty"`
	// Interrupted: the agent died while this step ran (recovery found it
	// running). The engine counts these to stop a step that kills it.
	Interrupted bool `json:"interrupted,omitempty"`
}

// ChangesHost reports whether the step may have changed the host, once
// it started and was not skipped.
func (s Step) ChangesHost() bool {
	return s.Status != StepSkipped && s.Effect != EffectBundle && s.Effect != EffectNone
}

// Rung is one climb of the rollback ladder.
type Rung struct {
	Name      RungName   `json:"name"`
	Status    StepStatus `json:"status"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   time.Time  `json:"ended_at,omitzero"`
	Detail    string     `json:"detail,omitempty"`
	Error     string     `json:"error,omitempty"`
}

// DeployRequest is POST /v1/deployments.
type DeployRequest struct {
	// Source is a bundle file path, a directory, or s3://bucket/key[?versionId=...]
	// as seen by the agent.
	Source string `json:"source"`
	// Revision labels the deployment; default: derived from the source.
	Revision                      string `json:"revision,omitempty"`
	IgnoreApplicationStopFailures bool   `json:"ignore_application_stop_failures,omitempty"`
	// AllowUnsigned deploys a source that has no valid signature although
	// trust.require_signature is true (root's explicit choice).
	AllowUnsigned bool `json:"allow_unsigned,omitempty"`
}

// AcknowledgeRequest is POST /v1/acknowledge: Trouble must name the
// trouble the status reports.
type AcknowledgeRequest struct {
	Trouble string `json:"trouble"`
}

// RollbackRequest is POST /v1/rollback.
type RollbackRequest struct {
	// To is a revision label or deployment id; empty means the last good one.
	To string `json:"to,omitempty"`
}

// DeploymentRef answers POST /v1/deployments and POST /v1/rollback.
type DeploymentRef struct {
	SchemaVersion int              `json:"schema_version"`
	ID            string           `json:"id"`
	Status        DeploymentStatus `json:"status"`
}

// DeploymentList is GET /v1/deployments.
type DeploymentList struct {
	SchemaVersion int          `json:"schema_version"`
	Deployments   []Deployment `json:"deployments"`
}

// DeploymentBody is GET /v1/deployments/{id}.
type DeploymentBody struct {
	SchemaVersion int        `json:"schema_version"`
	Deployment    Deployment `json:"deployment"`
}

// Event is one line of GET /v1/events (NDJSON).
type Event struct {
	SchemaVersion int       `json:"schema_version"`
	Time          time.Time `json:"time"`
	// Type: snapshot (the deployment as it is when the stream starts),
	// step, status, log.
	Type         EventType        `json:"type"`
	DeploymentID string           `json:"deployment_id,omitempty"`
	Status       DeploymentStatus `json:"status,omitempty"`
	Step         *Step            `json:"step,omitempty"`
	Message      string           `json:"message,omitempty"`
	Deployment   *Deployment      `json:"deployment,omitempty"`
}

// EventType is the type of an Event.
type EventType string

// Event types.
const (
	EventSnapshot EventType = "snapshot"
	EventStep     EventType = "step"
	EventStatus   EventType = "status"
	EventMessage  EventType = "message"
)

// VolumeRestore is the journaled progress of restoring one data volume.
type VolumeRestore struct {
	DeviceName  string        `json:"device_name"`
	SnapshotID  string        `json:"snapshot_id"`
	OldVolumeID string        `json:"old_volume_id"`
	NewVolumeID string        `json:"new_volume_id,omitempty"`
	Mounts      []MountRecord `json:"mounts,omitempty"`
	// AttachedAs is the device name the new volume was attached at when
	// EC2 would not take DeviceName (still in use, or held by the guest);
	// empty when it took DeviceName.
	AttachedAs string `json:"attached_as,omitempty"`
	// Stage is the last stage done: created, unmounted, detached, attached, mounted.
	Stage string `json:"stage,omitempty"`
}

// MountRecord is a mount of a volume, as /proc/self/mountinfo showed it,
// so the restored volume can be mounted the same way.
type MountRecord struct {
	Target       string `json:"target"`
	Root         string `json:"root"`
	FSType       string `json:"fstype"`
	Options      string `json:"options"`
	SuperOptions string `json:"super_options"`
}

// RootRestore is the journaled progress of a root volume restore.
type RootRestore struct {
	Checkpoint string `json:"checkpoint"`
	SnapshotID string `json:"snapshot_id,omitempty"`
	ImageID    string `json:"image_id,omitempty"`
	PreRestore string `json:"pre_restore,omitempty"`
	TaskID     string `json:"task_id,omitempty"`
	TaskState  string `json:"task_state,omitempty"`
}

// GuardRequest is POST /v1/guards.
type GuardRequest struct {
	Label string `json:"label,omitempty"`
}

// GuardStarted answers it once the checkpoint is taken: the command may run.
type GuardStarted struct {
	SchemaVersion int    `json:"schema_version"`
	ID            string `json:"id"`
	Checkpoint    string `json:"checkpoint"`
}

// GuardDone is POST /v1/guards/{id}/done: the command ended.
type GuardDone struct {
	ExitCode int `json:"exit_code"`
}

// HealthReport is GET /v1/health: every check run once, now.
type HealthReport struct {
	SchemaVersion int           `json:"schema_version"`
	Healthy       bool          `json:"healthy"`
	Checks        []CheckResult `json:"checks"`
}
