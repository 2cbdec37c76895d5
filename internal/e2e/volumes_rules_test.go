package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/identity"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// The data-volume restore under EC2's rules (the bed's awsRules): the
// agent restores through them, or refuses before it stops anything.

// setDevices adds keys to the config's devices section.
func (h *host) setDevices(more string) {
	h.t.Helper()
	b, err := os.ReadFile(h.config)
	if err != nil {
		h.t.Fatal(err)
	}
	s := strings.Replace(string(b), "devices: {by_id_dir: "+h.byID+"}", "devices: {by_id_dir: "+h.byID+", "+more+"}", 1)
	if err := os.WriteFile(h.config, []byte(s), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// dataApp mounts the data volume at data (state "v1-data" in it), starts
// the agent, deploys an app whose hooks record stop and start in the
// file events, and takes a completed checkpoint.
func dataApp(t *testing.T, h *host) (data, events string, cp api.Checkpoint) {
	t.Helper()
	data, events = filepath.Join(h.dir, "data"), filepath.Join(h.dir, "events")
	os.MkdirAll(data, 0o755)
	if err := h.inst.Mount(h.inst.DataVolumeID, data); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.inst.Unmount(data) })
	if err := os.WriteFile(filepath.Join(data, "state"), []byte("v1-data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.start()
	app := h.bundle("app", testbed.Revision{Dest: filepath.Join(h.dir, "srv", "app"), Files: map[string]testbed.File{"v": {Content: "1"}},
		Hooks: map[string]string{"ApplicationStop": "echo stop >> " + events, "ApplicationStart": "echo start >> " + events}})
	if r := h.ctl("deploy", app, "--wait"); r.code != 0 {
		t.Fatalf("deploy: %s%s", r.stdout, r.stderr)
	}
	os.Remove(events)
	unix.Sync()
	r := h.ctl("checkpoint", "create", "--wait", "-o", "json")
	var b api.CheckpointBody
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil || b.Checkpoint.State != api.CheckpointCompleted {
		t.Fatalf("checkpoint create: %v\n%s%s", err, r.stdout, r.stderr)
	}
	return data, events, b.Checkpoint
}

// A volume restore through what a real account does to it: the new
// volume answers NotFound for a moment after CreateVolume; something
// mounts the old volume again right after the agent unmounted it, so
// EC2 keeps the detach busy; and the guest still holds /dev/sdf, so the
// new volume would stay attaching there. The agent ends with the data of
// the checkpoint mounted where it was, the new volume at /dev/sdg.
func TestVolumeRestoreThroughTheRulesOfEC2(t *testing.T) {
	h := newHostWith(t, testbed.InstanceOptions{DataPlane: true}, "")
	h.setDevices("attach_timeout: 3s")
	data, events, cp := dataApp(t, h)
	if err := os.WriteFile(filepath.Join(data, "state"), []byte("v2-data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer h.bed.SetRules(testbed.Rules{ConsistencyWindow: time.Second, UdevDelay: h.bed.Rules().UdevDelay})()
	h.inst.HoldDeviceName(testbed.DataDevice)
	// An automounter: once the agent unmounted the data volume, mount it
	// again; the detach call is slowed down so this happens before EC2
	// looks at the volume.
	oldDev, err := h.inst.BlockDevice(h.inst.DataVolumeID)
	if err != nil {
		t.Fatal(err)
	}
	defer h.bed.AWS.AddFault(testbed.Fault{Service: "ec2", Action: "DetachVolume", Kind: testbed.FaultLatency, Latency: time.Second, Count: 1})()
	remounted := make(chan error, 1)
	go func() {
		err := testutil.Poll(60*time.Second, func() error {
			if mounted(data) {
				return errors.New("still mounted")
			}
			return nil
		})
		if err == nil {
			err = unix.Mount(oldDev, data, "ext4", 0, "")
		}
		remounted <- err
	}()
	h.bed.AWS.ResetCounts()

	r := h.ctl("checkpoint", "restore", cp.ID, "--volumes", "--wait")
	if r.code != 0 {
		t.Fatalf("restore: %d\n%s%s\n%s", r.code, r.stdout, r.stderr, h.agent.Output())
	}
	if err := <-remounted; err != nil {
		t.Fatalf("the automounter did not mount the old volume again: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(data, "state")); string(got) != "v1-data\n" {
		t.Errorf("after the restore %s holds %q, want the checkpoint's v1-data", data, got)
	}
	if ev, _ := os.ReadFile(events); string(ev) != "stop\nstart\n" {
		t.Errorf("application hooks around the swap: %q", ev)
	}
	d := lastDeployment(h)
	if d.Kind != api.KindRestore || len(d.Volumes) != 1 || d.Volumes[0].AttachedAs != "/dev/sdg" {
		t.Fatalf("restore record %s %+v, want the new volume attached as /dev/sdg", d.Kind, d.Volumes)
	}
	if n := h.bed.AWS.ErrorCount("ec2", "DescribeVolumes", "InvalidVolume.NotFound"); n == 0 {
		t.Error("the new volume never answered NotFound: the consistency window did not apply")
	}
	if !strings.Contains(h.agent.Output(), "mounted again after it was unmounted") {
		t.Error("the agent did not meet a busy detach (its log does not say so)")
	}
	var vols struct {
		Volumes []struct {
			VolumeId, State string
			Attachments     []struct{ Device, InstanceId string }
		}
	}
	awscli(t, h.bed, &vols, "ec2", "describe-volumes", "--volume-ids", h.inst.DataVolumeID, d.Volumes[0].NewVolumeID)
	for _, v := range vols.Volumes {
		switch v.VolumeId {
		case h.inst.DataVolumeID:
			if v.State != "available" {
				t.Errorf("the old volume is %s, want detached (available)", v.State)
			}
		default:
			if v.State != "in-use" || len(v.Attachments) != 1 || v.Attachments[0].Device != "/dev/sdg" {
				t.Errorf("the new volume: %+v, want in use at /dev/sdg", v)
			}
		}
	}
}

// mounted is true when dir is a mount point in this namespace.
func mounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// What the agent cannot release before a detach — a filesystem on a
// partition, a mount in another mount namespace, a device it cannot find
// — makes it refuse the restore before it stops or makes anything: the
// application runs on, the data stays mounted, no volume is created, and
// the record says what holds the volume.
func TestVolumeRestoreRefusesWhatItCannotRelease(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, h *host, data string) func()
		want  string
	}{
		{"a filesystem on a partition", func(t *testing.T, h *host, data string) func() {
			// The volume as it came from an AMI with a partition table.
			if err := h.inst.Unmount(data); err != nil {
				t.Fatal(err)
			}
			part, err := h.inst.PartitionVolume(h.inst.DataVolumeID)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount(part, data, "ext4", 0, ""); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(data, "state"), []byte("v1-data\n"), 0o644)
			return func() { unix.Unmount(data, 0) }
		}, "a filesystem on partition loop"},
		{"a mount in another mount namespace", func(t *testing.T, h *host, data string) func() {
			dev, err := h.inst.BlockDevice(h.inst.DataVolumeID)
			if err != nil {
				t.Fatal(err)
			}
			mnt := t.TempDir()
			holder := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", "mount "+dev+" "+mnt+" && echo mounted && exec sleep 600")
			out, _ := holder.StdoutPipe()
			if err := holder.Start(); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 7)
			if _, err := out.Read(buf); err != nil || string(buf) != "mounted" {
				t.Fatalf("the container's namespace did not mount %s: %v", dev, err)
			}
			return func() { holder.Process.Kill(); holder.Wait() }
		}, "in another mount namespace"},
		{"a device the agent cannot find", func(t *testing.T, h *host, data string) func() {
			// udev never made the link (or removed it).
			if err := os.Remove(filepath.Join(h.inst.ByIDDir, identity.ByIDLinkName(h.inst.DataVolumeID))); err != nil {
				t.Fatal(err)
			}
			return func() {}
		}, "cannot be found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHostWith(t, testbed.InstanceOptions{DataPlane: true}, "")
			data, events, cp := dataApp(t, h)
			defer c.setup(t, h, data)()
			r := h.ctl("checkpoint", "restore", cp.ID, "--volumes", "--wait")
			if r.code == 0 {
				t.Fatalf("restore succeeded:\n%s", r.stdout)
			}
			d := lastDeployment(h)
			if d.Kind != api.KindRestore || d.Status != api.StatusFailed || !strings.Contains(d.Error, c.want) || !strings.Contains(d.Error, "nothing was stopped") {
				t.Errorf("restore ended %s: %s; want failed saying %q and that nothing was stopped", d.Status, d.Error, c.want)
			}
			for _, s := range d.Steps {
				if strings.HasPrefix(s.Name, "CreateVolume") || strings.HasPrefix(s.Name, "ApplicationStop") || strings.HasPrefix(s.Name, "Unmount") {
					t.Errorf("step %s ran (%s)", s.Name, s.Status)
				}
			}
			if ev, _ := os.ReadFile(events); len(ev) != 0 {
				t.Errorf("the application was stopped or started: %q", ev)
			}
			if got, _ := os.ReadFile(filepath.Join(data, "state")); string(got) != "v1-data\n" {
				t.Errorf("%s holds %q: the data volume is not mounted as it was", data, got)
			}
			var vols struct{ Volumes []struct{ VolumeId string } }
			awscli(t, h.bed, &vols, "ec2", "describe-volumes", "--filters", "Name=tag:"+checkpoint.TagRestoredFrom+",Values="+cp.Snapshots[len(cp.Snapshots)-1].SnapshotID)
			if len(vols.Volumes) != 0 {
				t.Errorf("a restore volume was made: %+v", vols.Volumes)
			}
		})
	}
}

