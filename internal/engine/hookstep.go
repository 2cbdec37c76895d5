package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/hooks"
	"github.com/rollback-agent/rollback-agent/internal/install"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/releases"
)

// ScriptsLog is the file in a deployment's log directory that holds every
// script's output in CodeDeploy's scripts.log format, for log shippers
// configured for it (agentctl logs ID --event scripts shows it).
const ScriptsLog = "scripts.log"

// LogFile names the output file of an event within a deployment's log
// directory; steps taken on a rollback rung get the rung as prefix.
func LogFile(event string, rung api.RungName) string {
	if rung != "" {
		return string(rung) + "-" + event + ".log"
	}
	return event + ".log"
}

// hookStep runs the scripts rel's appspec lists for event, as one step.
// rel nil (nothing installed yet) or no scripts: the step is skipped, as
// CodeDeploy reports a no-op.
func (r *run) hookStep(ctx context.Context, event string, rel *releases.Release, relID string, rung api.RungName) error {
	if detail, skip := hookSkip(event, rel); skip {
		r.skipStep(event, revisionOf(rel), rung, detail)
		return nil
	}
	return r.step(event, api.EffectHost, revisionOf(rel), rung, func() (string, error) {
		scripts := rel.AppSpec.Hooks[event]
		// Nobody but root may have changed what is about to run as root
		// (issue 17.1): checked again right before every event.
		if err := r.e.o.Releases.CheckExec(relID); err != nil {
			return "", err
		}
		logDir := r.e.LogDir(r.d.ID)
		if err := os.MkdirAll(logDir, 0o750); err != nil {
			return "", fmt.Errorf("create log dir: %w", err)
		}
		logPath := filepath.Join(logDir, LogFile(event, rung))
		scriptsLog := filepath.Join(logDir, ScriptsLog)
		if err := hooks.WriteEventHeader(scriptsLog, event, time.Now()); err != nil {
			r.log.Warn("scripts.log", zap.Error(err))
		}
		var done []string
		budget := r.e.o.MaxEventTime
		if budget <= 0 {
			budget = appspec.MaxEventTime
		}
		start := time.Now()
		for _, sc := range scripts {
			// Each script gets its own timeout or what is left of the
			// event's budget, whichever is smaller.
			timeout := min(sc.Timeout, budget-time.Since(start))
			if timeout <= 0 {
				return strings.Join(done, "; "), fmt.Errorf("%s of revision %s: the event's scripts used up its %s before %s could start (%s, error code %d)",
					event, rel.Revision, budget, sc.Location, hooks.ScriptTimedOut, int(hooks.ScriptTimedOut))
			}
			res := hooks.Run(ctx, hooks.Spec{
				Event:       event,
				Dir:         r.e.o.Releases.ArchiveDir(relID),
				Location:    sc.Location,
				Timeout:     timeout,
				RunAs:       sc.RunAs,
				Env:         r.hookEnv(event, rel),
				LogPath:     logPath,
				ScriptsLog:  scriptsLog,
				MaxLogBytes: int64(r.cfg.Limits.HookOutputBytes),
				KillGrace:   r.cfg.Limits.HookKillGrace,
			})
			line := fmt.Sprintf("%s (%s)", sc.Location, res.Duration.Round(1e6))
			if len(res.Lingering) > 0 {
				line += fmt.Sprintf(", left running: pids %v", res.Lingering)
			}
			if res.Truncated {
				line += ", output truncated"
			}
			for _, d := range res.Differences {
				r.warn(event + ": " + d)
			}
			done = append(done, line)
			if res.Err() != nil {
				tail, _ := hooks.Tail(logPath, 2048)
				return strings.Join(done, "; "), fmt.Errorf("%s of revision %s: %s (%s, error code %d)\n--- last output (%s) ---\n%s",
					event, rel.Revision, res.Message, res.Code, int(res.Code), logPath, tail)
			}
		}
		return strings.Join(done, "; "), nil
	})
}

// hookEnv is CodeDeploy's environment for hook scripts, plus ours.
func (r *run) hookEnv(event string, rel *releases.Release) []string {
	env := []string{
		"LIFECYCLE_EVENT=" + event,
		"DEPLOYMENT_ID=" + r.d.ID,
		"APPLICATION_NAME=" + r.cfg.Application,
		"DEPLOYMENT_GROUP_NAME=" + r.cfg.DeploymentGroup,
		"DEPLOYMENT_GROUP_ID=" + r.e.o.GroupID,
		"ROLLBACK_AGENT_CHECKPOINT_ID=" + r.d.Checkpoint,
		"ROLLBACK_AGENT_REVISION=" + rel.Revision,
		"ROLLBACK_AGENT_DEPLOYMENT_REVISION=" + r.d.Revision,
	}
	if s := r.d.Source; s.Type == "s3" || s.Bucket != "" {
		env = append(env, "BUNDLE_BUCKET="+s.Bucket, "BUNDLE_KEY="+s.Key)
		if s.VersionID != "" {
			env = append(env, "BUNDLE_VERSION="+s.VersionID)
		}
		if s.ETag != "" {
			env = append(env, "BUNDLE_ETAG="+strings.Trim(s.ETag, `"`))
		}
	}
	return env
}

