package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
)

// The story of the issue: v1 deploys and serves; v2 fails ValidateService
// and the agent rolls back to v1 by itself: exit 1, rolled_back, v1's
// files and service back.
func TestDeployWaitThenFailingRevisionRollsBack(t *testing.T) {
	h := newHost(t, "")
	h.start()
	port, _ := testbed.FreePort()
	app := testbed.WebApp{Dir: filepath.Join(h.dir, "srv", "web"), Run: filepath.Join(h.dir, "run"), Port: port}
	t.Cleanup(app.Stop)
	v1 := h.bundle("web-v1", app.Revision("v1", ""))
	v2 := h.bundle("web-v2", app.Revision("v2", "echo 'v2: health endpoint says 500' >&2; exit 1"))

	r := h.ctl("deploy", v1, "--wait")
	if r.code != 0 {
		t.Fatalf("deploy v1: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if got := httpGet(app.URL()); got != "v1" {
		t.Fatalf("v1 not serving: %q", got)
	}
	for _, s := range []string{"ok   Install", "ok   ValidateService", "left running: pids", "status: succeeded"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("--wait output (not a terminal: one line per step) lacks %q:\n%s", s, r.stdout)
		}
	}

	r = h.ctl("deploy", v2, "--wait")
	if r.code != 1 {
		t.Fatalf("deploy v2: exit %d, want 1\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, s := range []string{"FAIL ValidateService", "[rollback: revision] ValidateService", "ROLLED_BACK", "v2: health endpoint says 500"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("--wait output lacks %q:\n%s", s, r.stdout)
		}
	}
	if got := httpGet(app.URL()); got != "v1" {
		t.Errorf("after rollback the service answers %q, want v1", got)
	}
	if b, _ := os.ReadFile(filepath.Join(h.dir, "srv", "web", "version.txt")); string(b) != "v1\n" {
		t.Errorf("version.txt on disk = %q", b)
	}
	st := h.status()
	var list api.DeploymentList
	hist := h.ctlJSON(&list, "history")
	if len(list.Deployments) != 2 || list.Deployments[0].Status != api.StatusRolledBack || list.Deployments[1].Status != api.StatusSucceeded {
		t.Fatalf("history: %s", hist.stdout)
	}
	if st.Current == nil || st.Current.DeploymentID != list.Deployments[1].ID || st.Current.Revision != "web-v1" || st.State != api.StateIdle {
		t.Errorf("status current %+v state %s", st.Current, st.State)
	}
	if !strings.Contains(st.Summary, "web-v1") {
		t.Errorf("summary %q", st.Summary)
	}
	// The table and the hook logs.
	if r := h.ctl("history"); !strings.Contains(r.stdout, "rolled_back") || !strings.Contains(r.stdout, "rolled back to "+list.Deployments[1].ID) {
		t.Errorf("history table:\n%s", r.stdout)
	}
	v2id := list.Deployments[0].ID
	if r := h.ctl("logs", v2id, "--event", "ValidateService"); !strings.Contains(r.stdout, "v2: health endpoint says 500") || !strings.Contains(r.stdout, "LifecycleEvent - ValidateService") {
		t.Errorf("logs --event ValidateService:\n%s\n%s", r.stdout, r.stderr)
	}
	if r := h.ctl("logs", v2id); !strings.Contains(r.stdout, "==> revision-ApplicationStart.log <==") {
		t.Errorf("logs (all):\n%s", r.stdout)
	}
	if r := h.ctl("show", v2id); !strings.Contains(r.stdout, "RUNG revision: succeeded") || !strings.Contains(r.stdout, "ROLLED BACK TO") {
		t.Errorf("show:\n%s", r.stdout)
	}
	if r := h.ctl("show", "d-NOSUCH123"); r.code != 1 || !strings.Contains(r.stderr, "no deployment d-NOSUCH123") {
		t.Errorf("show unknown: %d %s", r.code, r.stderr)
	}
	// A manual rollback with nothing earlier than v1 on disk is refused clearly.
	if r := h.ctl("rollback"); r.code != 1 || !strings.Contains(r.stderr, "no revision to roll back to") {
		t.Errorf("rollback with nothing earlier: %d %s", r.code, r.stderr)
	}
}

