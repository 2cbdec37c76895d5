package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/server"
)

// codedeployHandler answers POST /v1/codedeploy/begin and /gate: the hooks
// `agentctl push --codedeploy-app` injects call them (through `agentctl
// codedeploy`) from inside a CodeDeploy deployment. Both answer the
// record; the gate's has ended (succeeded: the gate is open).
func (d *Daemon) codedeployHandler(call func(context.Context, api.CodeDeployRequest) (*api.Deployment, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req api.CodeDeployRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			server.WriteError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("request body: %v", err))
			return
		}
		dep, err := call(r.Context(), req)
		switch {
		case errors.Is(err, engine.ErrBadCodeDeploy):
			server.WriteError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
		case errors.Is(err, engine.ErrStopped):
			server.WriteError(w, http.StatusServiceUnavailable, api.CodeUnavailable, err.Error())
		case err != nil:
			server.WriteError(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
		default:
			server.WriteJSON(w, http.StatusOK, api.DeploymentBody{SchemaVersion: api.SchemaVersion, Deployment: *dep})
		}
	})
}

// codedeployRoutes registers the CodeDeploy endpoints.
func (d *Daemon) codedeployRoutes(eng *engine.Engine) {
	d.srv.Handle("POST "+api.PathCodeDeployBegin, d.codedeployHandler(eng.CodeDeployBegin))
	d.srv.Handle("POST "+api.PathCodeDeployGate, d.codedeployHandler(eng.CodeDeployGate))
}
