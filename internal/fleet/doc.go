// Package fleet is every host's state in S3, beside the release channel it
// follows: each agent publishes a small host document (publish.go), and
// the workstation reads them all (read.go) for `agentctl fleet` (view.go)
// and for the gate of `agentctl promote --after` (gate.go). S3 is the only
// server: no fleet service of our own.
//
// Layout, under s3://BUCKET/PREFIX/APP/ (beside revisions/ and channels/):
//
//	hosts/NAME.json   one HostDoc per host
//
// NAME is the caller's aws:userid when the agent runs on an instance
// role (ROLE-ID:INSTANCE-ID: IAM can then scope each host's PutObject to
// its own key with ${aws:userid}), else the instance id.
package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// DocSchema is the schema_version of a HostDoc.
const DocSchema = 1

// HostsDir is the folder of host documents under the app's prefix.
const HostsDir = "hosts/"

// MaxDocBytes bounds what is read of one host document.
const MaxDocBytes = 64 << 10

// StaleAfter is how many heartbeats a document may miss before the host
// is called stale.
const StaleAfter = 3

// HostDoc is one host's state as its agent last wrote it.
type HostDoc struct {
	SchemaVersion    int    `json:"schema_version"`
	App              string `json:"app"`
	Channel          string `json:"channel,omitempty"`
	InstanceID       string `json:"instance_id"`
	AvailabilityZone string `json:"availability_zone,omitempty"`
	Region           string `json:"region,omitempty"`
	AccountID        string `json:"account_id,omitempty"`
	AgentVersion     string `json:"agent_version"`
	// State is the agent's: idle, busy, needs_operator, starting, stopping.
	State string `json:"state"`
	// Status is the host's in one word: the newest operation's status, or
	// needs_operator when the agent needs a person; empty before any.
	Status string `json:"status,omitempty"`
	// Current and LastGood are the revisions the agent's journal points at.
	Current  *Revision `json:"current,omitempty"`
	LastGood *Revision `json:"last_good,omitempty"`
	// Operation is the newest operation, in flight or ended: the host's
	// last change.
	Operation *Operation `json:"operation,omitempty"`
	Health    *Health    `json:"health,omitempty"`
	// LastRollback is the newest rollback, automatic or by hand.
	LastRollback     *Rollback   `json:"last_rollback,omitempty"`
	NewestCheckpoint *Checkpoint `json:"newest_checkpoint,omitempty"`
	// HeartbeatSeconds is fleet.heartbeat: the document is rewritten at
	// least this often, so a reader can tell a stale one.
	HeartbeatSeconds int64     `json:"heartbeat_seconds"`
	UpdatedAt        time.Time `json:"updated_at"`
}

// Revision is an installed revision.
type Revision struct {
	Revision     string `json:"revision"`
	DeploymentID string `json:"deployment_id"`
	// Since is when it became current (its deployment ended).
	Since time.Time `json:"since"`
}

// Operation is a deployment, rollback, restore, guard or CodeDeploy
// deployment.
type Operation struct {
	DeploymentID string `json:"deployment_id"`
	Kind         string `json:"kind"`
	Revision     string `json:"revision"`
	Status       string `json:"status"`
	Trigger      string `json:"trigger,omitempty"`
	// CodeDeployID is CodeDeploy's deployment id of a codedeploy record.
	CodeDeployID string `json:"codedeploy_deployment_id,omitempty"`
	// At is its last change: when it ended, else started, else was queued.
	At    time.Time `json:"at"`
	Error string    `json:"error,omitempty"`
}

// Health is the last assessment.
type Health struct {
	Healthy    bool      `json:"healthy"`
	Reason     string    `json:"reason,omitempty"`
	AssessedAt time.Time `json:"assessed_at"`
	// Since is when the host became what Healthy says, as far as this
	// agent has seen (it starts over when the agent does).
	Since time.Time `json:"since"`
	// Checks is how many checks are configured; 0 means ValidateService
	// is the only check.
	Checks int `json:"checks"`
}

