package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
)

// A CodeDeploy deployment on this host, told by the hooks `agentctl push
// --codedeploy-app` injects: BeforeInstall begins it (the record, the
// checkpoint), ValidateService gates it (the health assessment). In
// between, AWS's CodeDeploy agent changes the host; this agent only
// waits. A failure ends the record failed and never climbs the ladder:
// CodeDeploy fails the host's deployment and its automatic rollback
// redeploys the previous revision, so a climb here would fight it. The
// checkpoint stays for a restore by hand.

// ReasonCodeDeploy is the reason tag of a checkpoint taken in a CodeDeploy
// deployment's BeforeInstall.
const ReasonCodeDeploy = "codedeploy"

// StepCodeDeploy is the step during which CodeDeploy runs its lifecycle
// events, from BeforeInstall to ValidateService.
const StepCodeDeploy = "CodeDeploy"

// codedeployTimeout bounds the wait for ValidateService: CodeDeploy
// allows each lifecycle event at most 3600 s, and Install, AfterInstall
// and ApplicationStart lie between BeforeInstall and ValidateService.
const codedeployTimeout = 4 * time.Hour

// ErrBadCodeDeploy is a request that does not name a CodeDeploy deployment.
var ErrBadCodeDeploy = errors.New("not a CodeDeploy deployment")

// cdState connects the worker running a codedeploy record with the hooks
// that begin and gate it.
type cdState struct {
	id      string        // the record's id
	started chan error    // the checkpoint is taken (nil) or failed
	gate    chan struct{} // ValidateService came
	// ended is closed when the record has ended.
	ended chan struct{}
	// superseded names a newer CodeDeploy deployment that began first.
	superseded chan string
	// gateOnly: the record was made by the gate, without a BeforeInstall.
	gateOnly bool
}

func newCDState(id string) *cdState {
	return &cdState{id: id, started: make(chan error, 1), gate: make(chan struct{}, 1), ended: make(chan struct{}), superseded: make(chan string, 1)}
}

func checkCodeDeploy(req api.CodeDeployRequest) error {
	id := req.CodeDeploy.DeploymentID
	if id == "" || len(id) > 128 || strings.ContainsAny(id, " \t\r\n/") {
		return fmt.Errorf("%w: deployment id %q (DEPLOYMENT_ID of the hook environment)", ErrBadCodeDeploy, id)
	}
	return nil
}

// CodeDeployBegin records a CodeDeploy deployment's BeforeInstall: a
// record of kind codedeploy, queued like any operation, and its
// checkpoint. It returns once the checkpoint is taken (or failed: the
// hook then fails, and so the CodeDeploy deployment: no rollback point,
// no change). A second call for the same deployment (a retried hook)
// answers the same record. A CodeDeploy deployment still waiting for its
// ValidateService is superseded: CodeDeploy began another one here, so
// that one will never reach it.
func (e *Engine) CodeDeployBegin(ctx context.Context, req api.CodeDeployRequest) (*api.Deployment, error) {
	st, err := e.codedeployAttach(req, false)
	if err != nil {
		return nil, err
	}
	select {
	case err := <-st.started:
		// Leave the answer for a retried hook.
		st.started <- err
		if err != nil {
			return nil, err
		}
	case <-st.ended:
	case <-ctx.Done():
		return nil, fmt.Errorf("codedeploy %s: gave up waiting for the checkpoint: %w", req.CodeDeploy.DeploymentID, ctx.Err())
	}
	return e.o.Journal.Deployment(st.id)
}

// CodeDeployGate is a CodeDeploy deployment's ValidateService: the record
// assesses health and ends; the answer is the ended record (succeeded:
// the gate is open). Without a BeforeInstall before it (hooks added to a
// running deployment, a state dir moved), a record is made now, with no
// checkpoint, so the gate still runs and is recorded.
func (e *Engine) CodeDeployGate(ctx context.Context, req api.CodeDeployRequest) (*api.Deployment, error) {
	st, err := e.codedeployAttach(req, true)
	if err != nil {
		return nil, err
	}
	select {
	case st.gate <- struct{}{}:
	default:
	}
	select {
	case <-st.ended:
	case <-ctx.Done():
		return nil, fmt.Errorf("codedeploy %s: the health gate did not end in time: %w", req.CodeDeploy.DeploymentID, ctx.Err())
	}
	return e.o.Journal.Deployment(st.id)
}

