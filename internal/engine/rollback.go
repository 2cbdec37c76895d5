package engine

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/engine/rung"
	"github.com/rollback-agent/rollback-agent/internal/journal"
)

// rung records one climb of the ladder around fn.
func (r *run) rung(name api.RungName, fn func() (string, error)) error {
	r.d.Rungs = append(r.d.Rungs, api.Rung{Name: name, Status: api.StepRunning, StartedAt: time.Now().UTC()})
	i := len(r.d.Rungs) - 1
	r.save()
	detail, err := fn()
	rg := &r.d.Rungs[i]
	rg.EndedAt, rg.Detail = time.Now().UTC(), detail
	if err != nil {
		rg.Status, rg.Error = api.StepFailed, err.Error()
	} else {
		rg.Status = api.StepSucceeded
	}
	r.save()
	return err
}

// revisionRung: ApplicationStop of the failed revision if its files got on
// disk (failures logged, not fatal), then the last good revision
// reinstalled from releases/ (no download) with its hooks. With no last
// good revision, the failed revision's files are removed.
func (r *run) revisionRung(ctx context.Context) (string, error) {
	rungName := rung.Revision
	installed, _ := r.e.o.Journal.Pointer(journal.PointerInstalled)
	intent, _ := r.e.o.Journal.InstallIntent()
	if installed == r.d.Release || (intent != nil && intent.Target == r.d.Release) {
		if err := r.stopPrevious(ctx, rungName, true); err != nil {
			return "", err
		}
	}
	// Whatever the failed revision's hooks started goes with it, however
	// it left its process group (setsid, a daemon's double fork).
	if err := r.endRevision(r.d.Release, r.d.Revision, rungName); err != nil {
		return "", err
	}
	lastGood := r.previousGood()
	if lastGood == nil {
		err := r.step(StepUninstall, api.EffectHost, r.d.Revision, rungName, func() (string, error) { return r.e.uninstall(ctx) })
		if err != nil {
			return "", err
		}
		r.d.RolledBackTo = ""
		return "no earlier revision: the failed revision's files were removed", nil
	}
	rel, err := r.e.o.Releases.Load(lastGood.Release)
	if err != nil {
		return "", fmt.Errorf("the last good revision %s (deployment %s) is no longer on disk: %w", lastGood.Revision, lastGood.ID, err)
	}
	if err := r.installRelease(ctx, rel, rungName); err != nil {
		return "", err
	}
	r.d.RolledBackTo = lastGood.ID
	return fmt.Sprintf("reinstalled revision %s (deployment %s) from releases/", rel.Revision, lastGood.ID), nil
}

// rollbackTo is a manual rollback: the target revision is installed from
// releases/ like a deployment, without download.
func (r *run) rollbackTo(ctx context.Context) error {
	rel, err := r.e.o.Releases.Load(r.d.Release)
	if err != nil {
		return fmt.Errorf("the revision to roll back to is no longer on disk: %w", err)
	}
	if err := r.stopPrevious(ctx, "", false); err != nil {
		return err
	}
	// The revision rolled back from goes with what its hooks left running,
	// as on the ladder's revision rung.
	if cur, _ := r.e.o.Journal.Pointer(journal.PointerInstalled); cur != "" && cur != r.d.Release {
		name := cur
		if old, err := r.e.o.Releases.Load(cur); err == nil {
			name = old.Revision
		}
		if err := r.endRevision(cur, name, ""); err != nil {
			return err
		}
	}
	if err := r.checkpoint(ctx); err != nil {
		return err
	}
	if err := r.installRelease(ctx, rel, ""); err != nil {
		return err
	}
	return r.assess(ctx, "")
}

// lastGood returns the last good deployment whose release is on disk.
func (e *Engine) lastGood() *api.Deployment {
	id, err := e.o.Journal.Pointer(journal.PointerLastGood)
	if err != nil || id == "" {
		return nil
	}
	d, err := e.o.Journal.Deployment(id)
	if err != nil {
		return nil
	}
	return d
}

