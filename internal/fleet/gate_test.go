package fleet

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// host is a document of a host on channel that runs version since at,
// healthy since at, written at updated.
func host(id, channel, version string, at, updated time.Time) *HostDoc {
	return &HostDoc{
		SchemaVersion: DocSchema, App: "shop", Channel: channel, InstanceID: id, AgentVersion: "1.0.0", State: "idle",
		Status:           "succeeded",
		Current:          &Revision{Revision: version, DeploymentID: "d-" + id, Since: at},
		Operation:        &Operation{DeploymentID: "d-" + id, Kind: "deploy", Revision: version, Status: "succeeded", At: at},
		Health:           &Health{Healthy: true, Reason: "healthy", AssessedAt: updated, Since: at, Checks: 1},
		HeartbeatSeconds: 600, UpdatedAt: updated,
	}
}

func entries(docs ...*HostDoc) []Entry {
	var out []Entry
	for _, d := range docs {
		out = append(out, Entry{Key: "shop/hosts/" + d.InstanceID + ".json", Doc: d})
	}
	return out
}

// The soak is counted on an injected clock: a host that has run V
// healthy for 5 of 10 minutes holds the promotion back, saying how long
// is left; at 10 minutes it does not.
func TestGateWaitsForTheSoak(t *testing.T) {
	a := host("i-a", "canary", "v2", t0, t0.Add(5*time.Minute))
	o := GateOptions{After: "canary", Version: "v2", MinHealthy: 1, Soak: 10 * time.Minute, Now: t0.Add(5 * time.Minute)}
	g := Gate(NewView(entries(a), "canary", o.Now), o)
	if g.OK || g.Ready != 0 || len(g.Holdouts) != 1 || !strings.Contains(g.Holdouts[0].Why, "5m0s of the 10m0s soak") || g.SoakLeft != 5*time.Minute {
		t.Errorf("at 5 minutes: %+v", g)
	}
	o.Now = t0.Add(10 * time.Minute)
	a.UpdatedAt = o.Now
	if g := Gate(NewView(entries(a), "canary", o.Now), o); !g.OK || g.Ready != 1 || g.Need != 1 {
		t.Errorf("at 10 minutes: %+v", g)
	}
	// Healthy again only since minute 8 (it was unhealthy before): the
	// soak counts from then.
	a.Health.Since = t0.Add(8 * time.Minute)
	if g := Gate(NewView(entries(a), "canary", o.Now), o); g.OK || g.SoakLeft != 8*time.Minute {
		t.Errorf("healthy since minute 8: %+v", g)
	}
}

// Each reason a host is not ready is said, and --min-healthy lets a share
// of the hosts through.
func TestGateNamesWhatHoldsItBack(t *testing.T) {
	now := t0.Add(time.Hour)
	ok := host("i-ok", "canary", "v2", t0, now)
	old := host("i-old", "canary", "v1", t0, now)
	sick := host("i-sick", "canary", "v2", t0, now)
	sick.Health.Healthy, sick.Health.Reason = false, "unhealthy: check web failed 3 rounds: HTTP 500"
	busy := host("i-busy", "canary", "v2", t0, now)
	busy.Operation.Status, busy.Operation.DeploymentID = "running", "d-NEXT"
	stale := host("i-stale", "canary", "v2", t0, now.Add(-31*time.Minute))
	back := host("i-back", "canary", "v2", t0, now)
	back.Status, back.Operation.Status, back.Operation.Error = "rolled_back", "rolled_back", "ValidateService failed"
	prod := host("i-prod", "prod", "v1", t0, now)
	v := NewView(entries(ok, old, sick, busy, stale, back, prod), "canary", now)
	if len(v.Hosts) != 6 {
		t.Fatalf("the canary view has %d hosts", len(v.Hosts))
	}
	o := GateOptions{After: "canary", Version: "v2", MinHealthy: 1, Soak: 10 * time.Minute, Now: now}
	g := Gate(v, o)
	if g.OK || g.Ready != 1 || g.Hosts != 6 || g.Need != 6 {
		t.Errorf("gate %+v", g)
	}
	why := map[string]string{}
	for _, h := range g.Holdouts {
		why[h.InstanceID] = h.Why
	}
	for id, want := range map[string]string{"i-old": "runs v1, not v2", "i-sick": "unhealthy: check web failed", "i-busy": "in progress (running)",
		"i-stale": "stale: its agent last wrote 31m0s ago", "i-back": "rolled_back: ValidateService failed"} {
		if !strings.Contains(why[id], want) {
			t.Errorf("%s held back for %q, want %q", id, why[id], want)
		}
	}
	o.MinHealthy = 1.0 / 6
	if g := Gate(v, o); !g.OK || g.Need != 1 {
		t.Errorf("one in six needed: %+v", g)
	}
	if g := Gate(NewView(entries(prod), "canary", now), o); g.OK || !strings.Contains(g.Why(), "has no hosts") {
		t.Errorf("no canary hosts: %+v %s", g, g.Why())
	}
}

