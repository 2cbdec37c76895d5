package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
)

// A root restore, end to end: the agent's state dir lives on the "root"
// volume (a loop device); the proxy replaces the root from the
// checkpoint's snapshot; the test plays the reboot (kill the agent, mount
// the new root where the old one was, start the agent); the agent
// finishes from the intent in the instance's tags, since the journal on
// the restored root predates the restore.
func TestRootRestoreFinishesFromTheIntentAfterTheReboot(t *testing.T) {
	h, root := rootHost(t, "")
	dest := filepath.Join(h.dir, "srv", "app")
	v1 := h.bundle("v1", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "1"}}})
	v2 := h.bundle("v2", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "2"}}})
	if r := h.ctl("deploy", v1, "--wait"); r.code != 0 {
		t.Fatalf("deploy v1: %s%s", r.stdout, r.stderr)
	}
	var cp api.CheckpointBody
	h.ctlJSON(&cp, "checkpoint", "create", "--wait", "--label", "before v2")
	if r := h.ctl("deploy", v2, "--wait"); r.code != 0 {
		t.Fatalf("deploy v2: %s%s", r.stdout, r.stderr)
	}

	reboot := playReboot(h, root)
	r := h.ctl("checkpoint", "restore", cp.Checkpoint.ID, "--root")
	if r.code != 0 {
		t.Fatalf("restore --root: %d %s", r.code, r.stderr)
	}
	opID := strings.Fields(r.stdout)[1]
	rr := reboot.wait()
	// The intent is in the instance's tags while the host "reboots".
	var tags struct{ Tags []struct{ Key, Value string } }
	awscli(t, h.bed, &tags, "ec2", "describe-tags", "--filters", "Name=resource-id,Values="+h.inst.Doc.InstanceID, "Name=key,Values="+checkpoint.TagRestoreIntent)
	if len(tags.Tags) != 1 || !strings.Contains(tags.Tags[0].Value, opID) {
		t.Fatalf("intent tag: %+v", tags)
	}

	h.start() // first start on the restored root
	d := h.waitEnd(opID)
	if d.Status != api.StatusSucceeded || d.Root == nil || d.Root.TaskState != checkpoint.TaskSucceeded {
		t.Fatalf("root restore ended %s (%+v): %s", d.Status, d.Root, d.Error)
	}
	if d.Root.TaskID != rr.TaskID {
		t.Errorf("task %s recorded, the proxy ran %s", d.Root.TaskID, rr.TaskID)
	}
	// The journal is the checkpoint's: it knows v1, not v2.
	st := h.status()
	if st.Current == nil || st.Current.Revision != "v1" {
		t.Errorf("after the root restore current = %+v, want v1 (the journal on the restored root)", st.Current)
	}
	var root2 string
	for _, v := range st.Identity.Volumes {
		if v.Root {
			root2 = v.VolumeID
		}
	}
	if root2 != rr.NewVolumeID {
		t.Errorf("status root volume %s, want the replacement %s", root2, rr.NewVolumeID)
	}
	tags.Tags = nil
	awscli(t, h.bed, &tags, "ec2", "describe-tags", "--filters", "Name=resource-id,Values="+h.inst.Doc.InstanceID, "Name=key,Values="+checkpoint.TagRestoreIntent)
	if len(tags.Tags) != 0 {
		t.Errorf("intent tag left behind: %+v", tags.Tags)
	}
	// The catalogue is rebuilt from AWS: it has the pre-restore checkpoint
	// the old journal never saw.
	h.waitFor(30*time.Second, fmt.Sprintf("the pre-restore checkpoint %q in the catalogue", d.Root.PreRestore), func() error {
		var l api.CheckpointList
		h.ctlJSON(&l, "checkpoint", "list")
		for _, c := range l.Checkpoints {
			if c.ID == d.Root.PreRestore && c.Reason == checkpoint.ReasonPreRestore {
				return nil
			}
		}
		return fmt.Errorf("catalogue %+v", l.Checkpoints)
	})
}

