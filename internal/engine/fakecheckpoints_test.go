package engine_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/engine"
)

// fakeCheckpoints is engine.Checkpoints in memory, over a host whose
// data volumes are files: while a volume is mounted its content is the
// file at its mount path, where hooks and health checks read and write
// it; a snapshot is the content at the moment of the create call. The
// root is whatever the rig's snapRoot/putRoot save and put back (the
// journal and the installed files), so a root restore across a "reboot"
// brings back the journal as it was, as on EC2.
//
// It keeps the rules the volumes and root rungs depend on: a mounted
// volume cannot be detached, a restore's volume is made once per
// operation and device (a repeat finds it), a checkpoint is restorable
// only once complete, the root intent outlives the process like an
// instance tag.
type fakeCheckpoints struct {
	mu   sync.Mutex
	next int

	devices     map[string]*fakeDevice // device name → what is attached there
	volumes     map[string]*fakeVolume
	snapshots   map[string]string // snapshot id → content
	checkpoints map[string]*api.Checkpoint
	roots       map[string][]byte // snapshot id of a root → saved root
	intent      *checkpoint.RootIntent
	tasks       map[string]*fakeTask

	// snapRoot saves the root's content; putRoot puts it back (the rig
	// does it at the "reboot").
	snapRoot func() []byte
	// pendingReads is how many Cached/Get answers say pending before a
	// new checkpoint completes.
	pendingReads int
	// fail makes the named call fail (once each count).
	fail map[string]int
	// calls logs every call, for assertions.
	calls []string
	// coldRounds is how many health rounds a volume restored from a
	// snapshot reads too slowly for (Mount writes them to <mount>.cold).
	coldRounds int
	// heldNames are device names the guest still holds: an attach there
	// never completes, and the real Attach moves to another name.
	heldNames map[string]bool
	// rebooting is closed when WaitRootTask sees a task the host has not
	// rebooted for yet: the rig then kills the engine and "reboots".
	rebooting chan struct{}
}

type fakeDevice struct {
	volume string
	mount  string // path of the file that is the mounted filesystem, "" if not mounted
	path   string // where it mounts
	// held is what else uses the device (a partition, LVM, a mount in a
	// container): the agent cannot release it, so CheckDetach refuses.
	held string
}

type fakeVolume struct {
	id, content string
	device      string // attached at, "" if detached
	restoreKey  string // op:device of the restore that made it
	replacedBy  string
}

type fakeTask struct {
	id, snapshot string
	done         bool
}

func newFakeCheckpoints() *fakeCheckpoints {
	return &fakeCheckpoints{devices: map[string]*fakeDevice{}, volumes: map[string]*fakeVolume{}, snapshots: map[string]string{},
		checkpoints: map[string]*api.Checkpoint{}, roots: map[string][]byte{}, tasks: map[string]*fakeTask{}, fail: map[string]int{},
		rebooting: make(chan struct{}), heldNames: map[string]bool{}}
}

// addDataVolume attaches a data volume at device, mounted as the file
// path with content.
func (f *fakeCheckpoints) addDataVolume(device, path, content string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := &fakeVolume{id: f.id("vol"), device: device}
	f.volumes[v.id] = v
	f.devices[device] = &fakeDevice{volume: v.id, mount: path, path: path}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		panic(err)
	}
}

func (f *fakeCheckpoints) id(prefix string) string {
	f.next++
	return fmt.Sprintf("%s-%08x", prefix, f.next)
}

// call logs a call and says whether it is to fail.
func (f *fakeCheckpoints) call(name string, args ...any) error {
	f.calls = append(f.calls, strings.TrimSpace(name+" "+fmt.Sprint(args...)))
	if f.fail[name] > 0 {
		f.fail[name]--
		return fmt.Errorf("%s: injected failure", name)
	}
	return nil
}

// count is how many calls were made to name.
func (f *fakeCheckpoints) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c == name || strings.HasPrefix(c, name+" ") {
			n++
		}
	}
	return n
}

func (f *fakeCheckpoints) BeforeDeploy(ctx context.Context, d *api.Deployment) (string, string, error) {
	cp, err := f.Create(ctx, checkpoint.Meta{Kinds: []api.CheckpointKind{api.KindEBS}, Reason: checkpoint.ReasonDeploy, Revision: d.Revision, Deployment: d.ID})
	if err != nil {
		return "", "", err
	}
	return cp.ID, "checkpoint " + cp.ID, nil
}