func TestDeployFromDirectoryAndFromS3(t *testing.T) {
	h := newHost(t, "")
	h.start()
	out := filepath.Join(h.dir, "out")
	os.MkdirAll(out, 0o755)
	rev := revision.Revision{Dest: filepath.Join(h.dir, "srv", "app"), Files: map[string]revision.File{"v": {Content: "dir"}},
		Hooks: map[string]string{"AfterInstall": "env | grep ^BUNDLE_ > " + filepath.Join(out, "bundle-env") + " || true"}}
	src := filepath.Join(h.dir, "src")
	if err := rev.WriteDir(src); err != nil {
		t.Fatal(err)
	}
	if r := h.ctl("deploy", src, "--wait"); r.code != 0 {
		t.Fatalf("deploy dir: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(h.dir, "srv", "app", "v")); string(b) != "dir" {
		t.Errorf("dir deploy installed %q", b)
	}

	rev.Files["v"] = revision.File{Content: "s3"}
	p := h.bundle("from-s3", rev)
	bucket := fmt.Sprintf("releases-%d", time.Now().UnixNano())
	awscli(t, h.bed, nil, "s3api", "create-bucket", "--bucket", bucket)
	awscli(t, h.bed, nil, "s3api", "put-object", "--bucket", bucket, "--key", "shop/from-s3.tgz", "--body", p)
	if r := h.ctl("deploy", "s3://"+bucket+"/shop/from-s3.tgz", "--wait"); r.code != 0 {
		t.Fatalf("deploy s3: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(h.dir, "srv", "app", "v")); string(b) != "s3" {
		t.Errorf("s3 deploy installed %q", b)
	}
	env, _ := os.ReadFile(filepath.Join(out, "bundle-env"))
	for _, want := range []string{"BUNDLE_BUCKET=" + bucket, "BUNDLE_KEY=shop/from-s3.tgz", "BUNDLE_ETAG="} {
		if !strings.Contains(string(env), want) {
			t.Errorf("hook env lacks %s:\n%s", want, env)
		}
	}
	if r := h.ctl("deploy", "s3://"+bucket+"/nope.tgz", "--wait"); r.code != 1 {
		t.Errorf("missing S3 object: exit %d\n%s", r.code, r.stdout)
	}
	if r := h.ctl("deploy", filepath.Join(h.dir, "does-not-exist.tgz")); r.code != 1 || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("missing file: %d %s", r.code, r.stderr)
	}
}

// The inbox: a bundle dropped in it (copied as .part, then renamed) is
// deployed and moved to processed/; garbage and hostile bundles go to
// rejected/ with the reason beside them.
func TestInboxDeploysAndRejects(t *testing.T) {
	h := newHost(t, "")
	inbox := filepath.Join(h.dir, "inbox")
	h.writeConfig(fmt.Sprintf("sources: {inbox: %s}\n", inbox))
	h.start()
	h.waitFile(30*time.Second, filepath.Join(inbox, "processing")) // watched from then on
	dest := filepath.Join(h.dir, "srv", "inboxed")
	good := h.bundle("good-v1", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "inbox"}}})
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(inbox, "good-v1.tgz.part")
	if err := os.WriteFile(part, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// Garbage dropped after the .part: once the inbox has rejected it, it
	// has looked at the .part too (it was there first, and quiet as long).
	if err := os.WriteFile(filepath.Join(inbox, "notes.txt"), []byte("not a bundle"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.waitFile(30*time.Second, filepath.Join(inbox, "rejected", "notes.txt.reason"))
	// The .part is never taken: still there, nothing deployed. The rename
	// fails if the inbox took it since.
	if _, err := os.Stat(part); err != nil {
		t.Fatalf("the inbox took the .part: %v", err)
	}
	if list := h.history(); len(list) != 0 {
		t.Fatalf("deployed from the inbox before the bundle was complete: %+v", list)
	}
	if err := os.Rename(part, filepath.Join(inbox, "good-v1.tgz")); err != nil {
		t.Fatal(err)
	}
	// A zip-slip bundle, built entry by entry as an attacker would.
	evil := filepath.Join(h.dir, "evil.zip")
	if err := revision.WriteZip(evil, map[string]string{"appspec.yml": "version: 0.0\nos: linux\n", "../../pwned": "owned"}); err != nil {
		t.Fatal(err)
	}
	eb, err := os.ReadFile(evil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(inbox, ".evil.zip"), eb, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(inbox, ".evil.zip"), filepath.Join(inbox, "evil.zip")); err != nil {
		t.Fatal(err)
	}

	h.waitFile(30*time.Second, filepath.Join(inbox, "processed", "good-v1.tgz.reason"))
	h.waitFile(30*time.Second, filepath.Join(inbox, "rejected", "evil.zip.reason"))
	if v, _ := os.ReadFile(filepath.Join(dest, "v")); string(v) != "inbox" {
		t.Errorf("inbox bundle not deployed: %q", v)
	}
	reason, _ := os.ReadFile(filepath.Join(inbox, "processed", "good-v1.tgz.reason"))
	if !strings.Contains(string(reason), "ended succeeded") {
		t.Errorf("processed reason %q", reason)
	}
	reason, _ = os.ReadFile(filepath.Join(inbox, "rejected", "notes.txt.reason"))
	if !strings.Contains(string(reason), "not") {
		t.Errorf("garbage reason %q", reason)
	}
	reason, _ = os.ReadFile(filepath.Join(inbox, "rejected", "evil.zip.reason"))
	if !strings.Contains(string(reason), "..") {
		t.Errorf("hostile bundle reason should name the entry: %q", reason)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "pwned")); err == nil {
		t.Errorf("zip-slip from the inbox wrote outside staging")
	}
	for _, d := range h.history() {
		if d.Trigger != "inbox" {
			t.Errorf("deployment %s trigger %s", d.ID, d.Trigger)
		}
	}
}

// logs -f streams hook output as it is written and returns when the
// deployment ends.
func TestLogsFollowStreamsUntilTheEnd(t *testing.T) {
	h := newHost(t, "")
	h.start()
	p := h.bundle("slow", revision.Revision{Dest: filepath.Join(h.dir, "srv", "slow"), Files: map[string]revision.File{"v": {Content: "1"}},
		Hooks: map[string]string{"ApplicationStart": "for i in 1 2 3 4 5; do echo line-$i; sleep 0.3; done"}})
	r := h.ctl("deploy", p)
	id := strings.Fields(r.stdout)[1]
	r = h.ctl("logs", id, "-f")
	if r.code != 0 {
		t.Fatalf("logs -f: %d %s", r.code, r.stderr)
	}
	for i := 1; i <= 5; i++ {
		if !strings.Contains(r.stdout, fmt.Sprintf("line-%d", i)) {
			t.Errorf("logs -f lacks line-%d:\n%s", i, r.stdout)
		}
	}
	// It returned because the deployment ended, not before: the record
	// already says so.
	if d := h.deployment(id); d.Status != api.StatusSucceeded {
		t.Errorf("logs -f returned with the deployment %s, want it ended succeeded", d.Status)
	}
}
