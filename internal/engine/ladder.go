package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/clock"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/engine/rung"
	"github.com/rollback-agent/rollback-agent/internal/health"
	"github.com/rollback-agent/rollback-agent/internal/journal"
)

// climb runs the rollback ladder once for a failed operation: rung by
// rung from `from`, as far as rollback.ladder allows, assessing health
// after each, and stops at the first rung that leaves the host healthy.
// When the last allowed rung fails the operation ends needs_operator,
// saying what failed and what to run next. A rollback never triggers
// another: the climb is the only one for this operation.
func (r *run) climb(ctx context.Context, from api.RungName) {
	r.setStatus(api.StatusRollingBack)
	if why := r.e.climbLimit(r.cfg); why != "" {
		// A record of past climbs that cannot be read counts as the limit
		// reached: a safety limit fails closed.
		r.d.Error = fmt.Sprintf("%s; no automatic rollback: %s (rollback.max_climbs_per_boot/_per_day stop a host that keeps failing from looping). "+
			"Look at `agentctl show %s`, fix the cause, then run `agentctl rollback` or `agentctl checkpoint restore`", r.d.Error, why, r.d.ID)
		r.finish(api.StatusNeedsOperator, nil)
		return
	}
	r.e.recordClimb()
	r.climbLadder(ctx, from)
}

// resumeClimb goes on with a climb a restart interrupted, from the rung
// it was on (every rung is safe to repeat); it is the same climb, so the
// limits are not counted again.
func (r *run) resumeClimb(ctx context.Context) {
	from := r.firstRung()
	for i := range r.d.Rungs {
		if g := &r.d.Rungs[i]; g.Status == api.StepRunning {
			from = g.Name
			g.Status, g.Error, g.EndedAt = api.StepFailed, "interrupted by an agent restart; climbing again from this rung", time.Now().UTC()
		}
	}
	r.setStatus(api.StatusRollingBack)
	r.climbLadder(ctx, from)
}

func (r *run) climbLadder(ctx context.Context, from api.RungName) {
	rungs := rung.From(r.cfg.Rollback.Ladder, from)
	if len(rungs) == 0 {
		r.d.Error = fmt.Sprintf("%s; rollback.ladder allows no rung from %s on: look at `agentctl show %s` and restore by hand (`agentctl checkpoint restore %s --volumes`)",
			r.d.Error, from, r.d.ID, orNone(r.d.Checkpoint))
		r.finish(api.StatusNeedsOperator, nil)
		return
	}
	var failed []string
	for _, name := range rungs {
		err := r.rung(name, func() (string, error) { return r.climbRung(ctx, name) })
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			r.climbed()
			return
		}
		failed = append(failed, fmt.Sprintf("%s rung: %s", name, firstLine(err.Error())))
	}
	next := "`agentctl rollback --to <revision>`"
	if r.d.Checkpoint != "" {
		next += " or `agentctl checkpoint restore " + r.d.Checkpoint + " --volumes|--root`"
	}
	r.d.Error = fmt.Sprintf("%s; the rollback ladder did not make the host healthy (%s). The host needs an operator: "+
		"look at `agentctl show %s` and `agentctl logs %s`, fix the cause, then run %s",
		r.d.Error, strings.Join(failed, "; "), r.d.ID, r.d.ID, next)
	r.finish(api.StatusNeedsOperator, nil)
}

