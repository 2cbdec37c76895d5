// Package notify tells people what happened to a host's deployments:
// deployment succeeded, failed, rolled back (with the rung), needs an
// operator, a checkpoint failed, the assessment after a boot failed. One
// event, one JSON shape (modelled on CodeDeploy's own EventBridge events,
// "CodeDeploy Instance State-change Notification"), delivered to an SNS
// topic, an EventBridge bus and a local command. Delivery never blocks
// or fails a deployment: events wait in a bounded queue, each target is
// tried a bounded number of times, and what still fails is logged and
// counted.
package notify

import (
	"fmt"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// Type is what happened.
type Type string

// Event types.
const (
	DeploymentSucceeded  Type = "deployment_succeeded"
	DeploymentFailed     Type = "deployment_failed"
	RolledBack           Type = "rolled_back"
	NeedsOperator        Type = "needs_operator"
	CheckpointFailed     Type = "checkpoint_failed"
	BootAssessmentFailed Type = "boot_assessment_failed"
)

// State is the event's state in CodeDeploy's words where it has them
// (SUCCESS, FAILURE).
func (t Type) State() string {
	switch t {
	case DeploymentSucceeded:
		return "SUCCESS"
	case DeploymentFailed:
		return "FAILURE"
	case RolledBack:
		return "ROLLED_BACK"
	case NeedsOperator:
		return "NEEDS_OPERATOR"
	case CheckpointFailed:
		return "CHECKPOINT_FAILURE"
	case BootAssessmentFailed:
		return "BOOT_ASSESSMENT_FAILURE"
	}
	return strings.ToUpper(string(t))
}

// EventBridge names of the events: Source, and DetailType by what the
// event is about, as CodeDeploy names its own.
const (
	Source               = "rollback-agent"
	DetailTypeDeployment = "Rollback Agent Deployment State-change Notification"
	DetailTypeCheckpoint = "Rollback Agent Checkpoint State-change Notification"
)

// DetailType is the EventBridge detail-type of an event of this type.
func (t Type) DetailType() string {
	if t == CheckpointFailed {
		return DetailTypeCheckpoint
	}
	return DetailTypeDeployment
}

// maxReason bounds the reason carried: an error may hold a hook's output,
// and SNS and EventBridge take at most 256 KB.
const maxReason = 2048

// Event is the JSON every target gets: the SNS message, the EventBridge
// detail, the command's stdin. Field names are camelCase, as in
// CodeDeploy's event details.
type Event struct {
	// Version of this shape; fields may be added without a change.
	Version string    `json:"version"`
	Event   Type      `json:"event"`
	State   string    `json:"state"`
	Time    time.Time `json:"time"`
	// Where.
	Application      string `json:"application"`
	DeploymentGroup  string `json:"deploymentGroup,omitempty"`
	InstanceID       string `json:"instanceId"`
	Region           string `json:"region,omitempty"`
	Account          string `json:"account,omitempty"`
	AvailabilityZone string `json:"availabilityZone,omitempty"`
	AgentVersion     string `json:"agentVersion,omitempty"`
	// What.
	DeploymentID string `json:"deploymentId,omitempty"`
	Kind         string `json:"kind,omitempty"`
	Revision     string `json:"revision,omitempty"`
	Trigger      string `json:"trigger,omitempty"`
	Status       string `json:"status,omitempty"`
	// Rung is the rung that made the host healthy (rolled_back), or the
	// last one tried.
	Rung         string `json:"rung,omitempty"`
	RolledBackTo string `json:"rolledBackTo,omitempty"`
	Reason       string `json:"reason,omitempty"`
	CheckpointID string `json:"checkpointId,omitempty"`
	// CodeDeployDeploymentID is CodeDeploy's id of a codedeploy record.
	CodeDeployDeploymentID string `json:"codedeployDeploymentId,omitempty"`
}

// EventVersion is Event.Version.
const EventVersion = "1"

// Host is who sends the events.
type Host struct {
	Application, DeploymentGroup, AgentVersion string
	Identity                                   api.Identity
}

func (h Host) event(t Type, now time.Time) Event {
	return Event{
		Version: EventVersion, Event: t, State: t.State(), Time: now.UTC(),
		Application: h.Application, DeploymentGroup: h.DeploymentGroup, AgentVersion: h.AgentVersion,
		InstanceID: h.Identity.InstanceID, Region: h.Identity.Region, Account: h.Identity.AccountID,
		AvailabilityZone: h.Identity.AvailabilityZone,
	}
}

// InstanceARN is the EC2 instance the event is about, for EventBridge's
// resources.
func (e Event) InstanceARN() string {
	if e.InstanceID == "" || e.Region == "" || e.Account == "" {
		return ""
	}
	return fmt.Sprintf("arn:aws:ec2:%s:%s:instance/%s", e.Region, e.Account, e.InstanceID)
}

// Subject is a one-line summary (an SNS subject: at most 100 printable
// ASCII characters).
func (e Event) Subject() string {
	what := map[Type]string{
		DeploymentSucceeded: "deployment succeeded", DeploymentFailed: "deployment FAILED", RolledBack: "ROLLED BACK",
		NeedsOperator: "NEEDS OPERATOR", CheckpointFailed: "checkpoint FAILED", BootAssessmentFailed: "UNHEALTHY after boot",
	}[e.Event]
	s := fmt.Sprintf("rollback-agent: %s %s on %s: %s", e.Application, e.Revision, e.InstanceID, what)
	if e.Event == RolledBack && e.Rung != "" {
		s += " (" + e.Rung + " rung)"
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if len(b) > 100 {
		b = append(b[:99], '.')
	}
	return string(b)
}

// FromTransition is what a status change of a record means to people:
// none, one or two events. from is the status it left.
func FromTransition(h Host, d api.Deployment, from api.DeploymentStatus, now time.Time) []Event {
	if from == d.Status {
		// A resumed climb goes on in the same status: nothing new.
		return nil
	}
	ev := func(t Type) Event {
		e := h.event(t, now)
		e.DeploymentID, e.Kind, e.Revision, e.Trigger, e.Status = d.ID, string(d.Kind), d.Revision, d.Trigger, string(d.Status)
		e.CheckpointID, e.Reason = d.Checkpoint, clip(d.Error)
		if d.CodeDeploy != nil {
			e.CodeDeployDeploymentID = d.CodeDeploy.DeploymentID
		}
		return e
	}
	var out []Event
	if from == api.StatusSucceeded && d.Assessment == api.AssessmentBoot {
		out = append(out, ev(BootAssessmentFailed))
	}
	switch d.Status {
	case api.StatusSucceeded:
		out = append(out, ev(DeploymentSucceeded))
	case api.StatusFailed:
		if s := d.FailedStep(); s != nil && s.Name == "Checkpoint" {
			e := ev(CheckpointFailed)
			e.Reason = clip(s.Error)
			out = append(out, e)
		}
		out = append(out, ev(DeploymentFailed))
	case api.StatusRolledBack:
		e := ev(RolledBack)
		e.Rung, e.RolledBackTo = climbedRung(d), d.RolledBackTo
		out = append(out, e)
	case api.StatusNeedsOperator:
		e := ev(NeedsOperator)
		e.Rung = lastRung(d)
		out = append(out, e)
	}
	return out
}

// CheckpointFailure is a checkpoint that failed outside any operation (by
// hand, before a package transaction).
func CheckpointFailure(h Host, reason, label string, err error, now time.Time) Event {
	e := h.event(CheckpointFailed, now)
	e.Reason = clip(fmt.Sprintf("checkpoint (reason %s, label %q): %v", reason, label, err))
	return e
}

// climbedRung is the rung that made the host healthy.
func climbedRung(d api.Deployment) string {
	for i := len(d.Rungs) - 1; i >= 0; i-- {
		if d.Rungs[i].Status == api.StepSucceeded {
			return string(d.Rungs[i].Name)
		}
	}
	return lastRung(d)
}

func lastRung(d api.Deployment) string {
	if n := len(d.Rungs); n > 0 {
		return string(d.Rungs[n-1].Name)
	}
	return ""
}

func clip(s string) string {
	if len(s) <= maxReason {
		return s
	}
	return s[:maxReason] + "… (truncated; agentctl show has all of it)"
}
