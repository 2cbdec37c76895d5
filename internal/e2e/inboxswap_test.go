package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// asUser runs a shell script as uid/gid nobody: the dropper of these
// attacks, who may write the inbox but holds no key.
func asUser(t *testing.T, script string) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: asNobody}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as nobody: %s: %v\n%s", script, err, out)
	}
}

// historyOf is agentctl history as records.
func historyOf(h *host) []api.Deployment {
	h.t.Helper()
	var list api.DeploymentList
	if err := json.Unmarshal([]byte(h.ctl("history", "-o", "json").stdout), &list); err != nil {
		h.t.Fatalf("history: %v", err)
	}
	return list.Deployments
}

// Issue 17 item 5: a dropper who can write the inbox but holds no key
// must not get an unsigned bundle run. Each attack goes after the check a
// normal drop gets: the bundle in processing/ swapped while its
// deployment waits in the queue (processing/ itself replaced by the
// dropper's own directory), a bundle found in processing/ at start-up,
// and processing/ replaced by a link to a root-only directory.
func TestInboxDropperCannotSwapWhatWasVerified(t *testing.T) {
	h := newHost(t, "")
	s := newSigner(t, h)
	inbox := filepath.Join(h.dir, "inbox")
	if err := os.Mkdir(inbox, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(inbox, 0o777) // droppers may write it; it stays root's
	h.writeConfig(fmt.Sprintf("checkpoint: {before_deploy: [], required: false}\nboot: {assess: false}\nsources: {inbox: %s}\n", inbox) + s.trustConfig())
	h.start()
	dest := filepath.Join(h.dir, "srv", "app")
	marker := filepath.Join(h.dir, "evil-hook-ran")
	gate := filepath.Join(h.dir, "go")
	processing := filepath.Join(inbox, "processing")

	// A deployment that holds the engine until the gate opens, so the
	// dropped release waits in the queue.
	blocker := h.bundle("blocker", testbed.Revision{Dest: filepath.Join(h.dir, "srv", "blocker"), Files: map[string]testbed.File{"b": {Content: "b"}},
		Hooks: map[string]string{"ApplicationStart": fmt.Sprintf("while [ ! -e %s ]; do sleep 0.05; done", gate)}})
	if r := h.ctl("deploy", blocker, "--allow-unsigned"); r.code != 0 {
		t.Fatalf("deploy blocker: %d %s", r.code, r.stderr)
	}
	testutil.WaitFor(t, 60*time.Second, "the blocker's ApplicationStart", func() error {
		if op := h.status().Operation; op == nil || op.Step != "ApplicationStart" {
			return fmt.Errorf("operation %+v", op)
		}
		return nil
	})

	// The dropper drops a legitimately signed release.
	goodBytes, err := os.ReadFile(h.bundle("good", testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: "signed"}}}))
	if err != nil {
		t.Fatal(err)
	}
	stage := t.TempDir()
	os.Chmod(stage, 0o755)
	os.WriteFile(filepath.Join(stage, "app.tgz"), goodBytes, 0o644)
	s.sign(stage, "app.tgz.manifest.json", "app.tgz", "v1", goodBytes)
	evil := h.bundle("evil", testbed.Revision{Dest: dest, Files: map[string]testbed.File{"v": {Content: "evil"}},
		Hooks: map[string]string{"BeforeInstall": "touch " + marker}})
	os.Chmod(evil, 0o644)
	asUser(t, fmt.Sprintf("cp %s/app.tgz.manifest.json %s/app.tgz.manifest.json.minisig %s/ && cp %s/app.tgz %s/app.tgz.part && mv %s/app.tgz.part %s/app.tgz",
		stage, stage, inbox, stage, inbox, inbox, inbox))
	var queued api.Deployment
	testutil.WaitFor(t, 30*time.Second, "the signed drop queued from processing/", func() error {
		for _, d := range historyOf(h) {
			if d.Trigger == "inbox" && d.Status == api.StatusQueued {
				queued = d
				return nil
			}
		}
		return fmt.Errorf("no queued inbox deployment")
	})
	// The swap: the dropper renames processing/ away and makes their own,
	// holding their bundle under the same name.
	asUser(t, fmt.Sprintf("mv %s %s.orig && mkdir %s && cp %s %s/app.tgz", processing, processing, processing, evil, processing))
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d := h.waitEnd(queued.ID)
	if s := d.FailedStep(); d.Status != api.StatusFailed || s == nil || s.Name != "Fetch" || !strings.Contains(s.Error, "tampered or replaced") {
		t.Errorf("the swapped bundle: status %s, failed step %+v", d.Status, s)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the swapped-in unsigned bundle's hook ran as root")
	}
	// The agent says its processing/ was replaced, and touches nothing of it.
	testutil.WaitFor(t, 30*time.Second, "the inbox's warning about processing/", func() error {
		for _, w := range h.status().Warnings {
			if strings.Contains(w, "source inbox") && strings.Contains(w, "is not the agent's") {
				return nil
			}
		}
		return fmt.Errorf("warnings %q", h.status().Warnings)
	})
	if _, err := os.Stat(filepath.Join(processing, "app.tgz")); err != nil {
		t.Errorf("the agent moved the dropper's file: %v", err)
	}

	// Start-up reconcile: a bundle in processing/ without a deployment
	// (there after a crash, or put there) is checked as a drop is.
	h.agent.Stop()
	os.RemoveAll(processing)
	if err := os.Rename(processing+".orig", processing); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(evil)
	if err := os.WriteFile(filepath.Join(processing, "orphan.tgz"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	h.start()
	reason := filepath.Join(inbox, "rejected", "orphan.tgz.reason")
	testutil.WaitFor(t, 30*time.Second, "the orphan rejected", func() error {
		_, err := os.Stat(reason)
		return err
	})
	if why, _ := os.ReadFile(reason); !strings.Contains(string(why), "found in processing/ without a deployment and refused") || !strings.Contains(string(why), "trust.require_signature is true") {
		t.Errorf("orphan's reason: %s", why)
	}
	for _, d := range historyOf(h) {
		if strings.HasSuffix(d.Source.Location, "orphan.tgz") {
			t.Errorf("the orphan was queued: %s %s", d.ID, d.Status)
		}
	}

	// processing/ replaced by a link to a root-only directory: never
	// followed, nothing moved out of it.
	victim := filepath.Join(h.dir, "victim")
	os.Mkdir(victim, 0o700)
	os.WriteFile(filepath.Join(victim, "secret.tgz"), b, 0o600)
	h.agent.Stop()
	os.Rename(processing, processing+".old")
	asUser(t, fmt.Sprintf("ln -s %s %s", victim, processing))
	h.start()
	testutil.WaitFor(t, 30*time.Second, "the inbox's warning about the link", func() error {
		for _, w := range h.status().Warnings {
			if strings.Contains(w, "source inbox") && strings.Contains(w, "not a link") {
				return nil
			}
		}
		return fmt.Errorf("warnings %q", h.status().Warnings)
	})
	if _, err := os.Stat(filepath.Join(victim, "secret.tgz")); err != nil {
		t.Errorf("the agent moved a file out of the link's target: %v", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("an unsigned bundle's hook ran as root")
	}
}
