package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// peers is the shared test bed (moto) of this test binary, started by the
// first test that needs it.
var peers testbed.Lazy

func TestMain(m *testing.M) {
	code := m.Run()
	peers.Close()
	os.Exit(code)
}

// margin is how late past its deadline a check or an assessment may
// return: scheduling noise under -race on a busy machine, nothing more.
const margin = 250 * time.Millisecond

// mustNew builds checkers and fails the test on error.
func mustNew(t *testing.T, checks []config.Check, deps Deps) []Checker {
	t.Helper()
	cs, err := New(checks, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return cs
}

// checkOne builds a single checker and runs it once, returning the result
// and how long Check took.
func checkOne(t *testing.T, c config.Check, deps Deps) (api.CheckResult, time.Duration) {
	t.Helper()
	cs := mustNew(t, []config.Check{c}, deps)
	start := time.Now()
	res := cs[0].Check(context.Background())
	return res, time.Since(start)
}

func httpCfg(name, url string, timeout time.Duration) config.Check {
	return config.Check{Name: name, HTTP: &config.HTTPCheck{URL: url, Timeout: timeout}}
}

// flipServer is a real HTTP server whose answer a test changes while
// checks run against it.
type flipServer struct {
	*httptest.Server
	status   atomic.Int32
	requests atomic.Int32
	// first is when the first request arrived (unix nanos), 0 before.
	first atomic.Int64
	// pattern, when set, overrides status per request: the n-th request
	// (from 0) gets pattern[n % len(pattern)].
	pattern []int32
}

func newFlipServer(t *testing.T, status int) *flipServer {
	t.Helper()
	return newPatternServer(t, status, nil)
}

func newPatternServer(t *testing.T, status int, pattern []int32) *flipServer {
	t.Helper()
	f := &flipServer{pattern: pattern}
	f.status.Store(int32(status))
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := f.requests.Add(1) - 1
		f.first.CompareAndSwap(0, time.Now().UnixNano())
		code := f.status.Load()
		if len(f.pattern) > 0 {
			code = f.pattern[int(n)%len(f.pattern)]
		}
		w.WriteHeader(int(code))
		_, _ = w.Write([]byte("status " + http.StatusText(int(code))))
	}))
	t.Cleanup(f.Close)
	return f
}

// hangingServer accepts requests and never answers them until the test
// ends.
func hangingServer(t *testing.T) *httptest.Server {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	// Cleanups run last-in first-out: release the handlers, then close.
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	return srv
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func wantContains(t *testing.T, what, got string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(got, s) {
			t.Errorf("%s = %q, want it to contain %q", what, got, s)
		}
	}
}

// wantDuration fails unless lo <= d <= hi.
func wantDuration(t *testing.T, what string, d, lo, hi time.Duration) {
	t.Helper()
	if d < lo || d > hi {
		t.Errorf("%s took %v, want between %v and %v", what, d, lo, hi)
	}
}
