package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// The story: an agent watching a channel deploys v1 (an appspec
// written by push) and v2 (its own appspec) as they are pushed, goes back
// to v1 when the channel is promoted back, and refuses, with a clear
// status and the running revision untouched, a manifest signed with an
// unknown key, a tampered bundle, a replayed older channel and another
// app's manifest. With nothing new, a poll is one conditional GET that
// transfers no body; an S3 outage keeps the revision and says so.
func TestChannelEndToEnd(t *testing.T) {
	r := newReleaseRig(t, "e2e-releases")
	push := func(dir, version string, extra ...string) result {
		args := append([]string{"push", dir, "--bucket", r.bucket, "--app", "demo", "--version", version, "--sign-key", r.key, "--destination", r.app.Dir}, extra...)
		return r.ctl(args...)
	}
	res := push(r.generatedDir("v1"), "v1", "--channel", "prod")
	mustWork(t, res, "push v1")
	if !strings.Contains(res.stdout, "no appspec.yml") || !strings.Contains(res.stdout, "channel prod now at v1 (sequence 1)") {
		t.Errorf("push v1 output:\n%s", res.stdout)
	}
	st := r.waitServing("v1")
	if st.Current.Digest == "" {
		t.Errorf("status %+v", st.Current)
	}
	if src := st.Sources["channel"]; !src.Enabled || src.LastSeen.IsZero() || !strings.Contains(src.Detail, "version v1") {
		t.Errorf("status sources: %+v", st.Sources)
	}
	if out := r.h.ctl("status").stdout; !strings.Contains(out, "SOURCE CHANNEL") || !strings.Contains(out, r.channel) {
		t.Errorf("agentctl status has no channel line:\n%s", out)
	}
	mustWork(t, push(r.ownDir("v2"), "v2", "--channel", "prod"), "push v2")
	r.waitServing("v2")
	seq2Doc, seq2Sig := r.get("demo/channels/prod.json"), r.get("demo/channels/prod.json.minisig")

	res = r.ctl("promote", "--bucket", r.bucket, "--app", "demo", "--channel", "prod", "--version", "v1", "--sign-key", r.key)
	mustWork(t, res, "promote v1")
	if !strings.Contains(res.stdout, "now at v1 (sequence 3)") {
		t.Errorf("promote output: %s", res.stdout)
	}
	r.waitServing("v1")
	hist := r.history()
	if len(hist) != 3 {
		t.Fatalf("history: %+v", hist)
	}
	for i, want := range []string{"v1", "v2", "v1"} {
		d := hist[len(hist)-1-i]
		if d.Revision != want || d.Trigger != "channel" || d.Status != api.StatusSucceeded {
			t.Errorf("deployment %d: %s %s %s %s", i, d.Revision, d.Trigger, d.Status, d.Error)
		}
	}
	rel := r.ctl("releases", "--bucket", r.bucket, "--app", "demo", "-o", "json")
	var listing struct {
		Releases []struct{ Version string }
		Channels []release.ChannelDoc
	}
	if err := json.Unmarshal([]byte(rel.stdout), &listing); err != nil || len(listing.Releases) != 2 ||
		len(listing.Channels) != 1 || listing.Channels[0].Version != "v1" || listing.Channels[0].Sequence != 3 {
		t.Errorf("releases: %v\n%s", err, rel.stdout)
	}
	if table := r.ctl("releases", "--bucket", r.bucket, "--app", "demo").stdout; !strings.Contains(table, "CHANNEL") || !strings.Contains(table, "prod") {
		t.Errorf("releases table:\n%s", table)
	}

	// Poll cost, idle: every S3 request is the conditional GET of the
	// channel, answered 304 with no body, and there is about one per
	// interval (1s, jittered ±20%: never more than one per 0.8s). The
	// watcher is idle once a poll was answered 304; from then on the
	// window is as long as the polls take to come, four of them.
	r.wire.reset()
	r.h.waitFor(30*time.Second, "an idle poll (304) of the channel", func() error {
		if !slices.ContainsFunc(r.wire.snapshot(), func(s s3Seen) bool { return s.status == http.StatusNotModified }) {
			return fmt.Errorf("S3 requests %+v", r.wire.snapshot())
		}
		return nil
	})
	r.bed.AWS.ResetCounts()
	r.wire.reset()
	start := time.Now()
	r.h.waitFor(30*time.Second, "four idle polls", func() error {
		if n := len(r.wire.snapshot()); n < 4 {
			return fmt.Errorf("%d S3 requests", n)
		}
		return nil
	})
	seen := r.wire.reset()
	elapsed := time.Since(start)
	if float64(len(seen)) > elapsed.Seconds()/0.8+1 {
		t.Errorf("%d S3 requests in %s idle, want about one a second", len(seen), elapsed)
	}
	for _, s := range seen {
		if s.method != "GET" || s.path != "/e2e-releases/demo/channels/prod.json" || s.status != http.StatusNotModified || s.body != 0 {
			t.Errorf("idle S3 request %+v, want GET of the channel answered 304 without a body", s)
		}
	}
	if gets := r.bed.AWS.Count("s3", "GET object"); gets < len(seen) || gets > len(seen)+1 {
		t.Errorf("the bed's proxy counted %d GETs, the recorder %d", gets, len(seen))
	}

	untouched := func(what string) {
		t.Helper()
		st := r.h.status()
		if st.Current == nil || st.Current.Revision != "v1" || httpGet(r.app.URL()) != "v1" {
			t.Errorf("%s: the running revision changed: %+v", what, st.Current)
		}
		if n := len(r.history()); n != 3 {
			t.Errorf("%s: %d deployments, want 3 (nothing new)", what, n)
		}
	}

	// 1. A manifest signed with a key the agents do not trust.
	strangerKey := filepath.Join(t.TempDir(), "stranger.key")
	mustWork(t, r.ctl("keygen", "--secret-key", strangerKey, "--public-key", strangerKey+".pub"), "keygen stranger")
	mustWork(t, r.ctl("push", r.generatedDir("v3"), "--bucket", r.bucket, "--app", "demo", "--version", "v3", "--sign-key", strangerKey, "--channel", "prod", "--destination", r.app.Dir), "push v3")
	w := r.waitWarning("which is not in trust.public_keys")
	if !strings.Contains(w, "refused channel "+r.channel+" sequence 4 (version v3)") {
		t.Errorf("warning: %s", w)
	}
	untouched("unknown key")

	// 2. A tampered bundle: signed manifest, bytes swapped afterwards.
	mustWork(t, push(r.generatedDir("v4"), "v4"), "push v4")
	// Same size, one byte changed: the digest is what catches it.
	tampered := r.get("demo/revisions/v4/bundle.tar.gz")
	tampered[len(tampered)/2] ^= 0xff
	r.put("demo/revisions/v4/bundle.tar.gz", tampered)
	mustWork(t, r.ctl("promote", "--bucket", r.bucket, "--app", "demo", "--channel", "prod", "--version", "v4", "--sign-key", r.key), "promote v4")
	w = r.waitWarning("(tampered or replaced)")
	if !strings.Contains(w, "bundle s3://e2e-releases/demo/revisions/v4/bundle.tar.gz has sha256") {
		t.Errorf("warning: %s", w)
	}
	untouched("tampered bundle")

	// 3. A replayed older channel: sequence 2's document and signature.
	r.put("demo/channels/prod.json.minisig", seq2Sig)
	r.put("demo/channels/prod.json", seq2Doc)
	w = r.waitWarning("the sequence went backwards")
	if !strings.Contains(w, "sequence 2 (version v2)") || !strings.Contains(w, "already applied sequence 3 (version v1)") {
		t.Errorf("warning: %s", w)
	}
	untouched("replay")

	// 4. Another app's manifest under this app's channel.
	mustWork(t, r.ctl("push", r.generatedDir("b1"), "--bucket", r.bucket, "--app", "billing", "--version", "b1", "--sign-key", r.key), "push billing")
	for _, k := range []string{"bundle.tar.gz", "manifest.json", "manifest.json.minisig"} {
		r.put("demo/revisions/b1/"+k, r.get("billing/revisions/b1/"+k))
	}
	if res := r.ctl("promote", "--bucket", r.bucket, "--app", "demo", "--channel", "prod", "--version", "b1"); res.code == 0 || !strings.Contains(res.stderr, "is of app billing") {
		t.Errorf("promote refused another app's manifest? exit %d %s", res.code, res.stderr)
	}
	r.pointAt(10, "b1")
	r.waitWarning(`is for app "billing", this agent deploys "demo"`)
	untouched("another app")

	// An S3 outage: the revision stays, status says so, and it ends.
	remove := r.bed.AWS.AddFault(testbed.Fault{Service: "s3", Kind: testbed.FaultServerError})
	w = r.waitWarning("InternalError")
	if !strings.Contains(w, "GET s3://e2e-releases/demo/channels/prod.json") {
		t.Errorf("outage warning: %s", w)
	}
	untouched("outage")
	remove()

	// A good release after all that is deployed, and the warning goes.
	mustWork(t, push(r.ownDir("v5"), "v5"), "push v5")
	r.pointAt(11, "v5")
	r.waitServing("v5")
	r.h.waitFor(30*time.Second, "the channel warning to go after a good release", func() error {
		if ws := r.h.status().Warnings; strings.Contains(strings.Join(ws, "\n"), "source channel") {
			return fmt.Errorf("warnings after a good release: %v", ws)
		}
		return nil
	})

	// A restart does not deploy the applied release again. The restarted
	// watcher's first poll decides it (a deployment is queued inside the
	// poll, before its outcome reaches status as last_seen): once status
	// shows a poll, the history must be as it was.
	r.h.agent.Stop()
	r.h.start("AWS_ENDPOINT_URL=" + r.wire.URL)
	r.h.waitFor(30*time.Second, "the restarted watcher's first poll", func() error {
		if src := r.h.status().Sources["channel"]; src.LastSeen.IsZero() {
			return fmt.Errorf("channel source %+v", src)
		}
		return nil
	})
	if n := len(r.history()); n != 4 {
		t.Errorf("%d deployments after a restart, want 4", n)
	}
}