// rootHost is a host whose agent keeps its state dir on the "root"
// volume (a loop device mounted at root).
func rootHost(t *testing.T, extra string) (*host, string) {
	t.Helper()
	h := newHostWith(t, testbed.InstanceOptions{DataPlane: true}, "")
	root := filepath.Join(h.dir, "root")
	os.MkdirAll(root, 0o755)
	if err := h.inst.Mount(h.inst.RootVolumeID, root); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.inst.Unmount(root) })
	h.stateDir = filepath.Join(root, "var", "lib", "rollback-agent")
	h.writeConfig(extra)
	h.start()
	return h, root
}

// rebootPlay is the test's part of a root replacement: when the proxy
// replaces the root, the agent dies with the old root and the new one is
// mounted in its place, as a reboot would.
type rebootPlay struct {
	h        *host
	mu       sync.Mutex
	replaced *testbed.RootReplacement
	done     chan struct{}
}

func playReboot(h *host, root string) *rebootPlay {
	p := &rebootPlay{h: h, done: make(chan struct{})}
	h.bed.OnRootReplace(func(rr testbed.RootReplacement) {
		p.mu.Lock()
		p.replaced = &rr
		p.mu.Unlock()
		h.agent.Kill()
		if err := h.inst.Unmount(root); err != nil {
			h.t.Errorf("unmount the old root: %v", err)
		}
		if err := h.inst.Mount(rr.NewVolumeID, root); err != nil {
			h.t.Errorf("mount the new root: %v", err)
		}
		close(p.done)
	})
	h.t.Cleanup(func() { h.bed.OnRootReplace(nil) })
	return p
}

// wait returns the replacement once the "reboot" happened.
func (p *rebootPlay) wait() testbed.RootReplacement {
	p.h.t.Helper()
	select {
	case <-p.done:
	case <-time.After(90 * time.Second):
		p.h.t.Fatalf("the root was never replaced\n%s", p.h.agent.Output())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return *p.replaced
}

// The ladder's root rung: a deployment fails, the only rung is root, so
// the agent replaces the root volume from the deployment's own
// checkpoint; after the reboot it starts the revision found there,
// assesses it, and the deployment ends rolled_back with the root rung on
// record, the files those of the checkpoint.
func TestLadderRootRungRollsBackAcrossTheReboot(t *testing.T) {
	h, root := rootHost(t, "rollback: {ladder: [root]}\n")
	dest := filepath.Join(root, "srv", "app") // the app lives on the root too
	v1 := h.bundle("v1", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "1"}}})
	v2 := h.bundle("v2", revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: "2"}},
		Hooks: map[string]string{"ValidateService": "echo v2 is broken >&2; exit 1"}})
	if r := h.ctl("deploy", v1, "--wait"); r.code != 0 {
		t.Fatalf("deploy v1: %s%s", r.stdout, r.stderr)
	}
	v1id := lastDeployment(h).ID
	reboot := playReboot(h, root)
	r := h.ctl("deploy", v2, "-o", "json")
	var ref api.DeploymentRef
	if err := json.Unmarshal([]byte(r.stdout), &ref); err != nil || ref.ID == "" {
		t.Fatalf("deploy v2: %v %s %s", err, r.stdout, r.stderr)
	}
	reboot.wait()
	h.start() // first start on the restored root
	d := h.waitEnd(ref.ID)
	if d.Status != api.StatusRolledBack || d.RolledBackTo != v1id {
		t.Fatalf("v2 ended %s (rolled back to %q, want %s): %s", d.Status, d.RolledBackTo, v1id, d.Error)
	}
	var rung *api.Rung
	for i := range d.Rungs {
		if d.Rungs[i].Name == "root" {
			rung = &d.Rungs[i]
		}
	}
	if rung == nil || rung.Status != api.StepSucceeded {
		t.Errorf("root rung not on record as succeeded: %+v", d.Rungs)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "v")); string(b) != "1" {
		t.Errorf("files after the root rung: v=%q, want 1", b)
	}
	if st := h.status(); st.Current == nil || st.Current.DeploymentID != v1id {
		t.Errorf("current after the root rung = %+v, want %s", st.Current, v1id)
	}
}