// ProtectedCheckpoints are the checkpoints retention must keep besides
// pinned ones, and why: the current and last good deployments' (the
// ladder's volumes and root rungs restore them), and the one the
// operation in flight (active, may be nil) uses or made as its undo
// point. It reads the journal alone, so it answers before the engine
// runs.
func ProtectedCheckpoints(j *journal.Journal, op *api.Deployment) map[string]string {
	out := map[string]string{}
	for _, p := range [][2]string{{journal.PointerCurrent, "current deployment's"}, {journal.PointerLastGood, "last good deployment's"}} {
		if id, _ := j.Pointer(p[0]); id != "" {
			if dep, err := j.Deployment(id); err == nil && dep.Checkpoint != "" {
				out[dep.Checkpoint] = p[1]
			}
		}
	}
	if op != nil {
		if op.Checkpoint != "" {
			out[op.Checkpoint] = "in use by " + op.ID
		}
		if op.Root != nil && op.Root.PreRestore != "" {
			out[op.Root.PreRestore] = "undo point of " + op.ID
		}
	}
	return out
}

// prune applies retention after a success: releases beyond keep_releases
// and deployment records beyond keep_history, never the current, last
// good or installed ones.
func (e *Engine) prune(cfg *config.Config, keep ...string) {
	protect := map[string]bool{}
	for _, id := range keep {
		protect[id] = true
	}
	for _, p := range []string{journal.PointerCurrent, journal.PointerLastGood} {
		if id, _ := e.o.Journal.Pointer(p); id != "" {
			protect[id] = true
			if d, err := e.o.Journal.Deployment(id); err == nil {
				protect[d.Release] = true
			}
		}
	}
	if id, _ := e.o.Journal.Pointer(journal.PointerInstalled); id != "" {
		protect[id] = true
	}
	if in, _ := e.o.Journal.InstallIntent(); in != nil {
		protect[in.Target] = true
		for _, id := range in.Previous {
			protect[id] = true
		}
	}
	if removed, err := e.o.Releases.Prune(cfg.Retention.KeepReleases, protect); err != nil {
		e.o.Log.Warn("pruning releases: " + err.Error())
	} else if len(removed) > 0 {
		e.o.Log.Info(fmt.Sprintf("pruned %d release(s): %v", len(removed), removed))
	}
	if e.o.Checkpoints != nil {
		e.pruneCheckpoints()
	}
	removed, err := e.o.Journal.PruneDeployments(cfg.Retention.KeepHistory, protect)
	if err != nil {
		e.o.Log.Warn("pruning history: " + err.Error())
	}
	for _, id := range removed {
		if err := os.RemoveAll(e.LogDir(id)); err != nil {
			e.o.Log.Warn("removing logs of " + id + ": " + err.Error())
		}
	}
}

// pruneCheckpoints prunes off the critical path (it talks to AWS), one
// prune at a time: a burst of deployments asks for one more prune, not
// one each.
func (e *Engine) pruneCheckpoints() {
	e.mu.Lock()
	if e.pruning {
		e.pruneAgain = true
		e.mu.Unlock()
		return
	}
	e.pruning = true
	e.mu.Unlock()
	go func() {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			if rep, err := e.o.Checkpoints.Prune(ctx, false); err != nil {
				e.o.Log.Warn("pruning checkpoints: " + err.Error())
			} else if len(rep.Errors) > 0 {
				e.o.Log.Warn(fmt.Sprintf("pruning checkpoints: %d failed: %v", len(rep.Errors), rep.Errors))
			}
			cancel()
			e.mu.Lock()
			if !e.pruneAgain {
				e.pruning = false
				e.mu.Unlock()
				return
			}
			e.pruneAgain = false
			e.mu.Unlock()
		}
	}()
}
