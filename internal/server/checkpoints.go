package server

import (
	"net/http"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

func (s *Server) checkpointRoutes() {
	p := api.PathCheckpoints
	s.mux.HandleFunc("GET "+p, func(w http.ResponseWriter, r *http.Request) {
		list, err := s.backend.Checkpoints(r.Context())
		if err != nil {
			writeErr(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, list)
	})
	s.mux.HandleFunc("POST "+p, func(w http.ResponseWriter, r *http.Request) {
		var req api.CheckpointRequest
		if err := decodeBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		c, err := s.backend.CreateCheckpoint(r.Context(), req)
		if err != nil {
			writeErr(w, err)
			return
		}
		WriteJSON(w, http.StatusCreated, api.CheckpointBody{SchemaVersion: api.SchemaVersion, Checkpoint: *c})
	})
	s.mux.HandleFunc("POST "+p+"/prune", func(w http.ResponseWriter, r *http.Request) {
		var req api.PruneRequest
		if err := decodeBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		rep, err := s.backend.PruneCheckpoints(r.Context(), req.DryRun)
		if err != nil {
			writeErr(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, rep)
	})
	one := func(fn func(w http.ResponseWriter, r *http.Request, id string) (*api.Checkpoint, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c, err := fn(w, r, r.PathValue("id"))
			if err != nil {
				writeErr(w, err)
				return
			}
			WriteJSON(w, http.StatusOK, api.CheckpointBody{SchemaVersion: api.SchemaVersion, Checkpoint: *c})
		}
	}
	s.mux.HandleFunc("GET "+p+"/{id}", one(func(_ http.ResponseWriter, r *http.Request, id string) (*api.Checkpoint, error) {
		return s.backend.Checkpoint(r.Context(), id)
	}))
	s.mux.HandleFunc("POST "+p+"/{id}/pin", one(func(_ http.ResponseWriter, r *http.Request, id string) (*api.Checkpoint, error) {
		return s.backend.PinCheckpoint(r.Context(), id, true)
	}))
	s.mux.HandleFunc("POST "+p+"/{id}/unpin", one(func(_ http.ResponseWriter, r *http.Request, id string) (*api.Checkpoint, error) {
		return s.backend.PinCheckpoint(r.Context(), id, false)
	}))
	s.mux.HandleFunc("DELETE "+p+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.backend.DeleteCheckpoint(r.Context(), r.PathValue("id")); err != nil {
			writeErr(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, api.DeploymentRef{SchemaVersion: api.SchemaVersion, ID: r.PathValue("id"), Status: "deleted"})
	})
	s.mux.HandleFunc("POST "+p+"/{id}/restore", func(w http.ResponseWriter, r *http.Request) {
		var req api.RestoreRequest
		if err := decodeBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		d, err := s.backend.RestoreCheckpoint(r.Context(), r.PathValue("id"), req)
		if err != nil {
			writeErr(w, err)
			return
		}
		WriteJSON(w, http.StatusAccepted, api.DeploymentRef{SchemaVersion: api.SchemaVersion, ID: d.ID, Status: d.Status})
	})
}
