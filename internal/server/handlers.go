package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// Backend is what the handlers ask; the daemon implements it.
type Backend interface {
	Status(ctx context.Context) api.Status
	Deploy(ctx context.Context, req api.DeployRequest) (*api.Deployment, error)
	Rollback(ctx context.Context, req api.RollbackRequest) (*api.Deployment, error)
	Deployments(limit int) ([]api.Deployment, error)
	Deployment(id string) (*api.Deployment, error)
	Subscribe(id string) (<-chan api.Event, func())
	// LogDir is the directory holding a deployment's hook output files.
	LogDir(id string) string
	CheckpointBackend
	// Health runs every check once, now.
	Health(ctx context.Context) (*api.HealthReport, error)
	// Guard takes the checkpoint of a guarded change and returns when the
	// command may run; GuardDone reports how it ended.
	Guard(ctx context.Context, req api.GuardRequest) (*api.GuardStarted, error)
	GuardDone(ctx context.Context, id string, done api.GuardDone) error
	// Metrics is the Prometheus text exposition.
	Metrics(ctx context.Context) string
	// Acknowledge clears the trouble of that kind the status reports.
	Acknowledge(ctx context.Context, trouble string) error
}

// CheckpointBackend is the checkpoint part of the API.
type CheckpointBackend interface {
	Checkpoints(ctx context.Context) (*api.CheckpointList, error)
	CreateCheckpoint(ctx context.Context, req api.CheckpointRequest) (*api.Checkpoint, error)
	Checkpoint(ctx context.Context, id string) (*api.Checkpoint, error)
	PinCheckpoint(ctx context.Context, id string, pin bool) (*api.Checkpoint, error)
	DeleteCheckpoint(ctx context.Context, id string) error
	PruneCheckpoints(ctx context.Context, dryRun bool) (*api.PruneReport, error)
	RestoreCheckpoint(ctx context.Context, id string, req api.RestoreRequest) (*api.Deployment, error)
}

// Error gives a backend error its HTTP status and code.
type Error struct {
	Status int
	Code   string
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// BadRequest marks err as the caller's mistake (400).
func BadRequest(err error) error {
	return &Error{Status: http.StatusBadRequest, Code: api.CodeBadRequest, Err: err}
}

// NotFound marks err as an unknown resource (404).
func NotFound(err error) error {
	return &Error{Status: http.StatusNotFound, Code: api.CodeNotFound, Err: err}
}

// Conflict marks err as a clash with the current state (409).
func Conflict(err error) error {
	return &Error{Status: http.StatusConflict, Code: api.CodeConflict, Err: err}
}

func writeErr(w http.ResponseWriter, err error) {
	var e *Error
	if errors.As(err, &e) {
		WriteError(w, e.Status, e.Code, e.Error())
		return
	}
	WriteError(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
}

// maxBody bounds request bodies: the API takes small JSON documents.
const maxBody = 1 << 20

func decodeBody(r *http.Request, v any) error {
	// A nil ResponseWriter is allowed: the limit still holds, only the
	// hint to close the connection is lost, and bodies here are one-shot.
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &Error{Status: http.StatusRequestEntityTooLarge, Code: api.CodeTooLarge,
				Err: fmt.Errorf("request body too large: the API takes at most %d bytes (1 MiB)", maxBody)}
		}
		return BadRequest(fmt.Errorf("request body: %w", err))
	}
	return nil
}

