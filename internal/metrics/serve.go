package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
)

// ContentType is the text exposition format's (version 0.0.4).
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Listener serves GET /metrics over HTTP (metrics.listen).
type Listener struct {
	srv *http.Server
	ln  net.Listener
}

// Listen binds addr; Serve answers on it. The config has checked that a
// non-loopback address was asked for explicitly.
func Listen(addr string, text func(context.Context) string, log *zap.Logger) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "only GET /metrics is served here", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", ContentType)
		_, _ = w.Write([]byte(text(r.Context())))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "only GET /metrics is served here", http.StatusNotFound)
	})
	l := &Listener{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second,
		ErrorLog: zap.NewStdLog(log)}}
	return l, nil
}

// Addr is the address bound (a :0 port resolved).
func (l *Listener) Addr() string { return l.ln.Addr().String() }

// Serve answers until Close.
func (l *Listener) Serve() error {
	if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics listener %s: %w", l.Addr(), err)
	}
	return nil
}

// Close stops the listener.
func (l *Listener) Close(ctx context.Context) error { return l.srv.Shutdown(ctx) }

// WriteTextfile replaces path with text atomically: a temporary file in
// the same directory, renamed over it, so the collector never reads half
// a file (node_exporter's textfile collector documentation asks for
// exactly this).
func WriteTextfile(path, text string) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("metrics.textfile: %w", err)
	}
	tmp := f.Name()
	_, err = f.WriteString(text)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("metrics.textfile %s: %w", path, err)
	}
	return nil
}