// The CodeDeploy example of docs/codedeploy, run through our own engine
// in CodeDeploy's place: its BeforeInstall hook takes a checkpoint
// labelled with the deployment id through the real agentctl and the real
// agent, and its ValidateService hook is the agent's health gate, which
// fails the deployment when a check fails.
func TestCodeDeployHookAppSpec(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "healthy")
	check := fmt.Sprintf("    - {name: gate, command: {argv: [/bin/sh, -c, 'test -f %s'], timeout: 5s}}", flag)
	h := newHost(t, "checkpoint: {before_deploy: []}\n"+fastHealth(check, time.Second))
	// The hooks find agentctl on PATH and this agent's socket, as they
	// would find /usr/bin/agentctl and the default socket on a host.
	h.start("PATH="+h.bins.Dir+":"+os.Getenv("PATH"), "ROLLBACK_AGENT_SOCKET="+h.socket)
	root, err := testbed.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	rev := filepath.Join(h.dir, "codedeploy-rev")
	if out, err := exec.Command("cp", "-a", filepath.Join(root, "docs", "codedeploy"), rev).CombinedOutput(); err != nil {
		t.Fatalf("copy the example: %v %s", err, out)
	}
	spec, _ := os.ReadFile(filepath.Join(rev, "appspec.yml"))
	dest := filepath.Join(h.dir, "opt", "example-app")
	if !bytes.Contains(spec, []byte("destination: /opt/example-app")) {
		t.Fatalf("the example's destination changed; update this test:\n%s", spec)
	}
	os.WriteFile(filepath.Join(rev, "appspec.yml"), bytes.ReplaceAll(spec, []byte("/opt/example-app"), []byte(dest)), 0o644)

	os.WriteFile(flag, nil, 0o644)
	r := h.ctl("deploy", rev, "--wait")
	if r.code != 0 {
		t.Fatalf("deploy: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	d := lastDeployment(h)
	var list api.CheckpointList
	h.ctlJSON(&list, "checkpoint", "list")
	if len(list.Checkpoints) != 1 || list.Checkpoints[0].Label != d.ID || list.Checkpoints[0].Reason != "manual" {
		t.Errorf("checkpoints after the deploy: %+v (want one labelled %s, taken by the hook)", list.Checkpoints, d.ID)
	}
	if logs := h.ctl("logs", d.ID, "--event", "BeforeInstall").stdout; !strings.Contains(logs, "checkpoint "+list.Checkpoints[0].ID+" taken") {
		t.Errorf("BeforeInstall log:\n%s", logs)
	}
	if logs := h.ctl("logs", d.ID, "--event", "ValidateService").stdout; !strings.Contains(logs, "gate") {
		t.Errorf("ValidateService log:\n%s", logs)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "index.html")); !strings.Contains(string(b), "example app") {
		t.Errorf("app not installed: %q", b)
	}

	// The gate closes: ValidateService fails, the deployment fails.
	os.Remove(flag)
	os.WriteFile(filepath.Join(rev, "app", "index.html"), []byte("v2\n"), 0o644)
	r = h.ctl("deploy", rev, "--wait")
	if r.code != 1 || !strings.Contains(r.stdout, "FAIL ValidateService") {
		t.Errorf("deploy with a failing gate: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	d2 := lastDeployment(h)
	if logs := h.ctl("logs", d2.ID, "--event", "ValidateService").stdout; !strings.Contains(logs, "gate") {
		t.Errorf("ValidateService log of the failed deployment:\n%s", logs)
	}
}

// agentctl push --codedeploy-app ... --alarm ... --alarm ...: the flags
// reach CreateDeployment (read back with awscli from moto's CodeDeploy).
func TestPushCodeDeployFlags(t *testing.T) {
	bed := peers.Get(t)
	bins := peers.Binaries(t)
	awscli(t, bed, nil, "s3api", "create-bucket", "--bucket", "e2e-codedeploy")
	awscli(t, bed, nil, "deploy", "create-application", "--application-name", "example-app")
	awscli(t, bed, nil, "deploy", "create-deployment-group", "--application-name", "example-app", "--deployment-group-name", "production",
		"--service-role-arn", "arn:aws:iam::123456789012:role/codedeploy")
	root, _ := testbed.RepoRoot()
	res := workstation(t, bed, bins, "push", filepath.Join(root, "docs", "codedeploy"), "--bucket", "e2e-codedeploy", "--app", "example-app",
		"--version", "2026.11.25-1", "--codedeploy-app", "example-app", "--deployment-group", "production",
		"--alarm", "example-app-5xx", "--alarm", "example-app-latency", "-o", "json")
	mustWork(t, res, "push to CodeDeploy")
	var out struct {
		CodeDeploy struct {
			DeploymentID string `json:"deployment_id"`
		} `json:"codedeploy"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil || out.CodeDeploy.DeploymentID == "" {
		t.Fatalf("push output %v:\n%s", err, res.stdout)
	}
	var got struct {
		DeploymentInfo struct {
			AutoRollbackConfiguration struct {
				Enabled bool
				Events  []string
			}
			OverrideAlarmConfiguration struct {
				Enabled bool
				Alarms  []struct{ Name string }
			}
		}
	}
	awscli(t, bed, &got, "deploy", "get-deployment", "--deployment-id", out.CodeDeploy.DeploymentID)
	d := got.DeploymentInfo
	if !d.AutoRollbackConfiguration.Enabled || strings.Join(d.AutoRollbackConfiguration.Events, ",") != "DEPLOYMENT_FAILURE,DEPLOYMENT_STOP_ON_ALARM" {
		t.Errorf("auto rollback %+v", d.AutoRollbackConfiguration)
	}
	if a := d.OverrideAlarmConfiguration; !a.Enabled || len(a.Alarms) != 2 || a.Alarms[0].Name != "example-app-5xx" || a.Alarms[1].Name != "example-app-latency" {
		t.Errorf("alarms %+v", a)
	}
	if r := workstation(t, bed, bins, "push", filepath.Join(root, "docs", "codedeploy"), "--bucket", "e2e-codedeploy", "--app", "example-app",
		"--version", "x", "--alarm", "a"); r.code != 2 {
		t.Errorf("--alarm without --codedeploy-app: exit %d %s", r.code, r.stderr)
	}
}