func (f *fakeCheckpoints) Create(_ context.Context, meta checkpoint.Meta) (*api.Checkpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("Create", meta.Reason); err != nil {
		return nil, err
	}
	c := &api.Checkpoint{ID: f.id("cp"), Kinds: meta.Kinds, State: api.CheckpointPending, CreatedAt: time.Now().UTC(),
		Reason: meta.Reason, Label: meta.Label, Revision: meta.Revision, Deployment: meta.Deployment}
	if f.snapRoot != nil {
		id := f.id("snap")
		f.roots[id] = f.snapRoot()
		c.Snapshots = append(c.Snapshots, api.CheckpointVolume{SnapshotID: id, DeviceName: "/dev/xvda", Root: true, State: api.CheckpointPending, Progress: "0%"})
	}
	for _, dev := range f.sortedDevices() {
		d := f.devices[dev]
		content := f.volumes[d.volume].content
		if d.mount != "" {
			b, err := os.ReadFile(d.mount)
			if err != nil {
				return nil, fmt.Errorf("snapshot %s: %w", dev, err)
			}
			content = string(b)
		}
		id := f.id("snap")
		f.snapshots[id] = content
		c.Snapshots = append(c.Snapshots, api.CheckpointVolume{SnapshotID: id, VolumeID: d.volume, DeviceName: dev, State: api.CheckpointPending, Progress: "0%"})
	}
	f.checkpoints[c.ID] = c
	out := *c
	return &out, nil
}

func (f *fakeCheckpoints) sortedDevices() []string {
	var out []string
	for dev := range f.devices {
		out = append(out, dev)
	}
	sort.Strings(out)
	return out
}

// read answers the checkpoint, pending for the first pendingReads reads.
func (f *fakeCheckpoints) read(id string) (*api.Checkpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readLocked(id)
}

func (f *fakeCheckpoints) readLocked(id string) (*api.Checkpoint, error) {
	c := f.checkpoints[id]
	if c == nil {
		return nil, fmt.Errorf("checkpoint %s: %w", id, checkpoint.ErrNotFound)
	}
	if c.State == api.CheckpointPending {
		if f.pendingReads > 0 {
			f.pendingReads--
		} else {
			c.State, c.Progress = api.CheckpointCompleted, "100%"
			for i := range c.Snapshots {
				c.Snapshots[i].State, c.Snapshots[i].Progress = api.CheckpointCompleted, "100%"
			}
		}
	}
	out := *c
	out.Snapshots = append([]api.CheckpointVolume(nil), c.Snapshots...)
	return &out, nil
}

func (f *fakeCheckpoints) Cached(id string) (*api.Checkpoint, error) { return f.read(id) }
func (f *fakeCheckpoints) Get(_ context.Context, id string) (*api.Checkpoint, error) {
	return f.read(id)
}

func (f *fakeCheckpoints) Catalogue(context.Context) (*api.CheckpointList, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := &api.CheckpointList{SchemaVersion: api.SchemaVersion}
	for _, c := range f.checkpoints {
		l.Checkpoints = append(l.Checkpoints, *c)
	}
	return l, nil
}

func (f *fakeCheckpoints) Prune(context.Context, bool) (*api.PruneReport, error) {
	return &api.PruneReport{SchemaVersion: api.SchemaVersion}, nil
}

func (f *fakeCheckpoints) PlanVolumeRestore(_ context.Context, id string) ([]api.VolumeRestore, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("PlanVolumeRestore", id); err != nil {
		return nil, err
	}
	c, err := f.readLocked(id)
	if err != nil {
		return nil, err
	}
	if c.State != api.CheckpointCompleted {
		return nil, fmt.Errorf("checkpoint %s is not complete", id)
	}
	var plan []api.VolumeRestore
	for _, s := range c.Snapshots {
		if s.Root {
			continue
		}
		d := f.devices[s.DeviceName]
		if d == nil {
			return nil, fmt.Errorf("no volume is attached at %s now", s.DeviceName)
		}
		plan = append(plan, api.VolumeRestore{DeviceName: s.DeviceName, SnapshotID: s.SnapshotID, OldVolumeID: d.volume})
	}
	if len(plan) == 0 {
		return nil, fmt.Errorf("checkpoint %s has no data volume snapshot", id)
	}
	return plan, nil
}

