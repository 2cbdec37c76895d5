package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/bundle"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/releases"
)

// Event order of an in-place deployment: the first three come from the
// revision already installed, the rest from the new one.
var (
	eventsOfPrevious = []string{appspec.BeforeBlockTraffic, appspec.AfterBlockTraffic, appspec.ApplicationStop}
	eventsBeforeCopy = []string{appspec.BeforeInstall}
	eventsAfterCopy  = []string{appspec.AfterInstall, appspec.ApplicationStart, appspec.ValidateService, appspec.BeforeAllowTraffic, appspec.AfterAllowTraffic}
)

// deploy runs a deployment: fetch, unpack, validate, the previous
// revision's stop hooks, the checkpoint, then the new revision's hooks
// around Install.
func (r *run) deploy(ctx context.Context) error {
	dl := filepath.Join(r.e.o.downloadsDir(), r.d.ID+".bundle")
	defer os.Remove(dl)
	err := r.step(StepFetch, api.EffectBundle, "", "", func() (string, error) {
		os.Remove(dl)
		digest, size, err := r.e.o.Fetcher.Fetch(ctx, &r.d.Source, dl)
		if err != nil {
			return "", err
		}
		r.d.Digest, r.d.Source.Size = digest, size
		return fmt.Sprintf("%d bytes, sha256 %s", size, digest), nil
	})
	if err != nil {
		return err
	}
	if cur := r.e.current(); r.sameChannelMove(cur) {
		r.d.NoOp = true
		r.d.Warnings = append(r.d.Warnings, fmt.Sprintf("no-op: the channel's move to revision %s was already applied by deployment %s (same sequence, same bundle)", cur.Revision, cur.ID))
		r.d.Release = cur.Release
		r.finish(api.StatusSucceeded, nil)
		return nil
	}
	lim := r.cfg.Limits
	err = r.step(StepUnpack, api.EffectBundle, "", "", func() (string, error) {
		res, err := r.e.o.Releases.Unpack(ctx, r.d.ID, dl, bundle.Limits{
			MaxTotalBytes: int64(lim.MaxUnpackedBytes), MaxFiles: lim.MaxFiles, MaxFileBytes: int64(lim.MaxFileBytes),
		})
		if err != nil {
			return "", err
		}
		os.Remove(dl)
		detail := fmt.Sprintf("%s, %d files, %d dirs, %d symlinks, %d bytes", res.Format, res.Files, res.Dirs, res.Symlinks, res.UnpackedBytes)
		if res.StrippedDir != "" {
			detail += fmt.Sprintf("; top directory %q stripped", res.StrippedDir)
		}
		return detail, nil
	})
	if err != nil {
		return err
	}
	var rel *releases.Release
	err = r.step(StepValidate, api.EffectBundle, "", "", func() (string, error) {
		var err error
		rel, err = r.e.o.Releases.Validate(r.d.ID, r.d.Revision, appspec.Options{})
		if err != nil {
			return "", err
		}
		found := append(append(append([]string{}, rel.AppSpec.Warnings...), rel.AppSpec.Differences...), rel.Warnings...)
		for _, w := range found {
			r.warn(w)
		}
		if len(found) > 0 {
			// Also in the deployment's log, where `agentctl logs` shows them.
			r.e.writeLog(r.d.ID, "Validate.log", strings.Join(found, "\n")+"\n")
		}
		return fmt.Sprintf("%s: %d files entries, %d permissions, hooks for %d events", rel.AppSpec.File, len(rel.AppSpec.Files), len(rel.AppSpec.Permissions), len(rel.AppSpec.Hooks)), nil
	})
	if err != nil {
		return err
	}
	if err := r.stopPrevious(ctx, "", r.d.IgnoreApplicationStopFailures); err != nil {
		return err
	}
	if err := r.checkpoint(ctx); err != nil {
		return err
	}
	if err := r.installRelease(ctx, rel, ""); err != nil {
		return err
	}
	return r.assess(ctx, "")
}

