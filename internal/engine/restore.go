package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/engine/rung"
	"github.com/rollback-agent/rollback-agent/internal/journal"
)

// rootTaskWait bounds the wait for a root replacement task (the host
// reboots during it, so normally the wait is cut short by the reboot).
const rootTaskWait = 15 * time.Minute

// ErrNoCheckpoints means restores are not available (no AWS).
var ErrNoCheckpoints = errors.New("checkpoints are not available on this agent")

// Restore queues a restore of checkpoint id: its data volumes, or its
// root volume.
func (e *Engine) Restore(id string, root bool) (*api.Deployment, error) {
	if e.o.Checkpoints == nil {
		return nil, ErrNoCheckpoints
	}
	if err := e.refuse(); err != nil {
		return nil, err
	}
	kind := api.KindRestore
	if root {
		kind = api.KindRestoreRoot
	}
	installed, _ := e.o.Journal.Pointer(journal.PointerInstalled)
	rev := ""
	if cur := e.current(); cur != nil {
		rev = cur.Revision
	}
	d := &api.Deployment{
		ID: newID(), Kind: kind, Revision: rev, Status: api.StatusQueued, Source: api.Source{Type: "checkpoint", Location: id},
		Trigger: "api", CreatedAt: time.Now().UTC(), Steps: []api.Step{}, Release: installed, Checkpoint: id,
	}
	if err := e.o.Journal.PutDeployment(d); err != nil {
		return nil, err
	}
	e.o.Log.Info("restore queued", zap.String("operation", d.ID), zap.String("checkpoint", id), zap.String("kind", string(kind)))
	e.bus.publish(api.Event{Type: api.EventStatus, DeploymentID: d.ID, Status: d.Status})
	e.kick()
	return d, nil
}

var stages = []string{"", checkpoint.StageCreated, checkpoint.StageUnmounted, checkpoint.StageDetached, checkpoint.StageAttached, checkpoint.StageMounted}

func before(stage, than string) bool { return slices.Index(stages, stage) < slices.Index(stages, than) }

// restoreVolumes swaps each data volume of the checkpoint in: new volume
// from the snapshot, application stopped, old volume unmounted and
// detached (kept, tagged), new one attached at the same device and
// mounted the same way, application started. Every stage is journaled
// and safe to repeat, so a crash resumes where it stopped.
func (r *run) restoreVolumes(ctx context.Context, rung api.RungName) error {
	cps := r.e.o.Checkpoints
	if len(r.d.Volumes) == 0 {
		err := r.step(StepPlan, api.EffectNone, "", rung, func() (string, error) {
			plan, err := cps.PlanVolumeRestore(ctx, r.d.Checkpoint)
			if err != nil {
				return "", err
			}
			r.d.Volumes = plan
			return fmt.Sprintf("%d data volume(s) from checkpoint %s", len(plan), r.d.Checkpoint), nil
		})
		if err != nil {
			return err
		}
	}
	// Before anything is made or stopped: every old volume can be
	// released (EC2 would keep the detach of one still in use busy).
	for i := range r.d.Volumes {
		vr := &r.d.Volumes[i]
		if !before(vr.Stage, checkpoint.StageUnmounted) {
			continue
		}
		if err := r.step(StepCheckDetach+" "+vr.DeviceName, api.EffectNone, "", rung, func() (string, error) {
			return vr.OldVolumeID + " can be released: nothing but the agent's unmount holds it", cps.CheckDetach(vr)
		}); err != nil {
			return err
		}
	}
	for i := range r.d.Volumes {
		vr := &r.d.Volumes[i]
		if before(vr.Stage, checkpoint.StageCreated) {
			if err := r.step("CreateVolume "+vr.DeviceName, api.EffectNone, "", rung, func() (string, error) {
				err := cps.CreateRestoreVolume(ctx, r.d.ID, r.d.Checkpoint, vr)
				return fmt.Sprintf("%s from %s", vr.NewVolumeID, vr.SnapshotID), err
			}); err != nil {
				return err
			}
		}
	}
	if err := r.stopPrevious(ctx, rung, rung != ""); err != nil {
		return err
	}
	for i := range r.d.Volumes {
		vr := &r.d.Volumes[i]
		var dev string
		for _, st := range []struct {
			stage string
			fn    func() (string, error)
		}{
			{checkpoint.StageUnmounted, func() (string, error) {
				err := cps.Unmount(vr)
				return fmt.Sprintf("%d mount(s) of %s", len(vr.Mounts), vr.OldVolumeID), err
			}},
			{checkpoint.StageDetached, func() (string, error) {
				err := cps.Detach(ctx, r.d.Checkpoint, vr)
				return vr.OldVolumeID + " detached, kept and tagged replaced-by " + vr.NewVolumeID, err
			}},
			{checkpoint.StageAttached, func() (string, error) {
				var err error
				dev, err = cps.Attach(ctx, vr)
				if vr.AttachedAs != "" {
					return fmt.Sprintf("%s attached as %s at %s (EC2 would not take %s)", vr.NewVolumeID, dev, vr.AttachedAs, vr.DeviceName), err
				}
				return vr.NewVolumeID + " attached as " + dev, err
			}},
			{checkpoint.StageMounted, func() (string, error) {
				if dev == "" {
					var err error
					if dev, err = cps.Attach(ctx, vr); err != nil {
						return "", err
					}
				}
				err := cps.Mount(vr, dev)
				return fmt.Sprintf("%s mounted on %d target(s)", dev, len(vr.Mounts)), err
			}},
		} {
			if !before(vr.Stage, st.stage) {
				continue
			}
			if err := r.step(stageStep(st.stage)+" "+vr.DeviceName, api.EffectHost, "", rung, st.fn); err != nil {
				return err
			}
		}
	}
	r.restored = true
	if r.e.o.RefreshIdentity != nil {
		if err := r.e.o.RefreshIdentity(ctx); err != nil {
			r.log.Warn("refresh identity after the volume swap", zap.Error(err))
		}
	}
	if err := r.startInstalled(ctx, rung); err != nil {
		return err
	}
	if rung != "" {
		return nil // the ladder assesses after each rung
	}
	return r.assess(ctx, "")
}