func (f *fakeCheckpoints) CreateRestoreVolume(_ context.Context, opID, _ string, vr *api.VolumeRestore) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("CreateRestoreVolume", vr.DeviceName); err != nil {
		return err
	}
	key := opID + ":" + vr.DeviceName
	for _, v := range f.volumes {
		if v.restoreKey == key {
			vr.NewVolumeID, vr.Stage = v.id, checkpoint.StageCreated
			return nil
		}
	}
	v := &fakeVolume{id: f.id("vol"), content: f.snapshots[vr.SnapshotID], restoreKey: key}
	f.volumes[v.id] = v
	vr.NewVolumeID, vr.Stage = v.id, checkpoint.StageCreated
	return nil
}

// CheckDetach refuses, as the real one, an old volume something else
// holds: before anything is stopped.
func (f *fakeCheckpoints) CheckDetach(vr *api.VolumeRestore) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("CheckDetach", vr.DeviceName); err != nil {
		return err
	}
	if d := f.devices[vr.DeviceName]; d != nil && d.volume == vr.OldVolumeID && d.held != "" {
		return fmt.Errorf("restore %s: the agent cannot release %s before detaching it: %s; nothing was stopped or changed", vr.DeviceName, vr.OldVolumeID, d.held)
	}
	return nil
}

func (f *fakeCheckpoints) Unmount(vr *api.VolumeRestore) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("Unmount", vr.DeviceName); err != nil {
		return err
	}
	d := f.devices[vr.DeviceName]
	if d != nil && d.volume == vr.OldVolumeID && vr.Mounts == nil {
		// As the real one: where it was mounted is recorded once, so the
		// new volume mounts there.
		vr.Mounts = []api.MountRecord{{Target: d.path, FSType: "fake"}}
	}
	if d != nil && d.volume == vr.OldVolumeID && d.mount != "" {
		b, err := os.ReadFile(d.mount)
		if err != nil {
			return err
		}
		f.volumes[d.volume].content = string(b)
		if err := os.Remove(d.mount); err != nil {
			return err
		}
		d.mount = ""
	}
	vr.Stage = checkpoint.StageUnmounted
	return nil
}

func (f *fakeCheckpoints) Detach(_ context.Context, _ string, vr *api.VolumeRestore) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("Detach", vr.DeviceName); err != nil {
		return err
	}
	d := f.devices[vr.DeviceName]
	if d != nil && d.volume == vr.OldVolumeID {
		if d.mount != "" {
			return errors.New("volume is in use: it is still mounted (EC2 would leave it busy)")
		}
		delete(f.devices, vr.DeviceName)
	}
	old := f.volumes[vr.OldVolumeID]
	old.device, old.replacedBy = "", vr.NewVolumeID
	vr.Stage = checkpoint.StageDetached
	return nil
}

func (f *fakeCheckpoints) Attach(_ context.Context, vr *api.VolumeRestore) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("Attach", vr.DeviceName); err != nil {
		return "", err
	}
	// As the real one: a name the guest holds is given up for the next
	// free one, recorded in AttachedAs so a repeat goes there.
	name := vr.DeviceName
	if vr.AttachedAs != "" {
		name = vr.AttachedAs
	}
	for f.heldNames[name] || (f.devices[name] != nil && f.devices[name].volume != vr.NewVolumeID) {
		name = name[:len(name)-1] + string(name[len(name)-1]+1)
	}
	if name != vr.DeviceName {
		vr.AttachedAs = name
	}
	if f.devices[name] == nil {
		path := ""
		for _, m := range vr.Mounts {
			path = m.Target
		}
		f.devices[name] = &fakeDevice{volume: vr.NewVolumeID, path: path}
	}
	f.volumes[vr.NewVolumeID].device = name
	vr.Stage = checkpoint.StageAttached
	return "/dev/fake/" + vr.NewVolumeID, nil
}

