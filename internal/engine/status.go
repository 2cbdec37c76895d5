package engine

// The lifecycle of an operation (deployment, rollback, restore, guard).
// Only transition changes a record's status; it refuses anything this
// table does not list. docs/design.md draws the same diagram with what
// recovery does at each step.
//
//	                 Submit
//	                   │
//	                   ▼
//	  ┌───────────── queued ◀──────────────┐ recover: died before the
//	  │                │ worker picks it   │ host changed, start over
//	  │                ▼                   │
//	  │             running ───────────────┘
//	  │      ┌────────┼──────────┬──────────────┐
//	  │      │ ok     │ failed,  │ failed after │ restore or manual rollback
//	  │      │        │ host not │ the host     │ failed after the host
//	  │      ▼        │ changed  │ changed      │ changed
//	  │  succeeded    ▼          ▼              ▼
//	  │      │      failed   rolling_back   needs_operator
//	  │      │ unhealthy in    │  │  │              ▲
//	  │      │ watch window,   │  │  └──────────────┤ last allowed rung failed,
//	  │      │ or after boot   │  │                 │ climb limits reached
//	  │      └────────────────▶┘  ▼                 │
//	  │                       rolled_back           │
//	  │      succeeded ─── a rollback unhealthy in its window, or
//	  │                    automatic rollback off ──┘
//	  └─ (a root restore's record rebuilt from the instance tag after the
//	     reboot starts at running)

import (
	"fmt"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// transitions lists, for each status, the statuses it may become. The
// empty status is a record that does not exist yet.
func transitions() map[api.DeploymentStatus][]api.DeploymentStatus {
	return map[api.DeploymentStatus][]api.DeploymentStatus{
		// Submit, Rollback, Restore, Guard queue; a root restore whose
		// record the restored root's journal predates is rebuilt running.
		"":               {api.StatusQueued, api.StatusRunning},
		api.StatusQueued: {api.StatusRunning},
		api.StatusRunning: {
			api.StatusSucceeded,     // every step done, healthy
			api.StatusFailed,        // failed before the host changed, or automatic rollback off
			api.StatusRollingBack,   // failed after the host changed: the ladder
			api.StatusNeedsOperator, // a restore or a manual rollback failed half-way
			api.StatusQueued,        // recovery: the agent died before the host changed
		},
		api.StatusRollingBack: {
			api.StatusRolledBack,    // a rung made the host healthy
			api.StatusFailed,        // only the previous revision was started again (no checkpoint, nothing installed)
			api.StatusNeedsOperator, // the last allowed rung failed, or the climb limits
		},
		api.StatusSucceeded: {
			api.StatusRollingBack,   // unhealthy in its watch window or after a boot
			api.StatusNeedsOperator, // same, when it may not climb (a rollback, automatic off)
		},
		api.StatusFailed:        nil,
		api.StatusRolledBack:    nil,
		api.StatusNeedsOperator: nil,
	}
}

// Allowed reports whether a record may go from one status to another.
// Staying in the same status is always allowed (a resumed climb).
func Allowed(from, to api.DeploymentStatus) bool {
	if from == to && from != "" {
		return true
	}
	for _, s := range transitions()[from] {
		if s == to {
			return true
		}
	}
	return false
}

// errTransition is a transition the table does not allow: a bug, which
// the engine turns into needs_operator rather than carrying on.
type errTransition struct {
	id       string
	from, to api.DeploymentStatus
}

func (e errTransition) Error() string {
	return fmt.Sprintf("internal error: deployment %s may not go from %q to %q", e.id, e.from, e.to)
}
