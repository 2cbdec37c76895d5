package api

import "time"

// CheckpointState is how far a checkpoint (or one of its resources) is.
type CheckpointState string

// Checkpoint states.
const (
	CheckpointPending   CheckpointState = "pending"
	CheckpointCompleted CheckpointState = "completed"
	CheckpointError     CheckpointState = "error"
)

// CheckpointKind is what a checkpoint holds.
type CheckpointKind string

// Checkpoint kinds.
const (
	KindEBS CheckpointKind = "ebs"
	KindAMI CheckpointKind = "ami"
)

// Checkpoint is one rollback point of the host: an EBS snapshot set of the
// instance's volumes, an AMI, or both, taken at one moment.
type Checkpoint struct {
	ID    string           `json:"id"`
	Kinds []CheckpointKind `json:"kinds"`
	// State is pending until every resource is complete, error if any failed.
	State CheckpointState `json:"state"`
	// Progress is the least advanced snapshot's progress ("57%").
	Progress   string             `json:"progress,omitempty"`
	CreatedAt  time.Time          `json:"created_at"`
	Reason     string             `json:"reason,omitempty"` // deploy, manual, guard, pre-restore, ...
	Label      string             `json:"label,omitempty"`
	Revision   string             `json:"revision,omitempty"`
	Deployment string             `json:"deployment,omitempty"`
	Pinned     bool               `json:"pinned,omitempty"`
	Snapshots  []CheckpointVolume `json:"snapshots,omitempty"`
	Image      *CheckpointImage   `json:"image,omitempty"`
	// Protected says why prune keeps it, when it does (pinned, last good, ...).
	Protected string `json:"protected,omitempty"`
}

// CheckpointVolume is one snapshot of a snapshot set.
type CheckpointVolume struct {
	SnapshotID string          `json:"snapshot_id"`
	VolumeID   string          `json:"volume_id"`
	DeviceName string          `json:"device_name,omitempty"`
	Root       bool            `json:"root,omitempty"`
	SizeGiB    int32           `json:"size_gib,omitempty"`
	State      CheckpointState `json:"state"`
	Progress   string          `json:"progress,omitempty"`
}

// CheckpointImage is the AMI of a checkpoint.
type CheckpointImage struct {
	ImageID     string          `json:"image_id"`
	Name        string          `json:"name"`
	State       CheckpointState `json:"state"`
	SnapshotIDs []string        `json:"snapshot_ids,omitempty"`
}

// CheckpointRequest is POST /v1/checkpoints.
type CheckpointRequest struct {
	Kinds []CheckpointKind `json:"kinds,omitempty"` // default: checkpoint.before_deploy, or ebs
	Label string           `json:"label,omitempty"`
	Pin   bool             `json:"pin,omitempty"`
	// Reason defaults to manual.
	Reason string `json:"reason,omitempty"`
}

// CheckpointBody answers POST /v1/checkpoints and GET /v1/checkpoints/{id}.
type CheckpointBody struct {
	SchemaVersion int        `json:"schema_version"`
	Checkpoint    Checkpoint `json:"checkpoint"`
}

// CheckpointList is GET /v1/checkpoints.
type CheckpointList struct {
	SchemaVersion int          `json:"schema_version"`
	Checkpoints   []Checkpoint `json:"checkpoints"`
	// ReplacedVolumes are old volumes kept detached after a volume restore.
	ReplacedVolumes []ReplacedVolume `json:"replaced_volumes,omitempty"`
}

// ReplacedVolume is a data volume a restore swapped out; kept for undo.
type ReplacedVolume struct {
	VolumeID   string    `json:"volume_id"`
	ReplacedBy string    `json:"replaced_by"`
	Checkpoint string    `json:"checkpoint"`
	DeviceName string    `json:"device_name"`
	ReplacedAt time.Time `json:"replaced_at"`
}

// PruneRequest is POST /v1/checkpoints/prune.
type PruneRequest struct {
	DryRun bool `json:"dry_run,omitempty"`
}

// PruneReport answers it: what was (or would be) deleted and kept, and
// what failed (one failure does not stop the rest).
type PruneReport struct {
	SchemaVersion int               `json:"schema_version"`
	DryRun        bool              `json:"dry_run"`
	Deleted       []string          `json:"deleted"`
	Kept          map[string]string `json:"kept"` // id → why
	Errors        []string          `json:"errors,omitempty"`
}

// RestoreRequest is POST /v1/checkpoints/{id}/restore.
type RestoreRequest struct {
	Volumes bool `json:"volumes,omitempty"`
	Root    bool `json:"root,omitempty"`
}