func stageStep(stage string) string {
	switch stage {
	case checkpoint.StageUnmounted:
		return "Unmount"
	case checkpoint.StageDetached:
		return "Detach"
	case checkpoint.StageAttached:
		return "Attach"
	}
	return "Mount"
}

// restoreRoot replaces the root volume with the checkpoint's: a
// pre-restore checkpoint first (so this can be undone), the intent in the
// journal and in the instance's tags, then the replacement task. EC2
// reboots the host; the agent finishes on the next start from the tag.
func (r *run) restoreRoot(ctx context.Context, rung api.RungName) error {
	cps := r.e.o.Checkpoints
	if r.d.Root == nil {
		if err := r.step(StepPlan, api.EffectNone, "", rung, func() (string, error) {
			rr, err := cps.PlanRootRestore(ctx, r.d.Checkpoint)
			if err != nil {
				return "", err
			}
			r.d.Root = rr
			return fmt.Sprintf("root from snapshot %q image %q of checkpoint %s", rr.SnapshotID, rr.ImageID, rr.Checkpoint), nil
		}); err != nil {
			return err
		}
	}
	rr := r.d.Root
	if rr.PreRestore == "" {
		if err := r.step(StepCheckpoint, api.EffectNone, "", rung, func() (string, error) {
			cp, err := cps.Create(ctx, checkpoint.Meta{Kinds: []api.CheckpointKind{api.KindEBS}, Reason: checkpoint.ReasonPreRestore, Revision: r.d.Revision, Deployment: r.d.ID})
			if err != nil {
				return "", fmt.Errorf("pre-restore checkpoint (without it the restore could not be undone): %w", err)
			}
			rr.PreRestore = cp.ID
			return "pre-restore checkpoint " + cp.ID, nil
		}); err != nil {
			return err
		}
	}
	intent := checkpoint.RootIntent{Operation: r.d.ID, Checkpoint: rr.Checkpoint, SnapshotID: rr.SnapshotID, ImageID: rr.ImageID,
		PreRestore: rr.PreRestore, TaskID: rr.TaskID, Revision: r.d.Revision, Started: time.Now().UTC()}
	if err := r.step(StepIntent, api.EffectNone, "", rung, func() (string, error) {
		return "instance tag " + checkpoint.TagRestoreIntent, cps.SetRootIntent(ctx, intent)
	}); err != nil {
		return err
	}
	if err := r.step(StepReplaceRoot, api.EffectHost, "", rung, func() (string, error) {
		if err := cps.StartRootReplace(ctx, r.d.ID, rr); err != nil {
			return "", err
		}
		intent.TaskID = rr.TaskID
		return "task " + rr.TaskID + " " + rr.TaskState + "; the host reboots", cps.SetRootIntent(ctx, intent)
	}); err != nil {
		cps.ClearRootIntent(context.WithoutCancel(ctx))
		return err
	}
	// Normally the reboot ends this wait (and this process).
	return r.step(StepReboot, api.EffectHost, "", rung, func() (string, error) { return r.e.finishRoot(ctx, r, intent) })
}