// stopPrevious runs the traffic and stop hooks of the revision whose
// files are on disk (CodeDeploy's last successful install), if any.
// Under a rollback rung, failures are logged and not fatal.
func (r *run) stopPrevious(ctx context.Context, rung api.RungName, tolerate bool) error {
	prevID, _ := r.e.o.Journal.Pointer(journal.PointerInstalled)
	var prev *releases.Release
	if prevID != "" {
		if p, err := r.e.o.Releases.Load(prevID); err == nil {
			prev = p
		} else {
			r.log.Warn("installed revision is not on disk; its stop hooks cannot run", zap.String("release", prevID), zap.Error(err))
		}
	}
	for _, ev := range eventsOfPrevious {
		err := r.hookStep(ctx, ev, prev, prevID, rung)
		if err != nil && tolerate {
			r.d.Warnings = append(r.d.Warnings, fmt.Sprintf("%s of revision %s failed and was ignored: %v", ev, revisionOf(prev), err))
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// sameChannelMove reports whether this deployment is a channel re-reading
// the move it already applied (a restart before it could record the
// sequence): the one case that stays a no-op. CodeDeploy runs every event
// of every deployment, and operators redeploy the current revision to
// restart services or re-run hooks: an explicit deploy (API) or an inbox
// drop of the same bundle runs in full (issue 14.3). The channel's local
// copy is named after the channel and its sequence, so the same location
// means the same sequence.
func (r *run) sameChannelMove(cur *api.Deployment) bool {
	return cur != nil && r.d.Trigger == "channel" && cur.Trigger == "channel" &&
		cur.Digest == r.d.Digest && cur.Source.Location == r.d.Source.Location &&
		r.e.o.Releases.Exists(cur.Release)
}

// warn records a warning on the deployment (agentctl show lists them) and
// publishes it on the deployment's event stream.
func (r *run) warn(msg string) {
	for _, w := range r.d.Warnings {
		if w == msg {
			return
		}
	}
	r.d.Warnings = append(r.d.Warnings, msg)
	r.e.bus.publish(api.Event{Type: api.EventMessage, DeploymentID: r.d.ID, Message: "warning: " + msg})
}

func revisionOf(rel *releases.Release) string {
	if rel == nil {
		return "-"
	}
	return rel.Revision
}

// checkpoint takes the rollback point between ApplicationStop and
// BeforeInstall.
func (r *run) checkpoint(ctx context.Context) error {
	return r.step(StepCheckpoint, api.EffectNone, "", "", func() (string, error) {
		if r.e.o.Checkpoints == nil {
			return "no checkpoint provider", errSkipped
		}
		id, detail, err := r.e.o.Checkpoints.BeforeDeploy(ctx, r.d)
		if err != nil {
			return "", err
		}
		if id == "" {
			return detail, errSkipped
		}
		r.d.Checkpoint = id
		return detail, nil
	})
}

// installRelease runs BeforeInstall, Install, and the hooks after it, of
// rel.
func (r *run) installRelease(ctx context.Context, rel *releases.Release, rung api.RungName) error {
	for _, ev := range eventsBeforeCopy {
		if err := r.hookStep(ctx, ev, rel, rel.ID, rung); err != nil {
			return err
		}
	}
	if err := r.step(StepInstall, api.EffectHost, rel.Revision, rung, func() (string, error) {
		detail, warnings, err := r.e.install(ctx, rel)
		for _, w := range warnings {
			r.warn("Install: " + w)
		}
		return detail, err
	}); err != nil {
		return err
	}
	for _, ev := range eventsAfterCopy {
		if err := r.hookStep(ctx, ev, rel, rel.ID, rung); err != nil {
			return err
		}
	}
	return nil
}

// current returns the current deployment, if any.
func (e *Engine) current() *api.Deployment {
	id, err := e.o.Journal.Pointer(journal.PointerCurrent)
	if err != nil || id == "" {
		return nil
	}
	d, err := e.o.Journal.Deployment(id)
	if err != nil {
		return nil
	}
	return d
}

// writeLog appends text to a file in the deployment's log directory.
func (e *Engine) writeLog(id, name, text string) {
	dir := e.LogDir(id)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		e.o.Log.Warn("create log dir", zap.Error(err))
		return
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		e.o.Log.Warn("write deployment log", zap.Error(err))
		return
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		e.o.Log.Warn("write deployment log", zap.Error(err))
	}
}