// codedeployAttach finds the state of the request's CodeDeploy deployment:
// the one in memory, or that of its record in the journal (queued or
// running: the agent restarted since its BeforeInstall), or a new record.
// A begin supersedes every other CodeDeploy deployment still open.
func (e *Engine) codedeployAttach(req api.CodeDeployRequest, gate bool) (*cdState, error) {
	if err := checkCodeDeploy(req); err != nil {
		return nil, err
	}
	if err := e.refuse(); err != nil {
		return nil, err
	}
	cd := req.CodeDeploy
	open, err := e.openCodeDeploys()
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	if e.codedeploys == nil {
		e.codedeploys = map[string]*cdState{}
	}
	for id, recID := range open {
		if e.codedeploys[id] == nil {
			e.codedeploys[id] = newCDState(recID)
		}
	}
	st := e.codedeploys[cd.DeploymentID]
	var d *api.Deployment
	if st == nil {
		d = e.codedeployRecord(req)
		st = newCDState(d.ID)
		if gate {
			d.Warnings = []string{"no BeforeInstall was recorded for this CodeDeploy deployment: no checkpoint was taken before it"}
			st.gateOnly = true
		}
		e.codedeploys[cd.DeploymentID] = st
	}
	if !gate && d != nil {
		for other, o := range e.codedeploys {
			if other == cd.DeploymentID {
				continue
			}
			select {
			case o.superseded <- cd.DeploymentID:
			default:
			}
			e.o.Log.Info("codedeploy: a new deployment began before the previous one reached ValidateService",
				zap.String("previous", other), zap.String("new", cd.DeploymentID))
		}
	}
	e.mu.Unlock()
	if d == nil {
		return st, nil
	}
	if err := e.o.Journal.PutDeployment(d); err != nil {
		e.forgetCodeDeploy(cd.DeploymentID, st)
		return nil, err
	}
	e.o.Log.Info("codedeploy deployment recorded", zap.String("deployment", d.ID), zap.String("codedeploy", cd.DeploymentID), zap.Bool("gate_only", gate))
	e.bus.publish(api.Event{Type: api.EventStatus, DeploymentID: d.ID, Status: d.Status})
	e.kick()
	return st, nil
}

// openCodeDeploys are the codedeploy records not ended, by CodeDeploy id.
func (e *Engine) openCodeDeploys() (map[string]string, error) {
	deps, err := e.o.Journal.Deployments(0)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, d := range deps {
		if d.Kind == api.KindCodeDeploy && d.CodeDeploy != nil && !d.Status.Terminal() {
			out[d.CodeDeploy.DeploymentID] = d.ID
		}
	}
	return out, nil
}

func (e *Engine) codedeployRecord(req api.CodeDeployRequest) *api.Deployment {
	cd := req.CodeDeploy
	rev := req.Revision
	if rev == "" {
		rev = cd.DeploymentID
	}
	return &api.Deployment{
		ID: newID(), Kind: api.KindCodeDeploy, Revision: rev, Status: api.StatusQueued, Label: cd.DeploymentID,
		Source:  api.Source{Type: "codedeploy", Location: "codedeploy:" + cd.Application + "/" + cd.DeploymentGroup + "/" + cd.DeploymentID},
		Trigger: "codedeploy", CreatedAt: time.Now().UTC(), Steps: []api.Step{}, CodeDeploy: &cd,
	}
}

// forgetCodeDeploy drops the state of a CodeDeploy deployment, if it is st.
func (e *Engine) forgetCodeDeploy(id string, st *cdState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.codedeploys[id] == st {
		delete(e.codedeploys, id)
	}
}