// The view: staleness, attention, one line per instance (the newest of
// two documents of one instance), a summary per version.
func TestViewSumsTheFleetUp(t *testing.T) {
	now := t0.Add(time.Hour)
	a := host("i-a", "prod", "v1", t0, now)
	b := host("i-b", "prod", "v2", t0, now)
	b.State, b.Status = "needs_operator", "needs_operator"
	c := host("i-c", "canary", "v2", t0, now.Add(-time.Hour))
	older := host("i-a", "prod", "v0", t0, now.Add(-time.Minute))
	es := append(entries(a, b, c, older), Entry{Key: "shop/hosts/junk.json", Problem: "bad host document: not valid JSON"})
	v := NewView(es, "", now)
	if len(v.Hosts) != 3 || v.Hosts[0].Doc.InstanceID != "i-c" || v.Hosts[1].Doc.Current.Revision != "v1" {
		t.Fatalf("hosts %+v", v.Hosts)
	}
	if !v.Hosts[0].Stale || v.Hosts[1].Stale || !v.Hosts[2].Attention || v.Hosts[1].Attention || !v.Attention() {
		t.Errorf("stale/attention wrong: %+v", v.Hosts)
	}
	if len(v.Versions) != 2 || v.Versions[0] != (Version{Version: "v2", Hosts: 2, Healthy: 1, Stale: 1}) || v.Versions[1] != (Version{Version: "v1", Hosts: 1, Healthy: 1}) {
		t.Errorf("versions %+v", v.Versions)
	}
	if len(v.Problems) != 1 {
		t.Errorf("problems %v", v.Problems)
	}
	if p := NewView(entries(a, c), "canary", now); len(p.Hosts) != 1 || p.Attention() {
		t.Errorf("canary only: %+v", p.Hosts)
	}
}

func TestNameAndParse(t *testing.T) {
	for _, c := range []struct{ user, inst, want string }{
		{"AROAEXAMPLE:i-0abc", "i-0abc", "AROAEXAMPLE:i-0abc"},
		{"AIDAEXAMPLE", "i-0abc", "i-0abc"},
		{"AROAEXAMPLE:i-0def", "i-0abc", "i-0abc"},
		{":i-0abc", "i-0abc", "i-0abc"},
	} {
		if got := Name(c.user, c.inst); got != c.want {
			t.Errorf("Name(%q, %q) = %q, want %q", c.user, c.inst, got, c.want)
		}
	}
	good := host("i-a", "prod", "v1", t0, t0)
	d, err := Parse(good.Encode())
	if err != nil || !SameState(d, good) {
		t.Fatalf("round trip: %v %+v", err, d)
	}
	later := *good
	later.UpdatedAt = t0.Add(time.Hour)
	if !SameState(good, &later) {
		t.Error("a heartbeat counts as a change")
	}
	later.State = "busy"
	if SameState(good, &later) {
		t.Error("a change of state is not seen")
	}
	for _, bad := range []string{`{`, `{"schema_version":2}`, `{"schema_version":1,"app":"shop","updated_at":"2026-01-01T00:00:00Z"}`,
		`{"schema_version":1,"app":"../x","instance_id":"i-1","updated_at":"2026-01-01T00:00:00Z"}`, strings.Repeat(" ", MaxDocBytes+1)} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrBadDoc) {
			t.Errorf("Parse(%.40q): %v", bad, err)
		}
	}
}
