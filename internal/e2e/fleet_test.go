package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/fleet"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// fleetRig is a bucket of releases, a signing key and the agents of app
// demo on its channels, each with a health check that passes while its
// flag file exists.
type fleetRig struct {
	t      *testing.T
	bed    *testbed.Bed
	bins   testbed.Binaries
	bucket string
	key    string
	pub    string
}

func newFleetRig(t *testing.T, bucket string) *fleetRig {
	t.Helper()
	bed := peers.Get(t)
	bins := peers.Binaries(t)
	awscli(t, bed, nil, "s3api", "create-bucket", "--bucket", bucket)
	dir := t.TempDir()
	r := &fleetRig{t: t, bed: bed, bins: bins, bucket: bucket, key: filepath.Join(dir, "release.key"), pub: filepath.Join(dir, "release.pub")}
	mustWork(t, workstation(t, bed, bins, "keygen", "--secret-key", r.key, "--public-key", r.pub), "keygen")
	return r
}

// host starts an agent following channel; its check passes while the
// returned flag file exists (it does at first).
func (r *fleetRig) host(channel string) (*host, string) {
	r.t.Helper()
	flag := filepath.Join(r.t.TempDir(), "healthy")
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		r.t.Fatal(err)
	}
	check := fmt.Sprintf("    - {name: gate, command: {argv: [test, -f, %s], timeout: 5s}}", flag)
	h := newHost(r.t, fmt.Sprintf("sources: {channel: %q, poll_interval: 1s}\ntrust: {public_keys: [%q], require_signature: true}\ncheckpoint: {before_deploy: []}\n%s",
		"s3://"+r.bucket+"/demo/channels/"+channel+".json", r.pub, fastHealth(check, 0)))
	h.start()
	return h, flag
}

// push uploads a revision that installs nothing (the agents share this
// machine) and moves channel to it; failing makes ValidateService fail.
func (r *fleetRig) push(version, channel string, failing bool) {
	r.t.Helper()
	dir := filepath.Join(r.t.TempDir(), version)
	spec := "version: 0.0\nos: linux\n"
	raw := map[string]revision.File{"version.txt": {Content: version + "\n"}}
	if failing {
		spec += "hooks:\n  ValidateService:\n    - location: scripts/validate.sh\n"
		raw["scripts/validate.sh"] = revision.File{Content: "#!/bin/sh\necho " + version + " is broken >&2\nexit 1\n", Mode: 0o755}
	}
	if err := (revision.Revision{AppSpec: spec, Raw: raw}).WriteDir(dir); err != nil {
		r.t.Fatal(err)
	}
	mustWork(r.t, r.ctl("push", dir, "--bucket", r.bucket, "--app", "demo", "--version", version, "--channel", channel, "--sign-key", r.key), "push "+version)
}

func (r *fleetRig) ctl(args ...string) result {
	r.t.Helper()
	return workstation(r.t, r.bed, r.bins, args...)
}

// fleet is agentctl fleet -o json (whatever its exit status).
func (r *fleetRig) fleet(args ...string) (*fleet.View, int) {
	r.t.Helper()
	res := r.ctl(append([]string{"fleet", "--bucket", r.bucket, "--app", "demo", "-o", "json"}, args...)...)
	var v fleet.View
	if err := json.Unmarshal([]byte(res.stdout), &v); err != nil {
		r.t.Fatalf("agentctl fleet -o json (exit %d): %v\n%s%s", res.code, err, res.stdout, res.stderr)
	}
	return &v, res.code
}

// waitFleet waits until the fleet (of channel, or all) satisfies ok.
func (r *fleetRig) waitFleet(what, channel string, ok func(*fleet.View) error) *fleet.View {
	r.t.Helper()
	var v *fleet.View
	testutil.WaitFor(r.t, 90*time.Second, what, func() error {
		args := []string{}
		if channel != "" {
			args = append(args, "--channel", channel)
		}
		v, _ = r.fleet(args...)
		return ok(v)
	})
	return v
}

// hostOf is the line of instance id in v.
func hostOf(v *fleet.View, id string) *fleet.HostDoc {
	for _, h := range v.Hosts {
		if h.Doc.InstanceID == id {
			return h.Doc
		}
	}
	return nil
}

func runs(v *fleet.View, id, version string) error {
	d := hostOf(v, id)
	switch {
	case d == nil:
		return fmt.Errorf("no host %s in %+v", id, v.Hosts)
	case d.Current == nil || d.Current.Revision != version:
		return fmt.Errorf("%s runs %+v, not %s", id, d.Current, version)
	case d.Operation == nil || d.Operation.Status != "succeeded":
		return fmt.Errorf("%s: last operation %+v", id, d.Operation)
	}
	return nil
}