// codedeployState returns the state of the record's CodeDeploy deployment,
// making one when nobody asked about it since the agent started.
func (e *Engine) codedeployState(d *api.Deployment) *cdState {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.codedeploys == nil {
		e.codedeploys = map[string]*cdState{}
	}
	id := d.CodeDeploy.DeploymentID
	if st := e.codedeploys[id]; st != nil && st.id == d.ID {
		return st
	}
	st := newCDState(d.ID)
	e.codedeploys[id] = st
	return st
}

// codedeployEnded tells the hooks waiting on a codedeploy record that it
// ended (execute calls it once the record's last transition is written).
func (e *Engine) codedeployEnded(d *api.Deployment) {
	if d.CodeDeploy == nil {
		return
	}
	st := e.codedeployState(d)
	e.forgetCodeDeploy(d.CodeDeploy.DeploymentID, st)
	close(st.ended)
}

// codedeploy runs a codedeploy record: the checkpoint, the wait for
// ValidateService, the assessment.
func (r *run) codedeploy(ctx context.Context) error {
	if r.d.CodeDeploy == nil {
		return fmt.Errorf("record %s of kind codedeploy names no CodeDeploy deployment", r.d.ID)
	}
	cdID := r.d.CodeDeploy.DeploymentID
	st := r.e.codedeployState(r.d)
	if r.d.Checkpoint == "" && !st.gateOnly {
		err := r.step(StepCheckpoint, api.EffectNone, "", "", func() (string, error) {
			kinds := r.cfg.Checkpoint.BeforeDeploy
			if len(kinds) == 0 {
				return "checkpoint.before_deploy is empty: no checkpoint", errSkipped
			}
			if r.e.o.Checkpoints == nil {
				return "", ErrNoCheckpoints
			}
			cp, err := r.e.o.Checkpoints.Create(ctx, checkpoint.Meta{Kinds: kinds, Reason: ReasonCodeDeploy, Label: cdID, Revision: r.d.Revision, Deployment: r.d.ID})
			if err != nil {
				if !r.cfg.Checkpoint.Required {
					r.d.Warnings = append(r.d.Warnings, "no checkpoint before CodeDeploy deployment "+cdID+": "+err.Error())
					return "no checkpoint (checkpoint.required is off): " + err.Error(), errSkipped
				}
				return "", fmt.Errorf("no rollback point, no CodeDeploy deployment (checkpoint.required): %w", err)
			}
			r.d.Checkpoint = cp.ID
			return "checkpoint " + cp.ID + " before CodeDeploy deployment " + cdID, nil
		})
		st.started <- err
		if err != nil {
			return err
		}
	} else {
		st.started <- nil
	}
	err := r.step(StepCodeDeploy, api.EffectHost, "", "", func() (string, error) {
		timer := time.NewTimer(codedeployTimeout)
		defer timer.Stop()
		select {
		case <-st.gate:
			return "CodeDeploy ran the lifecycle events up to ValidateService", nil
		case next := <-st.superseded:
			return "", fmt.Errorf("CodeDeploy deployment %s did not reach ValidateService on this host: CodeDeploy deployment %s began here first (a failed or stopped deployment, or its rollback)", cdID, next)
		case <-timer.C:
			return "", fmt.Errorf("CodeDeploy deployment %s did not reach ValidateService within %s of its BeforeInstall", cdID, codedeployTimeout)
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
	if err != nil {
		return err
	}
	return r.assess(ctx, "")
}

// codedeployFailed ends a failed codedeploy record: CodeDeploy, not this
// agent, rolls the host back.
func (r *run) codedeployFailed(cause error) {
	msg := fmt.Sprintf("%v; the health gate closed: CodeDeploy fails this host's deployment (with automatic rollback on, it redeploys the previous revision)", cause)
	if r.d.Checkpoint != "" {
		msg += fmt.Sprintf("; checkpoint %s holds the host as it was before (agentctl checkpoint restore %s --volumes|--root)", r.d.Checkpoint, r.d.Checkpoint)
	}
	r.d.Error = msg
	r.finish(api.StatusFailed, nil)
}
