package checkpoint

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// Need is what a restore needs of a checkpoint: the data volumes rung
// needs the snapshots of the data volumes, the root rung the root
// snapshot (or, without one, the AMI). A volumes rung never waits for an
// AMI, which can take a day (docs/design.md).
type Need int

// Needs.
const (
	NeedData Need = iota
	NeedRoot
)

func (n Need) String() string {
	if n == NeedRoot {
		return "root"
	}
	return "data volumes"
}

// ErrUnrestorable is a checkpoint that failed, or lacks what is needed.
var ErrUnrestorable = errors.New("cannot be restored")

// Readiness says whether c can be restored for need: ready, or pending
// on what waiting names (with its progress), or unrestorable (an error
// wrapping ErrUnrestorable).
func Readiness(c *api.Checkpoint, need Need) (ready bool, waiting string, err error) {
	var parts []string
	switch need {
	case NeedData:
		n := 0
		for _, s := range c.Snapshots {
			if s.Root {
				continue
			}
			n++
			switch s.State {
			case api.CheckpointError:
				return false, "", fmt.Errorf("checkpoint %s: snapshot %s of %s failed: it %w", c.ID, s.SnapshotID, s.DeviceName, ErrUnrestorable)
			case api.CheckpointCompleted:
			default:
				parts = append(parts, fmt.Sprintf("snapshot %s of %s is %s (%s)", s.SnapshotID, s.DeviceName, s.State, orUnknown(s.Progress)))
			}
		}
		if n == 0 {
			return false, "", fmt.Errorf("checkpoint %s has no data volume snapshot: it %w by the volumes rung", c.ID, ErrUnrestorable)
		}
	case NeedRoot:
		for _, s := range c.Snapshots {
			if !s.Root {
				continue
			}
			switch s.State {
			case api.CheckpointCompleted:
				return true, "", nil
			case api.CheckpointError:
				if c.Image == nil {
					return false, "", fmt.Errorf("checkpoint %s: root snapshot %s failed: it %w", c.ID, s.SnapshotID, ErrUnrestorable)
				}
			default:
				return false, fmt.Sprintf("root snapshot %s is %s (%s)", s.SnapshotID, s.State, orUnknown(s.Progress)), nil
			}
		}
		if c.Image == nil {
			return false, "", fmt.Errorf("checkpoint %s has neither a root volume snapshot nor an AMI: it %w by the root rung", c.ID, ErrUnrestorable)
		}
		switch c.Image.State {
		case api.CheckpointCompleted:
			return true, "", nil
		case api.CheckpointError:
			return false, "", fmt.Errorf("checkpoint %s: image %s failed: it %w", c.ID, c.Image.ImageID, ErrUnrestorable)
		}
		parts = append(parts, fmt.Sprintf("image %s is %s", c.Image.ImageID, c.Image.State))
	}
	if len(parts) == 0 {
		return true, "", nil
	}
	return false, strings.Join(parts, ", "), nil
}

func orUnknown(p string) string {
	if p == "" {
		return "progress unknown"
	}
	return p
}

// Estimate is a rough time left for a pending checkpoint, from how far
// its least advanced snapshot got since it was created; 0 when there is
// no telling (no progress yet). EBS reports progress unevenly, so it is
// a hint for the operator, never a reason to act.
func Estimate(c *api.Checkpoint, now time.Time) time.Duration {
	p, err := strconv.Atoi(strings.TrimSuffix(c.Progress, "%"))
	elapsed := now.Sub(c.CreatedAt)
	if err != nil || p <= 0 || p >= 100 || elapsed <= 0 {
		return 0
	}
	return time.Duration(float64(elapsed) * float64(100-p) / float64(p)).Round(time.Second)
}