func orNone(s string) string {
	if s == "" {
		return "<checkpoint>"
	}
	return s
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// climbRung does one rung and assesses the host after it.
func (r *run) climbRung(ctx context.Context, name api.RungName) (string, error) {
	var detail string
	var err error
	switch name {
	case rung.Revision:
		detail, err = r.revisionRung(ctx)
	case rung.Volumes:
		detail, err = r.volumesRung(ctx)
	case rung.Root:
		if r.d.Root != nil && r.d.Root.TaskState == checkpoint.TaskSucceeded {
			// The root was replaced and the host came back on it: what
			// was left is starting the installed revision and assessing.
			detail = "root volume replaced from checkpoint " + r.d.Checkpoint + "; the host started again on it"
			r.restored = true
			err = r.startInstalled(ctx, name)
			break
		}
		if err = r.waitCheckpoint(ctx, checkpoint.NeedRoot); err == nil {
			r.d.Root = nil
			err = r.restoreRoot(ctx, name)
			detail = "root volume replaced from checkpoint " + r.d.Checkpoint
		}
	}
	if err != nil {
		return detail, err
	}
	if err := r.assess(ctx, name); err != nil {
		return detail, err
	}
	return detail, nil
}

// volumesRung restores the data volumes from the checkpoint taken before
// the change.
func (r *run) volumesRung(ctx context.Context) (string, error) {
	if err := r.waitCheckpoint(ctx, checkpoint.NeedData); err != nil {
		return "", err
	}
	if err := r.restoreVolumes(ctx, rung.Volumes); err != nil {
		return "", err
	}
	var vols []string
	for _, v := range r.d.Volumes {
		vols = append(vols, v.DeviceName+" "+v.OldVolumeID+"→"+v.NewVolumeID)
	}
	return "data volumes restored from checkpoint " + r.d.Checkpoint + ": " + strings.Join(vols, ", "), nil
}

// waitCheckpoint waits until the operation's checkpoint can be restored
// for need, within rollback.checkpoint_wait on the engine's clock. A
// checkpoint still pending then ends the rung with what it waits on, how
// long that may take, and what to run once it completes: a first
// snapshot of a large volume takes hours on EBS and an AMI up to a day,
// so running out of patience is an answer, not a silent failure.
func (r *run) waitCheckpoint(ctx context.Context, need checkpoint.Need) error {
	if r.d.Checkpoint == "" {
		return errors.New("no checkpoint was taken before this change (checkpoint.before_deploy, or required: false)")
	}
	if r.e.o.Checkpoints == nil {
		return ErrNoCheckpoints
	}
	clk := r.e.o.Clock
	wait := r.cfg.Rollback.CheckpointWait
	started := clk.Now()
	var nextLog time.Duration
	for {
		c, err := r.e.o.Checkpoints.Cached(r.d.Checkpoint)
		if err != nil {
			if c, err = r.e.o.Checkpoints.Get(ctx, r.d.Checkpoint); err != nil {
				return err
			}
		}
		ready, waiting, err := checkpoint.Readiness(c, need)
		switch {
		case err != nil:
			return err
		case ready:
			return nil
		}
		waited := clk.Now().Sub(started)
		if waited >= wait {
			flag := "--volumes"
			if need == checkpoint.NeedRoot {
				flag = "--root"
			}
			left := ""
			if est := checkpoint.Estimate(c, time.Now()); est > 0 {
				left = fmt.Sprintf(" (about %s more at its pace so far)", est)
			}
			return fmt.Errorf("checkpoint %s is not complete after waiting %s (rollback.checkpoint_wait): %s%s; "+
				"EBS can take hours for a first snapshot of a large volume and up to a day for an AMI, and this rung changed nothing. "+
				"Once `agentctl checkpoint show %s` says completed, run `agentctl checkpoint restore %s %s`",
				c.ID, wait, waiting, left, c.ID, c.ID, flag)
		}
		if waited >= nextLog {
			nextLog = waited + time.Minute
			r.log.Info("waiting for the checkpoint to complete before restoring it", zap.String("checkpoint", c.ID), zap.String("waiting_on", waiting))
		}
		if err := clock.Sleep(ctx, clk, min(time.Second, wait-waited)); err != nil {
			return err
		}
	}
}

// climbed ends a successful climb: the revision on disk becomes current,
// and a last good deployment that just failed (in its watch window, after
// a boot) stops being the last good one.
func (r *run) climbed() {
	pointers := map[string]string{}
	installed, _ := r.e.o.Journal.Pointer(journal.PointerInstalled)
	switch {
	case slices.ContainsFunc(r.d.Rungs, func(g api.Rung) bool { return g.Name == rung.Revision }):
		pointers[journal.PointerCurrent] = r.d.RolledBackTo
		if lg, _ := r.e.o.Journal.Pointer(journal.PointerLastGood); lg == r.d.ID {
			pointers[journal.PointerLastGood] = r.d.RolledBackTo
		}
	case r.d.Kind != api.KindGuard && installed != "" && installed == r.d.Release:
		// The volumes rung kept this revision's files and started them
		// again with the data as it was: it is what runs now.
		pointers[journal.PointerCurrent] = r.d.ID
	}
	if s := r.d.FailedStep(); s != nil && s.Name == StepCheckpoint && r.d.Rungs[len(r.d.Rungs)-1].Name == rung.Revision {
		// No rollback point, no deploy: nothing of the new revision was
		// installed, the revision rung only started the previous one
		// again. (A root rung also lands on a root taken during the
		// checkpoint step, but it did restore a rollback point.)
		r.d.Error += "; nothing of this revision was installed and the previous revision was started again"
		r.finish(api.StatusFailed, pointers)
		return
	}
	r.finish(api.StatusRolledBack, pointers)
}

// previousGood is the revision the revision rung goes back to: the last
// good deployment, or, when that is this very deployment (it failed in
// its watch window or after a boot), the one that was good before it.
func (r *run) previousGood() *api.Deployment {
	lg := r.e.lastGood()
	if lg != nil && lg.ID != r.d.ID {
		return lg
	}
	if r.d.PreviousGood == "" {
		return nil
	}
	d, err := r.e.o.Journal.Deployment(r.d.PreviousGood)
	if err != nil || !r.e.o.Releases.Exists(d.Release) {
		return nil
	}
	return d
}

// assess runs the health assessment as a step; unhealthy is an error.
func (r *run) assess(ctx context.Context, rung api.RungName) error {
	return r.step(StepAssess, api.EffectNone, "", rung, func() (string, error) {
		if r.e.o.Health == nil {
			return "no health checks", errSkipped
		}
		checkers, policy, err := r.e.o.Health()
		if err != nil {
			return "", err
		}
		if len(checkers) == 0 {
			return "no health checks configured (ValidateService is the check)", errSkipped
		}
		warm := ""
		if w := r.cfg.Rollback.RestoreWarmup; r.restored && w > 0 {
			policy = warmupPolicy(policy, w)
			warm = fmt.Sprintf(" (after a restore, failed rounds allowed for rollback.restore_warmup %s: volumes made from snapshots read slowly until their blocks are fetched)", w)
		}
		a := health.Assess(ctx, checkers, policy, func(round int, results []api.CheckResult) {
			r.e.bus.publish(api.Event{Type: api.EventMessage, DeploymentID: r.d.ID, Message: roundLine(round, results)})
		})
		sum := a.Summary()
		r.d.Health = &sum
		r.e.reportHealth(sum)
		if !a.Healthy {
			return a.Reason + warm, errors.New(a.Reason + warm)
		}
		return a.Reason + warm, nil
	})
}

// warmupPolicy lets an assessment after a restore fail rounds for w
// before it counts them: a volume restored from a snapshot fetches each
// block from S3 the first time it is read (EBS User Guide, "Initialize
// Amazon EBS volumes"), so checks right after a restore can time out on
// a healthy application. It still ends at the first success run.
func warmupPolicy(p health.Policy, w time.Duration) health.Policy {
	interval := max(p.Interval, time.Millisecond)
	p.FailuresAllowed += int(w / interval)
	p.AssessTimeout = max(p.AssessTimeout, p.Grace+w)
	return p
}

func roundLine(round int, results []api.CheckResult) string {
	var parts []string
	for _, c := range results {
		mark := "ok"
		if !c.Healthy {
			mark = "FAIL"
		}
		parts = append(parts, c.Name+" "+mark)
	}
	return fmt.Sprintf("health round %d: %s", round, strings.Join(parts, ", "))
}

func (e *Engine) reportHealth(sum api.HealthSummary) {
	if e.o.OnHealth != nil {
		e.o.OnHealth(sum)
	}
}

// climbRecord is one automatic climb, for the limits.
type climbRecord struct {
	At   time.Time `json:"at"`
	Boot string    `json:"boot"`
}

const metaClimbs = "climbs"

// climbs reads the record of past climbs. An error means the record
// cannot be trusted: the limits it holds must not reset to zero.
func (e *Engine) climbs() ([]climbRecord, error) {
	v, err := e.o.Journal.GetMeta(metaClimbs)
	if err != nil {
		return nil, fmt.Errorf("read the record of past rollbacks: %w", err)
	}
	if v == "" {
		return nil, nil
	}
	var out []climbRecord
	if err := json.Unmarshal([]byte(v), &out); err != nil {
		return nil, fmt.Errorf("the record of past rollbacks in the journal is damaged (%w); "+
			"move the journal aside to reset it (docs/design.md, recovery)", err)
	}
	return out, nil
}

// climbLimit says why no more automatic climbs are allowed now ("" if
// they are).
func (e *Engine) climbLimit(cfg *config.Config) string {
	var thisBoot, today int
	list, err := e.climbs()
	if err != nil {
		return err.Error()
	}
	for _, c := range list {
		if c.Boot == e.o.BootID {
			thisBoot++
		}
		if time.Since(c.At) < 24*time.Hour {
			today++
		}
	}
	switch {
	case thisBoot >= cfg.Rollback.MaxClimbsPerBoot:
		return fmt.Sprintf("%d automatic rollbacks already since this boot", thisBoot)
	case today >= cfg.Rollback.MaxClimbsPerDay:
		return fmt.Sprintf("%d automatic rollbacks already in the last 24 hours", today)
	}
	return ""
}

func (e *Engine) recordClimb() {
	list, err := e.climbs()
	if err != nil {
		// climbLimit refused already; never overwrite what it could not read.
		return
	}
	list = append(list, climbRecord{At: time.Now().UTC(), Boot: e.o.BootID})
	if len(list) > 100 {
		list = list[len(list)-100:]
	}
	b, _ := json.Marshal(list)
	if err := e.o.Journal.SetMeta(metaClimbs, string(b)); err != nil {
		e.o.Log.Warn("record a rollback climb", zap.Error(err))
	}
}
