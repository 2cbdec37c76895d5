package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// crashHooks: every event of a revision runs this; when the test has
// armed the event (a file named arm-<event>-<revision>), the hook
// disarms it, says it started, and sleeps so the test can SIGKILL the
// agent in the middle of it.
func crashHooks(out string) map[string]string {
	h := map[string]string{}
	for _, ev := range []string{"ApplicationStop", "BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService"} {
		h[ev] = fmt.Sprintf(`arm=%[1]s/arm-$LIFECYCLE_EVENT-$ROLLBACK_AGENT_REVISION
if [ -f "$arm" ]; then rm -f "$arm"; echo $$ > %[1]s/started; sleep 20; fi`, out)
	}
	return h
}

func revisionFiles(version string, n int) map[string]testbed.File {
	files := map[string]testbed.File{"version": {Content: version}, "only-" + version: {Content: version}}
	for i := range n {
		files[fmt.Sprintf("bulk/%03d/f%05d", i%100, i)] = testbed.File{Content: fmt.Sprintf("%s %d", version, i)}
	}
	return files
}

// destTree lists what is installed: relative path → content.
func destTree(root string) map[string]string {
	out := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		b, _ := os.ReadFile(p)
		out[rel] = string(b)
		return nil
	})
	return out
}

func sameTree(got map[string]string, want map[string]testbed.File) string {
	var diffs []string
	for k, f := range want {
		if got[k] != f.Content {
			diffs = append(diffs, fmt.Sprintf("%s: %q want %q", k, got[k], f.Content))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, "extra "+k)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 5 {
		diffs = append(diffs[:5], fmt.Sprintf("... %d more", len(diffs)-5))
	}
	return strings.Join(diffs, "; ")
}

// The agent is SIGKILLed during each lifecycle event and during Install;
// after a restart every case ends succeeded or rolled_back, and the files
// on disk are exactly those of the revision the status reports.
func TestCrashDuringEachStepIsRecovered(t *testing.T) {
	cases := []struct{ step, armRevision string }{
		{"ApplicationStop", "v1"}, // v2's deployment runs v1's ApplicationStop
		{"BeforeInstall", "v2"},
		{"Install", ""},
		{"AfterInstall", "v2"},
		{"ApplicationStart", "v2"},
		{"ValidateService", "v2"},
	}
	var table []string
	for _, c := range cases {
		t.Run(c.step, func(t *testing.T) {
			h := newHost(t, "")
			out := filepath.Join(h.dir, "out")
			os.MkdirAll(out, 0o755)
			dest := filepath.Join(h.dir, "srv", "app")
			nv2 := 10
			if c.step == "Install" {
				nv2 = 20000 // long enough to be killed in the middle
			}
			v1files, v2files := revisionFiles("v1", 10), revisionFiles("v2", nv2)
			v1 := h.bundle("v1", testbed.Revision{Dest: dest, Files: v1files, Hooks: crashHooks(out)})
			v2 := h.bundle("v2", testbed.Revision{Dest: dest, Files: v2files, Hooks: crashHooks(out)})
			h.start()
			if r := h.ctl("deploy", v1, "--wait"); r.code != 0 {
				t.Fatalf("deploy v1: %s %s", r.stdout, r.stderr)
			}
			if c.armRevision != "" {
				os.WriteFile(filepath.Join(out, "arm-"+c.step+"-"+c.armRevision), nil, 0o644)
			}
			r := h.ctl("deploy", v2)
			if r.code != 0 {
				t.Fatalf("deploy v2: %s", r.stderr)
			}
			id := strings.Fields(r.stdout)[1]
			h.waitStep(id, c.step, out)
			h.agent.Kill()
			killHookGroup(out)

			h.start()
			d := h.waitEnd(id)
			got := destTree(dest)
			var diff string
			switch d.Status {
			case api.StatusRolledBack:
				diff = sameTree(got, v1files)
			case api.StatusSucceeded:
				diff = sameTree(got, v2files)
			default:
				t.Errorf("ended %s: %s", d.Status, d.Error)
			}
			if diff != "" {
				t.Errorf("status %s but files differ: %s", d.Status, diff)
			}
			interrupted := ""
			for _, s := range d.Steps {
				if strings.Contains(s.Error, "interrupted") {
					interrupted = s.Name
				}
			}
			if interrupted != c.step {
				t.Errorf("the journal says %q was interrupted, want %s", interrupted, c.step)
			}
			st := h.status()
			if (d.Status == api.StatusRolledBack && st.Current.Revision != "v1") || st.Operation != nil {
				t.Errorf("status after recovery: current %+v operation %+v", st.Current, st.Operation)
			}
			table = append(table, fmt.Sprintf("| SIGKILL during %-16s | %-11s | files = %s | %s |", c.step, d.Status, map[string]string{api.StatusRolledBack: "v1", api.StatusSucceeded: "v2"}[d.Status], okIf(diff == "")))
		})
	}
	t.Logf("crash matrix:\n| case | outcome | on disk | check |\n|---|---|---|---|\n%s", strings.Join(table, "\n"))
}

func okIf(b bool) string {
	if b {
		return "ok"
	}
	return "MISMATCH"
}

// waitStep waits until deployment id is in step (for hooks: until the
// armed hook says it started).
func (h *host) waitStep(id, step, out string) {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if step != "Install" {
			if _, err := os.Stat(filepath.Join(out, "started")); err == nil {
				return
			}
		} else if st := h.status(); st.Operation != nil && st.Operation.DeploymentID == id && st.Operation.Step == "Install" {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.t.Fatalf("deployment %s never reached %s", id, step)
}

// killHookGroup ends the sleeping hook the crash left behind (under
// systemd it would live on too, by design; here it would only waste time).
func killHookGroup(out string) {
	b, err := os.ReadFile(filepath.Join(out, "started"))
	if err != nil {
		return
	}
	var pid int
	fmt.Sscanf(string(b), "%d", &pid)
	if pid > 0 {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
}

func (h *host) waitEnd(id string) *api.Deployment {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		r := h.ctl("show", id, "-o", "json")
		var b api.DeploymentBody
		if json.Unmarshal([]byte(r.stdout), &b) == nil && api.Terminal(b.Deployment.Status) {
			return &b.Deployment
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("deployment %s did not end after the restart\n%s", id, h.agent.Output())
	return nil
}
