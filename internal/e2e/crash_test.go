package e2e

import (
	"context"
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
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
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

func revisionFiles(version string, n int) map[string]revision.File {
	files := map[string]revision.File{"version": {Content: version}, "only-" + version: {Content: version}}
	for i := range n {
		files[fmt.Sprintf("bulk/%03d/f%05d", i%100, i)] = revision.File{Content: fmt.Sprintf("%s %d", version, i)}
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

func sameTree(got map[string]string, want map[string]revision.File) string {
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

func okIf(b bool) string {
	if b {
		return "ok"
	}
	return "MISMATCH"
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

// SIGTERM while a hook ignores SIGTERM: the agent stops the hook's group
// (SIGKILL after the grace), exits 0 on its own within its bound, leaves
// no hook behind, and the next start finishes the deployment.
func TestGracefulStopWithAHookThatIgnoresSIGTERM(t *testing.T) {
	h := newHost(t, "")
	h.start()
	out := filepath.Join(h.dir, "out")
	os.MkdirAll(out, 0o755)
	dest := filepath.Join(h.dir, "srv", "app")
	flag := filepath.Join(out, "hang")
	v1 := h.bundle("v1", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "1"}}})
	v2 := h.bundle("v2", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "2"}}, Hooks: map[string]string{
		"BeforeInstall": fmt.Sprintf("if [ -f %s ]; then echo $$ > %s/pid; trap '' TERM; sleep 300; fi", flag, out),
	}})
	if r := h.ctl("deploy", v1, "--wait"); r.code != 0 {
		t.Fatalf("deploy v1: %s%s", r.stdout, r.stderr)
	}
	os.WriteFile(flag, nil, 0o644)
	r := h.ctl("deploy", v2)
	if r.code != 0 {
		t.Fatalf("deploy v2: %s", r.stderr)
	}
	id := strings.Fields(r.stdout)[1]
	var pid int
	h.waitFor(60*time.Second, "the hook to start and write its pid", func() error {
		b, err := os.ReadFile(filepath.Join(out, "pid"))
		if err != nil {
			return err
		}
		if _, err := fmt.Sscan(string(b), &pid); err != nil {
			return fmt.Errorf("pid file %q: %w", b, err) // written but not yet flushed
		}
		return nil
	})

	h.agent.Signal(syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	code, err := h.agent.Wait(ctx)
	if err != nil || code != 0 {
		h.agent.Kill()
		t.Fatalf("the agent did not stop on its own (exit %d, %v)\n%s", code, err, h.agent.Output())
	}
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		syscall.Kill(-pid, syscall.SIGKILL)
		t.Errorf("the hook (pid %d) outlived the agent: %v", pid, err)
	}

	os.Remove(flag)
	h.start()
	d := h.waitEnd(id)
	if d.Status != api.StatusRolledBack && d.Status != api.StatusSucceeded {
		t.Fatalf("after the restart the deployment ended %s: %s", d.Status, d.Error)
	}
	want := map[api.DeploymentStatus]string{api.StatusRolledBack: "1", api.StatusSucceeded: "2"}[d.Status]
	if b, _ := os.ReadFile(filepath.Join(dest, "v")); string(b) != want {
		t.Errorf("%s but v=%q", d.Status, b)
	}
}