// Rollback is one rollback.
type Rollback struct {
	DeploymentID string    `json:"deployment_id"`
	At           time.Time `json:"at"`
	// Rung is the rung that made the host healthy (revision, volumes,
	// root); empty for a rollback by hand or one that did not.
	Rung   string `json:"rung,omitempty"`
	Reason string `json:"reason,omitempty"`
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	Status string `json:"status"`
}

// Checkpoint is the newest checkpoint.
type Checkpoint struct {
	ID        string    `json:"id"`
	State     string    `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	Kinds     []string  `json:"kinds,omitempty"`
	Reason    string    `json:"reason,omitempty"`
}

// Problem reports whether the host needs a look: an operation failed,
// was rolled back or needs an operator (agentctl fleet exits 1).
func (d *HostDoc) Problem() bool {
	switch d.Status {
	case "failed", "rolled_back", "needs_operator":
		return true
	}
	return d.State == "needs_operator"
}

// Heartbeat is the document's heartbeat interval.
func (d *HostDoc) Heartbeat() time.Duration { return time.Duration(d.HeartbeatSeconds) * time.Second }

// Stale reports whether the document missed StaleAfter heartbeats at now.
func (d *HostDoc) Stale(now time.Time) bool {
	hb := d.Heartbeat()
	if hb <= 0 {
		return true
	}
	return now.Sub(d.UpdatedAt) > StaleAfter*hb
}

// Encode returns the document as written: indented, newline-terminated.
func (d *HostDoc) Encode() []byte {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		// Strings, numbers, times and bools only: it cannot fail.
		panic(fmt.Sprintf("fleet: encode host document: %v", err))
	}
	return append(b, '\n')
}

// SameState reports whether two documents say the same thing, apart from
// when they were written: a heartbeat's business, not a change.
func SameState(a, b *HostDoc) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := *a, *b
	x.UpdatedAt, y.UpdatedAt = time.Time{}, time.Time{}
	return bytes.Equal(x.Encode(), y.Encode())
}

// ErrBadDoc is a host document that cannot be used.
var ErrBadDoc = errors.New("bad host document")

// Parse decodes and checks a host document.
func Parse(data []byte) (*HostDoc, error) {
	if len(data) > MaxDocBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadDoc, MaxDocBytes)
	}
	var d HostDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: not valid JSON: %w", ErrBadDoc, err)
	}
	switch {
	case d.SchemaVersion != DocSchema:
		return nil, fmt.Errorf("%w: schema_version %d, this agentctl reads %d", ErrBadDoc, d.SchemaVersion, DocSchema)
	case d.InstanceID == "":
		return nil, fmt.Errorf("%w: no instance_id", ErrBadDoc)
	case release.CheckName("app", d.App) != nil:
		return nil, fmt.Errorf("%w: %w", ErrBadDoc, release.CheckName("app", d.App))
	case d.UpdatedAt.IsZero():
		return nil, fmt.Errorf("%w: no updated_at", ErrBadDoc)
	}
	return &d, nil
}

// HostsKey is the prefix of the app's host documents.
func HostsKey(l release.Layout) string { return l.Prefix + HostsDir }

// Key is where the host document called name lives.
func Key(l release.Layout, name string) string { return HostsKey(l) + name + ".json" }

// Name is the document name of a host: the caller's aws:userid when it is
// an instance role session of this instance (ROLE-ID:INSTANCE-ID; IAM
// scopes the write to it with ${aws:userid}), else the instance id (an
// on-prem host with an IAM user's keys, say).
func Name(userID, instanceID string) string {
	if roleID, inst, ok := strings.Cut(userID, ":"); ok && inst == instanceID && roleID != "" && !strings.ContainsAny(roleID, "/ ") {
		return userID
	}
	return instanceID
}
