package fleet

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// GateOptions are the conditions of `agentctl promote --after`.
type GateOptions struct {
	// After is the channel whose hosts must run Version.
	After   string
	Version string
	// MinHealthy is the share of After's hosts that must be ready, in
	// (0, 1].
	MinHealthy float64
	// Soak is how long each of them must have run Version, healthy.
	Soak time.Duration
	// Now is the gate's clock.
	Now time.Time
}

// Holdout is a host of the After channel that is not ready, and why.
type Holdout struct {
	InstanceID string `json:"instance_id"`
	Why        string `json:"why"`
}

// GateResult says whether the promotion may go ahead.
type GateResult struct {
	After   string `json:"after"`
	Version string `json:"version"`
	// Hosts of the After channel, how many are ready, and how many must be.
	Hosts int `json:"hosts"`
	Ready int `json:"ready"`
	Need  int `json:"need"`
	// Holdouts are the hosts that are not ready, each with why.
	Holdouts []Holdout `json:"holdouts"`
	OK       bool      `json:"ok"`
	// Soak is the time still to wait for enough hosts to have soaked, when
	// that is all that holds the promotion back (0 otherwise).
	SoakLeft time.Duration `json:"soak_left_ns,omitempty"`
}

// Why explains a refusal in one line.
func (g GateResult) Why() string {
	if g.Hosts == 0 {
		return fmt.Sprintf("channel %s has no hosts (no host document names it): nothing shows that %s works", g.After, g.Version)
	}
	return fmt.Sprintf("%d of %d host(s) of channel %s run %s healthy for the soak, %d needed", g.Ready, g.Hosts, g.After, g.Version, g.Need)
}

// Gate decides whether the hosts of o.After allow the promotion: each host
// counts when its document is fresh, it runs o.Version with nothing in
// flight, its status is not a problem, its last assessment is healthy,
// and it has run the version, healthy, for o.Soak.
func Gate(v *View, o GateOptions) GateResult {
	g := GateResult{After: o.After, Version: o.Version, Holdouts: []Holdout{}}
	var soaking []time.Duration
	for _, h := range v.Hosts {
		if h.Doc.Channel != o.After {
			continue
		}
		g.Hosts++
		why, left := holdBack(h, o)
		if why == "" {
			g.Ready++
			continue
		}
		if left > 0 {
			soaking = append(soaking, left)
		}
		g.Holdouts = append(g.Holdouts, Holdout{InstanceID: h.Doc.InstanceID, Why: why})
	}
	share := o.MinHealthy
	if share <= 0 || share > 1 {
		share = 1
	}
	g.Need = int(math.Ceil(share*float64(g.Hosts) - 1e-9))
	g.OK = g.Hosts > 0 && g.Ready >= g.Need
	if !g.OK && g.Hosts > 0 && g.Ready+len(soaking) >= g.Need {
		// Only the soak holds it back: say how long until enough have.
		sort.Slice(soaking, func(i, j int) bool { return soaking[i] < soaking[j] })
		g.SoakLeft = soaking[g.Need-g.Ready-1]
	}
	return g
}

// holdBack says why a host is not ready ("" when it is), and, when only
// the soak is missing, how long is left.
func holdBack(h Host, o GateOptions) (string, time.Duration) {
	d := h.Doc
	switch {
	case h.Stale:
		return fmt.Sprintf("stale: its agent last wrote %s ago (heartbeat %s)", round(h.Age), d.Heartbeat()), 0
	case d.Current == nil:
		return "runs no revision yet", 0
	case d.Current.Revision != o.Version:
		return fmt.Sprintf("runs %s, not %s", d.Current.Revision, o.Version), 0
	case d.Operation != nil && inFlight(d.Operation.Status):
		return fmt.Sprintf("%s %s of %s in progress (%s)", d.Operation.Kind, d.Operation.DeploymentID, d.Operation.Revision, d.Operation.Status), 0
	case d.Problem():
		return fmt.Sprintf("%s: %s", d.Status, firstLine(opError(d))), 0
	case d.Health == nil:
		return "not assessed yet", 0
	case !d.Health.Healthy:
		return "unhealthy: " + firstLine(d.Health.Reason), 0
	}
	since := d.Current.Since
	if d.Health.Since.After(since) {
		since = d.Health.Since
	}
	if ran := o.Now.Sub(since); ran < o.Soak {
		return fmt.Sprintf("healthy on %s for %s of the %s soak", o.Version, round(ran), o.Soak), o.Soak - ran
	}
	return "", 0
}

func inFlight(status string) bool {
	switch status {
	case "queued", "running", "rolling_back":
		return true
	}
	return false
}

func opError(d *HostDoc) string {
	if d.Operation != nil && d.Operation.Error != "" {
		return d.Operation.Error
	}
	return "see agentctl show on the host"
}

func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

func round(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	if d > time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}