// Two agents on two instances, on channels canary and prod: agentctl
// fleet shows both with their versions; promote prod --after canary
// refuses while the canary host is unhealthy (naming it), and goes ahead
// once it has been healthy for the soak; a rollback on the canary makes
// agentctl fleet exit 1.
func TestFleetAndGatedPromotion(t *testing.T) {
	r := newFleetRig(t, "e2e-fleet")
	canary, canaryFlag := r.host("canary")
	prod, _ := r.host("prod")
	cid, pid := canary.inst.Doc.InstanceID, prod.inst.Doc.InstanceID

	r.push("v1", "canary", false)
	mustWork(t, r.ctl("promote", "--bucket", r.bucket, "--app", "demo", "--channel", "prod", "--version", "v1", "--sign-key", r.key), "promote prod v1")
	v := r.waitFleet("both hosts on v1", "", func(v *fleet.View) error {
		if err := runs(v, cid, "v1"); err != nil {
			return err
		}
		return runs(v, pid, "v1")
	})
	if d := hostOf(v, cid); d.Channel != "canary" || d.App != "demo" || d.Health == nil || !d.Health.Healthy || d.HeartbeatSeconds != 600 || d.AgentVersion == "" {
		t.Errorf("canary's document: %+v", d)
	}
	if len(v.Versions) != 1 || v.Versions[0].Version != "v1" || v.Versions[0].Hosts != 2 {
		t.Errorf("versions %+v", v.Versions)
	}
	text := r.ctl("fleet", "--bucket", r.bucket, "--app", "demo")
	if text.code != 0 || !strings.Contains(text.stdout, cid) || !strings.Contains(text.stdout, pid) || !strings.Contains(text.stdout, "v1       2") {
		t.Errorf("agentctl fleet: exit %d\n%s%s", text.code, text.stdout, text.stderr)
	}
	if c, _ := r.fleet("--channel", "canary"); len(c.Hosts) != 1 || c.Hosts[0].Doc.InstanceID != cid {
		t.Errorf("--channel canary: %+v", c.Hosts)
	}

	// v2 on the canary; then its health check fails (agentctl health
	// records the round on an idle host): the promotion is refused,
	// naming the host and why, and prod does not move.
	r.push("v2", "canary", false)
	r.waitFleet("the canary on v2", "canary", func(v *fleet.View) error { return runs(v, cid, "v2") })
	if err := os.Remove(canaryFlag); err != nil {
		t.Fatal(err)
	}
	if res := canary.ctl("health"); res.code != 1 {
		t.Fatalf("agentctl health on the unhealthy canary: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	r.waitFleet("the canary unhealthy", "canary", func(v *fleet.View) error {
		if d := hostOf(v, cid); d == nil || d.Health == nil || d.Health.Healthy {
			return fmt.Errorf("canary health %+v", d)
		}
		return nil
	})
	promote := func(soak string) result {
		return r.ctl("promote", "--bucket", r.bucket, "--app", "demo", "--channel", "prod", "--version", "v2", "--sign-key", r.key,
			"--after", "canary", "--min-healthy", "100%", "--soak", soak)
	}
	res := promote("2s")
	if res.code != 1 || !strings.Contains(res.stdout, "not promoting: 0 of 1 host(s) of channel canary") || !strings.Contains(res.stdout, cid+"  unhealthy") ||
		!strings.Contains(res.stdout, "gate") {
		t.Errorf("promote while the canary is unhealthy: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	var rel struct {
		Channels []struct{ Channel, Version string }
	}
	mustWork(t, r.ctl("releases", "--bucket", r.bucket, "--app", "demo", "-o", "json"), "releases")
	if err := json.Unmarshal([]byte(r.ctl("releases", "--bucket", r.bucket, "--app", "demo", "-o", "json").stdout), &rel); err != nil {
		t.Fatal(err)
	}
	for _, c := range rel.Channels {
		if c.Channel == "prod" && c.Version != "v1" {
			t.Errorf("a refused promotion moved prod to %s", c.Version)
		}
	}

	// Healthy again: a long soak still holds it back (saying how long the
	// canary has been healthy); a short one lets it through once passed.
	if err := os.WriteFile(canaryFlag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if res := canary.ctl("health"); res.code != 0 {
		t.Fatalf("agentctl health on the healthy canary: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	r.waitFleet("the canary healthy", "canary", func(v *fleet.View) error {
		if d := hostOf(v, cid); d == nil || d.Health == nil || !d.Health.Healthy {
			return fmt.Errorf("canary health %+v", d)
		}
		return nil
	})
	if res := promote("10m"); res.code != 1 || !strings.Contains(res.stdout, "of the 10m0s soak") || !strings.Contains(res.stdout, "the soak alone holds it back") {
		t.Errorf("promote with a 10m soak: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	testutil.WaitFor(t, 60*time.Second, "the promotion after a 2s soak", func() error {
		if res := promote("2s"); res.code != 0 {
			return fmt.Errorf("exit %d: %s%s", res.code, res.stdout, res.stderr)
		}
		return nil
	})
	v = r.waitFleet("both hosts on v2", "", func(v *fleet.View) error {
		if err := runs(v, cid, "v2"); err != nil {
			return err
		}
		return runs(v, pid, "v2")
	})
	if len(v.Versions) != 1 || v.Versions[0] != (fleet.Version{Version: "v2", Hosts: 2, Healthy: 2}) {
		t.Errorf("versions after the promotion: %+v", v.Versions)
	}

	// A broken v3 on the canary rolls back: agentctl fleet exits 1 and
	// says so; the canary runs v2 again.
	r.push("v3", "canary", true)
	v = r.waitFleet("the canary rolled back", "", func(v *fleet.View) error {
		d := hostOf(v, cid)
		if d == nil || d.Status != "rolled_back" || d.LastRollback == nil || d.LastRollback.Rung != "revision" {
			return fmt.Errorf("canary %+v", d)
		}
		return nil
	})
	if d := hostOf(v, cid); d.Current.Revision != "v2" || d.LastRollback.From != "v3" || d.LastRollback.To != "v2" {
		t.Errorf("canary after the rollback: current %+v, last rollback %+v", d.Current, d.LastRollback)
	}
	if _, code := r.fleet(); code != 1 {
		t.Errorf("agentctl fleet with a rolled back host: exit %d, want 1", code)
	}
	if text := r.ctl("fleet", "--bucket", r.bucket, "--app", "demo"); !strings.Contains(text.stdout, "ROLLED_BACK") {
		t.Errorf("agentctl fleet does not show the rollback:\n%s", text.stdout)
	}
	if _, code := r.fleet("--channel", "prod"); code != 0 {
		t.Errorf("agentctl fleet --channel prod (all well there): exit %d", code)
	}
}