// allowedMethods lists the methods the API serves on r's path, found by
// asking the mux about the same path with each method; the catch-all "/"
// pattern means "none".
func (s *Server) allowedMethods(r *http.Request) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "/" && pattern != "" {
			out = append(out, m)
		}
	}
	return out
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, r *http.Request) {
		st := s.backend.Status(r.Context())
		if !s.privileged(r) {
			st = st.WithoutDetails()
		}
		WriteJSON(w, http.StatusOK, st)
	})
	s.mux.HandleFunc("POST "+api.PathDeployments, s.postDeployment)
	s.mux.HandleFunc("GET "+api.PathDeployments, s.listDeployments)
	s.mux.HandleFunc("GET "+api.PathDeployments+"/{id}", s.getDeployment)
	s.mux.HandleFunc("GET "+api.PathDeployments+"/{id}/log", s.getLog)
	s.mux.HandleFunc("POST "+api.PathRollback, s.postRollback)
	s.mux.HandleFunc("GET "+api.PathEvents, s.events)
	s.checkpointRoutes()
	s.mux.HandleFunc("GET "+api.PathMetrics, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		io.WriteString(w, s.backend.Metrics(r.Context()))
	})
	s.mux.HandleFunc("GET "+api.PathHealth, func(w http.ResponseWriter, r *http.Request) {
		rep, err := s.backend.Health(r.Context())
		if err != nil {
			writeErr(w, err)
			return
		}
		if !s.privileged(r) {
			withheld := rep.WithoutDetails()
			rep = &withheld
		}
		WriteJSON(w, http.StatusOK, rep)
	})
	s.mux.HandleFunc("POST "+api.PathAcknowledge, func(w http.ResponseWriter, r *http.Request) {
		var req api.AcknowledgeRequest
		if err := decodeBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		if err := s.backend.Acknowledge(r.Context(), req.Trouble); err != nil {
			writeErr(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, s.backend.Status(r.Context()))
	})
	s.mux.HandleFunc("POST "+api.PathGuards, func(w http.ResponseWriter, r *http.Request) {
		var req api.GuardRequest
		if err := decodeBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		g, err := s.backend.Guard(r.Context(), req)
		if err != nil {
			writeErr(w, err)
			return
		}
		WriteJSON(w, http.StatusCreated, g)
	})
	s.mux.HandleFunc("POST "+api.PathGuards+"/{id}/done", func(w http.ResponseWriter, r *http.Request) {
		var req api.GuardDone
		if err := decodeBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		if err := s.backend.GuardDone(r.Context(), r.PathValue("id"), req); err != nil {
			writeErr(w, err)
			return
		}
		WriteJSON(w, http.StatusAccepted, api.DeploymentRef{SchemaVersion: api.SchemaVersion, ID: r.PathValue("id"), Status: "assessing"})
	})
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// The catch-all hides ServeMux's own 405, so answer it here.
		if allowed := s.allowedMethods(r); len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			WriteError(w, http.StatusMethodNotAllowed, api.CodeMethod,
				fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allowed, ", ")))
			return
		}
		WriteError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no such API path: %s %s", r.Method, r.URL.Path))
	})
}

func (s *Server) postDeployment(w http.ResponseWriter, r *http.Request) {
	var req api.DeployRequest
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	d, err := s.backend.Deploy(r.Context(), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	WriteJSON(w, http.StatusAccepted, api.DeploymentRef{SchemaVersion: api.SchemaVersion, ID: d.ID, Status: d.Status})
}

func (s *Server) postRollback(w http.ResponseWriter, r *http.Request) {
	var req api.RollbackRequest
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	d, err := s.backend.Rollback(r.Context(), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	WriteJSON(w, http.StatusAccepted, api.DeploymentRef{SchemaVersion: api.SchemaVersion, ID: d.ID, Status: d.Status})
}

func (s *Server) listDeployments(w http.ResponseWriter, r *http.Request) {
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			WriteError(w, http.StatusBadRequest, api.CodeBadRequest, "limit: want a number >= 0")
			return
		}
		limit = n
	}
	deps, err := s.backend.Deployments(limit)
	if err != nil {
		writeErr(w, err)
		return
	}
	if deps == nil {
		deps = []api.Deployment{}
	}
	if !s.privileged(r) {
		for i := range deps {
			deps[i] = deps[i].WithoutDetails()
		}
	}
	WriteJSON(w, http.StatusOK, api.DeploymentList{SchemaVersion: api.SchemaVersion, Deployments: deps})
}

