// Package server is the local API: HTTP on a unix socket, authorized by the
// kernel's peer credentials, closed behind a readiness gate until the agent
// knows who it is.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/securepath"
)

// Options configure a Server.
type Options struct {
	SocketPath string
	Group      Group
	Version    string
	Log        *zap.Logger
	// Limits bound what users other than root hold (zero: DefaultLimits).
	Limits Limits
}

// Server is the socket API server.
type Server struct {
	opts    Options
	backend Backend
	mux     *http.ServeMux
	http    *http.Server
	ln      net.Listener
	ready   atomic.Bool
	phase   atomic.Value // string: what the agent is doing while not ready
	limit   atomic.Pointer[limit]
	selfUID int
	limits  Limits
	streams counter
}

// New returns a server; call Listen then Serve.
func New(opts Options, backend Backend) *Server {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	s := &Server{opts: opts, backend: backend, mux: http.NewServeMux(), selfUID: os.Getuid(), limits: opts.Limits.withDefaults()}
	s.phase.Store("starting")
	s.routes()
	s.http = &http.Server{
		Handler:           s.middleware(s.mux),
		ReadHeaderTimeout: 5 * time.Second,
		// A client that keeps an idle connection open must not hold a
		// goroutine and a descriptor of the daemon forever.
		IdleTimeout: 30 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			var p *Peer
			var err error
			if lc, ok := c.(*limitedConn); ok {
				p, err = lc.peer, lc.peerErr
			} else {
				p, err = peerOf(c)
			}
			if err != nil {
				s.opts.Log.Warn("peer credentials unavailable; connection will be refused", zap.Error(err))
				return ctx
			}
			return WithPeer(ctx, p)
		},
	}
	return s
}

// SetReady opens or closes the readiness gate; phase says what the agent is
// doing while it is closed.
func (s *Server) SetReady(ready bool, phase string) {
	s.phase.Store(phase)
	s.ready.Store(ready)
}

// limit lets only some routes through (Limit).
type limit struct {
	allow map[string]bool // "METHOD /path"
	msg   string
}

// Limit lets only the routes in allow ("GET /v1/status") through and
// answers every other request 409 with msg: an agent whose journal is
// damaged answers status and doctor, and refuses what it cannot record.
func (s *Server) Limit(msg string, allow ...string) {
	l := &limit{allow: map[string]bool{}, msg: msg}
	for _, a := range allow {
		l.allow[a] = true
	}
	s.limit.Store(l)
}

// Handle registers an extra route, for parts of the daemon that own their
// own endpoints.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// middleware applies, in order: the version header, the browser refusal,
// peer-credential authorization, and the readiness gate.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.HeaderServerVersion, s.opts.Version)
		// A browser can be tricked into talking to a local socket through a
		// proxy; browsers always send Origin or Referer, CLIs never do.
		if r.Header.Get("Origin") != "" || r.Header.Get("Referer") != "" {
			WriteError(w, http.StatusForbidden, api.CodeBrowserRequest, "requests carrying Origin or Referer headers are refused")
			return
		}
		p, ok := PeerFrom(r.Context())
		if !ok {
			WriteError(w, http.StatusForbidden, api.CodeDenied, "peer credentials unavailable")
			return
		}
		if msg := s.authorize(p, r.Method); msg != "" {
			s.opts.Log.Info("request denied", zap.Int("uid", p.UID), zap.Int("pid", p.PID), zap.String("method", r.Method), zap.String("path", r.URL.Path))
			WriteError(w, http.StatusForbidden, api.CodeDenied, msg)
			return
		}
		if !s.ready.Load() {
			WriteError(w, http.StatusServiceUnavailable, api.CodeStarting, fmt.Sprintf("the agent is not ready: %s", s.phase.Load()))
			return
		}
		if l := s.limit.Load(); l != nil && !l.allow[r.Method+" "+r.URL.Path] {
			WriteError(w, http.StatusConflict, api.CodeConflict, l.msg)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authorize returns "" when p may use method, or the reason it may not.
// Root (and the daemon's own user) may do everything; members of the
// socket group may read; everyone else is refused.
func (s *Server) authorize(p *Peer, method string) string {
	if s.isPrivileged(p) {
		return ""
	}
	if p.InGroup(s.opts.Group.GID) {
		if method == http.MethodGet || method == http.MethodHead {
			return ""
		}
		return fmt.Sprintf("members of group %s may only read; run this as root (sudo agentctl ...)", s.opts.Group.Name)
	}
	return fmt.Sprintf("uid %d is neither root nor a member of group %s", p.UID, s.opts.Group.Name)
}

// Listen creates the socket: its directory 0750 and the socket 0660, both
// group-owned by the socket group. Every directory on the socket's path
// must be root's and writable by root only (securepath), so that no user
// can make the agent chmod or chown something else, or put their own
// socket where agentctl looks; modes and groups are set through
// descriptors, never by a path a link could redirect. A socket file left
// by a dead agent is replaced; one that still answers is not.
func (s *Server) Listen() error {
	path := s.opts.SocketPath
	dir, err := securepath.Open(filepath.Dir(path), 0o750)
	if err != nil {
		return fmt.Errorf("server: socket directory: %w", err)
	}
	defer dir.Close()
	if err := dir.Chmod(0o750); err != nil {
		return fmt.Errorf("server: chmod socket dir %s: %w", dir.Name(), err)
	}
	if err := dir.Chown(-1, s.opts.Group.GID); err != nil {
		return fmt.Errorf("server: chown socket dir %s: %w", dir.Name(), err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("server: %s exists and is not a socket; remove it or choose another socket path", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return fmt.Errorf("server: another agent is answering on %s; stop it first (systemctl stop rollback-agent)", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("server: probe existing socket %s: %w", path, err)
		}
		s.opts.Log.Info("replacing stale socket", zap.String("socket", path))
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("server: remove stale socket %s: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", path, err)
	}
	if err := securepath.SetModeGroup(dir, filepath.Base(path), unix.S_IFSOCK, 0o660, s.opts.Group.GID); err != nil {
		ln.Close()
		return fmt.Errorf("server: %w", err)
	}
	s.ln = newLimitListener(ln, s)
	return nil
}

// isPrivileged reports whether p is root or the agent's own user, who may
// do everything and are never held to Limits.
func (s *Server) isPrivileged(p *Peer) bool {
	return p != nil && (p.UID == 0 || p.UID == s.selfUID)
}

// Serve answers requests until Shutdown.
func (s *Server) Serve() error {
	err := s.http.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for requests in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	// The listener unlinks the socket file when it closes.
	err := s.http.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.http.Close()
	}
	return err
}

// WriteJSON writes v as the body with status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError writes an api.ErrorBody.
func WriteError(w http.ResponseWriter, code int, errCode, msg string) {
	WriteJSON(w, code, api.ErrorBody{SchemaVersion: api.SchemaVersion, Error: msg, Code: errCode})
}
