package daemon

import (
	"context"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/fleet"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// historyForDoc is how many records the host document looks through for
// the last rollback.
const historyForDoc = 50

// hostDoc is this host's state for its document in S3: what `agentctl
// status` says, in the fleet's words.
func (d *Daemon) hostDoc(ctx context.Context) *fleet.HostDoc {
	cfg := d.cfg.Load()
	st := d.Status(ctx)
	_, _, channel, _ := release.ParseChannelURL(cfg.Sources.Channel)
	doc := &fleet.HostDoc{
		SchemaVersion: fleet.DocSchema, App: cfg.Application, Channel: channel,
		InstanceID: st.Identity.InstanceID, AvailabilityZone: st.Identity.AvailabilityZone, Region: st.Identity.Region,
		AccountID: st.Identity.AccountID, AgentVersion: st.Agent.Version, State: string(st.State),
		HeartbeatSeconds: int64(cfg.Fleet.Heartbeat / time.Second),
		Current:          revision(st.Current), LastGood: revision(st.LastGood),
	}
	deps, _ := d.journal.Deployments(historyForDoc)
	if op := d.svc.engine.Active(); op != nil {
		// In flight, the newest in memory (the journal may lag after a
		// fault).
		if len(deps) == 0 || deps[0].ID != op.ID {
			deps = append([]api.Deployment{*op}, deps...)
		} else {
			deps[0] = *op
		}
	}
	if len(deps) > 0 {
		n := deps[0]
		doc.Operation = &fleet.Operation{DeploymentID: n.ID, Kind: string(n.Kind), Revision: n.Revision, Status: string(n.Status),
			Trigger: n.Trigger, At: lastChange(n), Error: firstLine(n.Error)}
		if n.CodeDeploy != nil {
			doc.Operation.CodeDeployID = n.CodeDeploy.DeploymentID
		}
		doc.Status = string(n.Status)
	}
	if st.State == api.StateNeedsOperator {
		doc.Status = string(api.StatusNeedsOperator)
	}
	for _, dep := range deps {
		if dep.Kind == api.KindRollback || len(dep.Rungs) > 0 {
			doc.LastRollback = rollbackOf(dep, func(id string) string { return d.revisionOf(deps, id) })
			break
		}
	}
	switch h := st.Health; {
	case h != nil:
		doc.Health = &fleet.Health{Healthy: h.Healthy, Reason: firstLine(h.Reason), AssessedAt: h.AssessedAt, Since: d.svc.obs.since(), Checks: len(cfg.Health.Checks)}
	case len(cfg.Health.Checks) == 0 && doc.Current != nil:
		// No checks: ValidateService passing is all there is to know.
		doc.Health = &fleet.Health{Healthy: true, Reason: "no health checks configured: ValidateService is the check",
			AssessedAt: doc.Current.Since, Since: doc.Current.Since}
	}
	if c := st.Checkpoints.Newest; c != nil {
		kinds := make([]string, len(c.Kinds))
		for i, k := range c.Kinds {
			kinds[i] = string(k)
		}
		doc.NewestCheckpoint = &fleet.Checkpoint{ID: c.ID, State: string(c.State), CreatedAt: c.CreatedAt, Kinds: kinds, Reason: c.Reason}
	}
	return doc
}

func revision(r *api.RevisionRef) *fleet.Revision {
	if r == nil {
		return nil
	}
	return &fleet.Revision{Revision: r.Revision, DeploymentID: r.DeploymentID, Since: r.InstalledAt}
}

// lastChange is when a record last changed status.
func lastChange(d api.Deployment) time.Time {
	switch {
	case !d.EndedAt.IsZero():
		return d.EndedAt
	case !d.StartedAt.IsZero():
		return d.StartedAt
	}
	return d.CreatedAt
}

// revisionOf is the revision of deployment id: from deps, else the journal.
func (d *Daemon) revisionOf(deps []api.Deployment, id string) string {
	if id == "" {
		return ""
	}
	for _, dep := range deps {
		if dep.ID == id {
			return dep.Revision
		}
	}
	if dep, err := d.journal.Deployment(id); err == nil {
		return dep.Revision
	}
	return id
}

// rollbackOf describes a rollback: a manual one, or a climb of the ladder.
// revision names the revision of a deployment id.
func rollbackOf(d api.Deployment, revision func(string) string) *fleet.Rollback {
	r := &fleet.Rollback{DeploymentID: d.ID, At: lastChange(d), Reason: firstLine(d.Error), Status: string(d.Status)}
	if d.Kind == api.KindRollback {
		r.To = d.Revision
		return r
	}
	r.From, r.To = d.Revision, revision(d.RolledBackTo)
	for i := len(d.Rungs) - 1; i >= 0; i-- {
		if d.Rungs[i].Status == api.StepSucceeded {
			r.Rung = string(d.Rungs[i].Name)
			break
		}
	}
	return r
}