// onDisk returns the manifests describing what may be on disk: the
// installed release's, and after an interrupted Install also the
// manifests of the intent. ids are the releases they belong to.
func (e *Engine) onDisk() ([]*install.Manifest, []string, error) {
	installed, err := e.o.Journal.Pointer(journal.PointerInstalled)
	if err != nil {
		return nil, nil, err
	}
	ids := []string{}
	if installed != "" {
		ids = append(ids, installed)
	}
	intent, err := e.o.Journal.InstallIntent()
	if err != nil {
		return nil, nil, err
	}
	if intent != nil {
		ids = append(append(ids, intent.Previous...), intent.Target)
	}
	seen := map[string]bool{}
	var uniq []string
	var ms []*install.Manifest
	for _, id := range ids {
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		uniq = append(uniq, id)
		for _, p := range []string{e.o.Releases.ManifestPath(id), e.o.Releases.PartialManifestPath(id)} {
			m, err := e.o.Releases.ReadManifest(p)
			if err != nil {
				return nil, nil, err
			}
			ms = append(ms, m)
		}
	}
	return ms, uniq, nil
}

// install puts rel's files on disk over whatever is there now, journaling
// the intent first and the installed pointer after. It returns the step's
// detail and the Install's warnings.
func (e *Engine) install(ctx context.Context, rel *releases.Release) (string, []string, error) {
	detail, rep, err := e.installReport(ctx, rel)
	if rep == nil {
		return detail, nil, err
	}
	return detail, rep.Warnings, err
}

func (e *Engine) installReport(ctx context.Context, rel *releases.Release) (string, *install.Report, error) {
	prev, prevIDs, err := e.onDisk()
	if err != nil {
		return "", nil, err
	}
	if err := e.o.Journal.Update(func(t *journal.Tx) error {
		return t.SetInstallIntent(&journal.InstallIntent{Target: rel.ID, Previous: prevIDs})
	}); err != nil {
		return "", nil, err
	}
	digests, err := e.o.Releases.Entries(rel.ID)
	if err != nil {
		return "", nil, err
	}
	partial := e.o.Releases.PartialManifestPath(rel.ID)
	rep, err := install.Install(ctx, install.Options{
		Spec: rel.AppSpec, RevisionDir: e.o.Releases.ArchiveDir(rel.ID), Digests: digests,
		Previous: prev, ManifestPath: partial,
	})
	if err != nil {
		return "", rep, err
	}
	if err := e.o.Releases.CommitManifest(rel.ID, rep.Manifest); err != nil {
		return "", rep, err
	}
	if err := e.o.Journal.Update(func(t *journal.Tx) error {
		if err := t.SetPointer(journal.PointerInstalled, rel.ID); err != nil {
			return err
		}
		return t.SetInstallIntent(nil)
	}); err != nil {
		return "", nil, err
	}
	// Everything the other manifests recorded was removed or re-recorded
	// in rel's: their partial logs are now stale.
	for _, id := range prevIDs {
		if id != rel.ID {
			os.Remove(e.o.Releases.PartialManifestPath(id))
		}
	}
	detail := rep.String()
	if len(rep.Warnings) > 0 {
		detail += "; " + strings.Join(rep.Warnings, "; ")
	}
	return detail, rep, nil
}

// uninstall removes everything on disk that an Install put there.
func (e *Engine) uninstall(ctx context.Context) (string, error) {
	prev, prevIDs, err := e.onDisk()
	if err != nil {
		return "", err
	}
	if err := e.o.Journal.Update(func(t *journal.Tx) error {
		return t.SetInstallIntent(&journal.InstallIntent{Target: "", Previous: prevIDs})
	}); err != nil {
		return "", err
	}
	rep, err := install.Uninstall(ctx, prev)
	if err != nil {
		return "", err
	}
	for _, id := range prevIDs {
		os.Remove(e.o.Releases.ManifestPath(id))
		os.Remove(e.o.Releases.PartialManifestPath(id))
	}
	if err := e.o.Journal.Update(func(t *journal.Tx) error {
		if err := t.SetPointer(journal.PointerInstalled, ""); err != nil {
			return err
		}
		return t.SetInstallIntent(nil)
	}); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d paths removed", rep.Removed), nil
}