// finishRoot waits for the replacement task to end, records it and
// clears the intent.
func (e *Engine) finishRoot(ctx context.Context, r *run, in checkpoint.RootIntent) (string, error) {
	cps := e.o.Checkpoints
	state, err := cps.WaitRootTask(ctx, in.TaskID, rootTaskWait)
	if err != nil {
		return "", err
	}
	if r.d.Root != nil {
		r.d.Root.TaskState = state
	}
	if err := cps.ClearRootIntent(ctx); err != nil {
		e.o.Log.Warn("clear the root restore intent", zap.Error(err))
	}
	if _, err := cps.Catalogue(ctx); err != nil {
		e.o.Log.Warn("rebuild the checkpoint catalogue after a root restore", zap.Error(err))
	}
	if e.o.RefreshIdentity != nil {
		if err := e.o.RefreshIdentity(ctx); err != nil {
			e.o.Log.Warn("refresh identity after the root restore", zap.Error(err))
		}
	}
	switch state {
	case checkpoint.TaskSucceeded:
		return fmt.Sprintf("task %s succeeded: the root volume is the one of checkpoint %s (undo: restore %s)", in.TaskID, in.Checkpoint, in.PreRestore), nil
	case checkpoint.TaskFailedDetached:
		return "", fmt.Errorf("task %s ended %s: the instance may have no root volume; check it in the EC2 console", in.TaskID, state)
	}
	return "", fmt.Errorf("task %s ended %s: the original root volume is still attached", in.TaskID, state)
}

// rootResume is a root restore the first start after the reboot found
// unfinished: its record is in the journal (adoptRootIntent), the rest
// is done by the worker (resumeRootRestore).
type rootResume struct {
	r        *run
	in       *checkpoint.RootIntent
	climbing bool
}

// Prepare does, before the agent says it is ready, what a client may ask
// about at once: the record of a root restore that the instance's intent
// tag says is unfinished (the journal on the restored root predates it,
// so without this `agentctl show <op>` would answer "no deployment"
// until the worker got to it). It is bounded (prepareBound): EC2
// throttled or out of reach must not hold the start past systemd's
// TimeoutStartSec; then the worker looks again, unbounded, in Run.
func (e *Engine) Prepare(ctx context.Context) { e.prepare(ctx, prepareBound) }

// prepareBound bounds Prepare's look at the instance's tags.
const prepareBound = 20 * time.Second

func (e *Engine) prepare(ctx context.Context, bound time.Duration) {
	e.prepareMu.Lock()
	defer e.prepareMu.Unlock()
	if e.prepared {
		return
	}
	pctx, cancel := ctx, context.CancelFunc(func() {})
	if bound > 0 {
		pctx, cancel = context.WithTimeout(ctx, bound)
	}
	defer cancel()
	res, err := e.adoptRootIntent(pctx)
	if err != nil && bound > 0 && pctx.Err() != nil && ctx.Err() == nil {
		e.o.Log.Warn("looking for an unfinished root restore took too long; the engine looks again once started", zap.Error(err))
		return
	}
	if err != nil {
		e.o.Log.Error("finishing a root restore", zap.Error(err))
	}
	e.prepared, e.resume = true, res
}

// adoptRootIntent reads the intent and writes (or rewrites) the
// operation's record as running again.
func (e *Engine) adoptRootIntent(ctx context.Context) (*rootResume, error) {
	if e.o.Checkpoints == nil {
		return nil, nil
	}
	in, err := e.o.Checkpoints.RootIntentNow(ctx)
	if err != nil || in == nil {
		return nil, err
	}
	d, err := e.o.Journal.Deployment(in.Operation)
	if err != nil {
		d = &api.Deployment{ID: in.Operation, Kind: api.KindRestoreRoot, Revision: in.Revision, Source: api.Source{Type: "checkpoint", Location: in.Checkpoint},
			Trigger: "api", CreatedAt: in.Started, StartedAt: in.Started, Steps: []api.Step{}}
	}
	r := &run{e: e, d: d, cfg: e.o.Config(), log: e.o.Log}
	if err := e.o.Checkpoints.AdoptRestored(*in); err != nil {
		e.o.Log.Warn("record the checkpoints of the root restore in the ledger", zap.Error(err))
	}
	markInterrupted(d)
	climbing := d.Kind != api.KindRestoreRoot // the ladder's root rung, not `checkpoint restore --root`
	if d.Root == nil {
		// A record rebuilt from the intent, or one on the restored root
		// that predates the climb: the intent says what was restored.
		d.Root = &api.RootRestore{Checkpoint: in.Checkpoint, SnapshotID: in.SnapshotID, ImageID: in.ImageID, PreRestore: in.PreRestore, TaskID: in.TaskID}
	}
	if d.Checkpoint == "" {
		d.Checkpoint = in.Checkpoint
	}
	r.recoverStep("started again after the root volume replacement; this record comes from the instance tag " + checkpoint.TagRestoreIntent)
	switch {
	case climbing:
		// The restored root's journal holds the deployment as it was when
		// its checkpoint was taken (running): the climb goes on.
		r.setStatus(api.StatusRollingBack)
	case d.Status != api.StatusRunning:
		r.setStatus(api.StatusRunning)
	default:
		r.save()
	}
	return &rootResume{r: r, in: in, climbing: climbing}, nil
}