func (s *Server) getDeployment(w http.ResponseWriter, r *http.Request) {
	d, err := s.backend.Deployment(r.PathValue("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	dep := *d
	if !s.privileged(r) {
		dep = dep.WithoutDetails()
	}
	WriteJSON(w, http.StatusOK, api.DeploymentBody{SchemaVersion: api.SchemaVersion, Deployment: dep})
}

// getLog serves a deployment's hook output as text: one event's file, or
// all of them in the order they were written. follow=1 keeps the stream
// open, sending what is appended, until the deployment ends.
func (s *Server) getLog(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, err := s.backend.Deployment(id)
	if err != nil {
		writeErr(w, err)
		return
	}
	dir := s.backend.LogDir(d.ID)
	files, err := logFiles(dir, r.URL.Query().Get("event"))
	if err != nil {
		writeErr(w, err)
		return
	}
	follow := r.URL.Query().Get("follow") == "1"
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	offsets := map[string]int64{}
	for {
		for _, f := range files {
			offsets[f] = copyFrom(w, filepath.Join(dir, f), offsets[f], len(files) > 1 && offsets[f] == 0, f)
		}
		if fl != nil {
			fl.Flush()
		}
		if !follow {
			return
		}
		cur, err := s.backend.Deployment(id)
		if err != nil || cur.Status.Terminal() {
			for _, f := range files {
				offsets[f] = copyFrom(w, filepath.Join(dir, f), offsets[f], false, f)
			}
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		if ev := r.URL.Query().Get("event"); ev == "" {
			if more, err := logFiles(dir, ""); err == nil {
				files = more
			}
		}
	}
}

// logFiles lists the output files of a deployment, in creation order.
func logFiles(dir, event string) ([]string, error) {
	if event != "" {
		name := filepath.Base(event)
		if !strings.HasSuffix(name, ".log") {
			name += ".log"
		}
		return []string{name}, nil
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	type f struct {
		name string
		t    time.Time
	}
	var fs []f
	for _, e := range ents {
		// scripts.log repeats every event's output in CodeDeploy's format
		// (for log shippers); it is shown when asked for (event=scripts).
		if e.Name() == "scripts.log" {
			continue
		}
		if info, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".log") {
			fs = append(fs, f{e.Name(), info.ModTime()})
		}
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].t.Before(fs[j].t) })
	out := make([]string, len(fs))
	for i, x := range fs {
		out[i] = x.name
	}
	return out, nil
}

func copyFrom(w io.Writer, path string, off int64, header bool, name string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return off
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return off
	}
	if header {
		fmt.Fprintf(w, "==> %s <==\n", name)
	}
	n, _ := io.Copy(w, f)
	return off + n
}

// eventEncoder writes one event of a stream.
type eventEncoder func(api.Event) error

func (e eventEncoder) Encode(ev api.Event) error { return e(ev) }

// privileged reports whether the request comes from root (or the agent's
// own user): others, members of the socket group, get no check details.
func (s *Server) privileged(r *http.Request) bool {
	p, ok := PeerFrom(r.Context())
	return ok && (p.UID == 0 || p.UID == s.selfUID)
}

// events streams NDJSON: for ?deployment=ID a snapshot of the record
// first, then its events until it ends; without it, every event.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("deployment")
	ch, stop := s.backend.Subscribe(id)
	defer stop()
	var snap *api.Deployment
	if id != "" {
		d, err := s.backend.Deployment(id)
		if err != nil {
			writeErr(w, err)
			return
		}
		snap = d
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriter(w)
	js := json.NewEncoder(bw)
	privileged := s.privileged(r)
	enc := eventEncoder(func(ev api.Event) error {
		if !privileged {
			ev = ev.WithoutDetails()
		}
		return js.Encode(ev)
	})
	fl, _ := w.(http.Flusher)
	flush := func() bool {
		if err := bw.Flush(); err != nil {
			return false
		}
		if fl != nil {
			fl.Flush()
		}
		return true
	}
	if snap != nil {
		enc.Encode(api.Event{SchemaVersion: api.SchemaVersion, Time: time.Now().UTC(), Type: api.EventSnapshot, DeploymentID: snap.ID, Status: snap.Status, Deployment: snap})
		if !flush() || snap.Status.Terminal() {
			return
		}
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	lastWrite := time.Now()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			// The bus drops events for slow readers: look at the record so
			// a stream never outlives its deployment.
			if id != "" {
				if d, err := s.backend.Deployment(id); err == nil && d.Status.Terminal() {
					enc.Encode(api.Event{SchemaVersion: api.SchemaVersion, Time: time.Now().UTC(), Type: api.EventSnapshot, DeploymentID: d.ID, Status: d.Status, Deployment: d})
					flush()
					return
				}
			}
			// A blank line now and then keeps idle timeouts from closing a
			// quiet stream; NDJSON readers skip it.
			if time.Since(lastWrite) > 15*time.Second {
				bw.WriteString("\n")
				if !flush() {
					return
				}
				lastWrite = time.Now()
			}
		case ev, ok := <-ch:
			if !ok {
				return
			}
			if err := enc.Encode(ev); err != nil || !flush() {
				return
			}
			lastWrite = time.Now()
			if id != "" && ev.Type == api.EventStatus && ev.Status.Terminal() {
				return
			}
		}
	}
}