// A root restore that EC2 would refuse is refused before anything
// changes — no pre-restore checkpoint, no intent on the instance, no
// replacement task — saying why: an AMI whose root is smaller than the
// current root (grown since), an AWS Marketplace AMI, a bare metal
// instance.
func TestRootRestoreRefusesWhatEC2Refuses(t *testing.T) {
	cases := []struct {
		name  string
		opts  testbed.InstanceOptions
		kind  string
		setup func(h *host)
		want  string
	}{
		{"an AMI smaller than the current root", testbed.InstanceOptions{RootGiB: 8}, "ami", nil, "smaller than the current root volume"},
		{"an AWS Marketplace AMI", testbed.InstanceOptions{}, "ami", func(h *host) { h.bed.MarkMarketplace(h.inst.Doc.ImageID, "prod-"+h.inst.Doc.InstanceID) }, "Marketplace"},
		{"a bare metal instance", testbed.InstanceOptions{InstanceType: "m5.metal"}, "ebs", nil, "bare metal"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHostWith(t, c.opts, "")
			h.start()
			if c.setup != nil {
				c.setup(h)
			}
			r := h.ctl("checkpoint", "create", "--kind", c.kind, "--wait", "-o", "json")
			var b api.CheckpointBody
			if err := json.Unmarshal([]byte(r.stdout), &b); err != nil || b.Checkpoint.State != api.CheckpointCompleted {
				t.Fatalf("checkpoint create: %v\n%s%s", err, r.stdout, r.stderr)
			}
			if c.name == "an AMI smaller than the current root" {
				awscli(t, h.bed, nil, "ec2", "modify-volume", "--volume-id", h.inst.RootVolumeID, "--size", "16")
			}
			r = h.ctl("checkpoint", "restore", b.Checkpoint.ID, "--root", "--wait")
			if r.code == 0 {
				t.Fatalf("restore --root succeeded:\n%s", r.stdout)
			}
			d := lastDeployment(h)
			if d.Kind != api.KindRestoreRoot || d.Status != api.StatusFailed || !strings.Contains(d.Error, c.want) || !strings.Contains(d.Error, "nothing was changed") {
				t.Errorf("restore --root ended %s: %s; want failed saying %q and that nothing was changed", d.Status, d.Error, c.want)
			}
			var steps []string
			for _, s := range d.Steps {
				steps = append(steps, s.Name)
			}
			if fmt.Sprint(steps) != "[Plan]" {
				t.Errorf("steps %v, want only the Plan that refused", steps)
			}
			var tags struct{ Tags []struct{ Key string } }
			awscli(t, h.bed, &tags, "ec2", "describe-tags", "--filters", "Name=resource-id,Values="+h.inst.Doc.InstanceID, "Name=key,Values="+checkpoint.TagRestoreIntent)
			if len(tags.Tags) != 0 {
				t.Errorf("an intent was written: %+v", tags.Tags)
			}
		})
	}
}