// resumeRootRestore finishes the root restore Prepare found: the task's
// outcome, then (on the ladder's root rung) the start and assessment of
// what the restored root has installed.
func (e *Engine) resumeRootRestore(ctx context.Context, res *rootResume) {
	r, in, climbing, d := res.r, res.in, res.climbing, res.r.d
	if in.TaskID == "" {
		// The task may have started without its id reaching the tag.
		id, err := e.o.Checkpoints.FindRootTask(ctx, in.Checkpoint, in.Started)
		if err != nil {
			d.Error = fmt.Sprintf("the agent stopped before it recorded the replacement task, and looking for the task failed: %v; check the instance's root volume replacement tasks in EC2, then clear the instance tag %s", err, checkpoint.TagRestoreIntent)
			r.finish(api.StatusNeedsOperator, nil)
			return
		}
		if id == "" {
			// Nothing was replaced and the host did not reboot.
			if err := e.o.Checkpoints.ClearRootIntent(ctx); err != nil {
				e.o.Log.Warn("clear the root restore intent", zap.Error(err))
			}
			if climbing {
				// Recovery climbs the root rung again (safe to repeat).
				r.save()
				return
			}
			d.Error = "the agent stopped before the replacement task started; nothing was replaced"
			r.finish(api.StatusFailed, nil)
			return
		}
		in.TaskID = id
		if d.Root != nil {
			d.Root.TaskID = id
		}
	}
	if err := r.step(StepReboot, api.EffectHost, "", "", func() (string, error) { return e.finishRoot(ctx, r, *in) }); err != nil {
		d.Error = err.Error()
		status := api.StatusFailed
		if climbing || (d.Root != nil && d.Root.TaskState == checkpoint.TaskFailedDetached) {
			status = api.StatusNeedsOperator
		}
		r.finish(status, nil)
		return
	}
	if climbing {
		r.finishRootRung(ctx)
		return
	}
	r.finish(api.StatusSucceeded, nil)
}

// finishRootRung ends a deployment whose ladder reached the root rung,
// after the reboot onto the restored root: the host is as it was at the
// deployment's checkpoint, so start what is installed there, assess it,
// and end rolled_back (or needs_operator when it is still unhealthy).
// The journal on this root predates the climb, so the rung is recorded
// here.
func (r *run) finishRootRung(ctx context.Context) {
	if r.d.Error == "" {
		r.d.Error = "the deployment failed and the rollback ladder reached the root rung"
	}
	if prev := r.previousGood(); prev != nil {
		r.d.RolledBackTo = prev.ID
	}
	r.restored = true
	err := r.rung(rung.Root, func() (string, error) {
		if err := r.startInstalled(ctx, rung.Root); err != nil {
			return "", err
		}
		if err := r.assess(ctx, rung.Root); err != nil {
			return "", err
		}
		return "root volume replaced from checkpoint " + r.d.Checkpoint + "; the host started again on it", nil
	})
	if err != nil {
		r.d.Error = fmt.Sprintf("%s; the root rung did not make the host healthy (%s). The host needs an operator: look at `agentctl show %s`, fix the cause, then run `agentctl rollback --to <revision>`",
			r.d.Error, firstLine(err.Error()), r.d.ID)
		r.finish(api.StatusNeedsOperator, nil)
		return
	}
	r.finish(api.StatusRolledBack, nil)
}

// startInstalled runs the start and validate hooks of the revision on
// disk, without installing anything.
func (r *run) startInstalled(ctx context.Context, rung api.RungName) error {
	id, _ := r.e.o.Journal.Pointer(journal.PointerInstalled)
	if id == "" {
		return nil
	}
	rel, err := r.e.o.Releases.Load(id)
	if err != nil {
		return fmt.Errorf("the installed revision %s is not on disk: %w", id, err)
	}
	for _, ev := range eventsAfterCopy[1:] { // not AfterInstall: nothing was installed
		if err := r.hookStep(ctx, ev, rel, rel.ID, rung); err != nil {
			return err
		}
	}
	return nil
}