func (f *fakeCheckpoints) Mount(vr *api.VolumeRestore, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("Mount", vr.DeviceName); err != nil {
		return err
	}
	name := vr.DeviceName
	if vr.AttachedAs != "" {
		name = vr.AttachedAs
	}
	d := f.devices[name]
	if d == nil || d.volume != vr.NewVolumeID {
		return fmt.Errorf("volume %s is not attached at %s", vr.NewVolumeID, vr.DeviceName)
	}
	if d.mount == "" {
		if err := os.WriteFile(d.path, []byte(f.volumes[d.volume].content), 0o644); err != nil {
			return err
		}
		d.mount = d.path
		if f.coldRounds > 0 {
			if err := os.WriteFile(d.path+".cold", []byte(fmt.Sprint(f.coldRounds)), 0o644); err != nil {
				return err
			}
		}
	}
	vr.Stage = checkpoint.StageMounted
	return nil
}

func (f *fakeCheckpoints) PlanRootRestore(_ context.Context, id string) (*api.RootRestore, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("PlanRootRestore", id); err != nil {
		return nil, err
	}
	c, err := f.readLocked(id)
	if err != nil {
		return nil, err
	}
	for _, s := range c.Snapshots {
		if s.Root {
			return &api.RootRestore{Checkpoint: id, SnapshotID: s.SnapshotID}, nil
		}
	}
	return nil, fmt.Errorf("checkpoint %s has no root snapshot", id)
}

func (f *fakeCheckpoints) SetRootIntent(_ context.Context, in checkpoint.RootIntent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("SetRootIntent"); err != nil {
		return err
	}
	f.intent = &in
	return nil
}

func (f *fakeCheckpoints) ClearRootIntent(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.intent = nil
	return f.call("ClearRootIntent")
}

func (f *fakeCheckpoints) RootIntentNow(context.Context) (*checkpoint.RootIntent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.intent == nil {
		return nil, nil
	}
	in := *f.intent
	return &in, nil
}

func (f *fakeCheckpoints) AdoptRestored(checkpoint.RootIntent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.call("AdoptRestored")
}

func (f *fakeCheckpoints) StartRootReplace(_ context.Context, opID string, rr *api.RootRestore) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("StartRootReplace", opID); err != nil {
		return err
	}
	t := &fakeTask{id: f.id("replacevol"), snapshot: rr.SnapshotID}
	f.tasks[t.id] = t
	rr.TaskID, rr.TaskState = t.id, "pending"
	return nil
}

// WaitRootTask: a task the host has not rebooted for yet means the host
// is going down now; it tells the rig and never returns (the process is
// gone). After the reboot the task has succeeded.
func (f *fakeCheckpoints) WaitRootTask(ctx context.Context, taskID string, _ time.Duration) (string, error) {
	f.mu.Lock()
	t := f.tasks[taskID]
	if t == nil {
		f.mu.Unlock()
		return "", fmt.Errorf("no task %s", taskID)
	}
	if t.done {
		f.mu.Unlock()
		return checkpoint.TaskSucceeded, nil
	}
	close(f.rebooting)
	f.mu.Unlock()
	<-ctx.Done()
	return "", ctx.Err()
}

func (f *fakeCheckpoints) FindRootTask(_ context.Context, _ string, _ time.Time) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id := range f.tasks {
		return id, nil
	}
	return "", nil
}

// reboot ends the replacement task the host went down for and returns
// the saved root it replaced the root with.
func (f *fakeCheckpoints) reboot() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.tasks {
		if !t.done {
			t.done = true
			f.rebooting = make(chan struct{})
			return f.roots[t.snapshot]
		}
	}
	panic("reboot without a replacement task")
}

// dataContent is what is on the volume at device now.
func (f *fakeCheckpoints) dataContent(device string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.devices[device]
	if d == nil {
		return "<detached>"
	}
	if d.mount != "" {
		b, _ := os.ReadFile(d.mount)
		return string(b)
	}
	return f.volumes[d.volume].content + " (unmounted)"
}

// restoreVolumes are the volumes restores made.
func (f *fakeCheckpoints) restoreVolumes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, v := range f.volumes {
		if v.restoreKey != "" {
			out = append(out, v.restoreKey)
		}
	}
	slices.Sort(out)
	return out
}

var _ engine.Checkpoints = (*fakeCheckpoints)(nil)
