package health

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
)

func TestHTTP200IsHealthy(t *testing.T) {
	srv := newFlipServer(t, http.StatusOK)
	res, _ := checkOne(t, httpCfg("web", srv.URL+"/health", time.Second), Deps{})
	if !res.Healthy {
		t.Fatalf("Healthy = false, output %q", res.Output)
	}
	if res.Name != "web" || res.Kind != KindHTTP || res.At.IsZero() || res.Duration <= 0 {
		t.Errorf("result = %+v, want name web, kind http, At and Duration set", res)
	}
	wantContains(t, "Output", res.Output, "HTTP 200 from "+srv.URL+"/health")
	wantContains(t, "Detail", res.Detail, "status OK")
}

func TestHTTP500IsUnhealthy(t *testing.T) {
	srv := newFlipServer(t, http.StatusInternalServerError)
	res, _ := checkOne(t, httpCfg("web", srv.URL, time.Second), Deps{})
	if res.Healthy {
		t.Fatalf("Healthy = true for HTTP 500, output %q", res.Output)
	}
	wantContains(t, "Output", res.Output, "HTTP 500 from "+srv.URL, "want 200-299")
	wantContains(t, "Detail", res.Detail, "Internal Server Error")
}

func TestHTTPBodyContains(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"status":"ok","db":"up"}`)
	}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		contains string
		healthy  bool
		output   string
	}{
		{`"db":"up"`, true, `body contains "\"db\":\"up\""`},
		{`"db":"down"`, false, `does not contain "\"db\":\"down\""`},
	} {
		t.Run(tc.contains, func(t *testing.T) {
			c := config.Check{Name: "web", HTTP: &config.HTTPCheck{URL: srv.URL, BodyContains: tc.contains, Timeout: time.Second}}
			res, _ := checkOne(t, c, Deps{})
			if res.Healthy != tc.healthy {
				t.Fatalf("Healthy = %v, want %v; output %q", res.Healthy, tc.healthy, res.Output)
			}
			wantContains(t, "Output", res.Output, tc.output)
			wantContains(t, "Detail", res.Detail, `{"status":"ok"`)
		})
	}
}

func TestHTTPBodyReadIsBounded(t *testing.T) {
	// The marker sits past the 64 KiB the check reads: it must not be seen.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Repeat("x", maxBody)+"MARKER")
	}))
	t.Cleanup(srv.Close)
	c := config.Check{Name: "web", HTTP: &config.HTTPCheck{URL: srv.URL, BodyContains: "MARKER", Timeout: time.Second}}
	res, _ := checkOne(t, c, Deps{})
	if res.Healthy {
		t.Fatalf("Healthy = true although MARKER is past the first 64 KiB; output %q", res.Output)
	}
	if len(res.Output) > 1024 {
		t.Errorf("Output is %d bytes, want a short excerpt", len(res.Output))
	}
}

func TestHTTPExpectStatusRange(t *testing.T) {
	srv := newFlipServer(t, http.StatusNotFound)
	for _, tc := range []struct {
		expect  config.StatusRange
		healthy bool
	}{
		{config.StatusRange{Lo: 200, Hi: 299}, false},
		{config.StatusRange{}, false}, // zero: the 200-299 default
		{config.StatusRange{Lo: 404, Hi: 404}, true},
		{config.StatusRange{Lo: 400, Hi: 499}, true},
	} {
		t.Run(tc.expect.String(), func(t *testing.T) {
			c := config.Check{Name: "web", HTTP: &config.HTTPCheck{URL: srv.URL, ExpectStatus: tc.expect, Timeout: time.Second}}
			res, _ := checkOne(t, c, Deps{})
			if res.Healthy != tc.healthy {
				t.Fatalf("404 with expect_status %v: Healthy = %v, want %v; output %q", tc.expect, res.Healthy, tc.healthy, res.Output)
			}
			wantContains(t, "Output", res.Output, "HTTP 404 from "+srv.URL)
		})
	}
}

func TestHTTPHangingServerFailsAtTimeout(t *testing.T) {
	srv := hangingServer(t)
	const timeout = 300 * time.Millisecond
	res, took := checkOne(t, httpCfg("web", srv.URL, timeout), Deps{})
	if res.Healthy {
		t.Fatal("Healthy = true for a server that never answers")
	}
	wantDuration(t, "check of a hanging server", took, timeout-probeSlack(timeout)-5*time.Millisecond, timeout+margin)
	wantContains(t, "Output", res.Output, "timed out after 300ms", srv.URL)
}

func TestHTTPConnectionRefused(t *testing.T) {
	addr := closedAddr(t)
	res, took := checkOne(t, httpCfg("web", "http://"+addr+"/health", 2*time.Second), Deps{})
	if res.Healthy {
		t.Fatal("Healthy = true with nothing listening")
	}
	if took > time.Second {
		t.Errorf("a refused connection took %v, want it to fail at once", took)
	}
	wantContains(t, "Output", res.Output, "GET http://"+addr+"/health", "connection refused")
}

func TestHTTPRedirects(t *testing.T) {
	var hops atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/loop":
			hops.Add(1)
			http.Redirect(w, r, "/loop", http.StatusFound)
		case "/two":
			http.Redirect(w, r, "/one", http.StatusFound)
		case "/one":
			http.Redirect(w, r, "/ok", http.StatusFound)
		default:
			fmt.Fprint(w, "fine")
		}
	}))
	t.Cleanup(srv.Close)

	res, _ := checkOne(t, httpCfg("web", srv.URL+"/two", time.Second), Deps{})
	if !res.Healthy {
		t.Errorf("two redirects to a 200: Healthy = false, output %q", res.Output)
	}
	res, _ = checkOne(t, httpCfg("web", srv.URL+"/loop", time.Second), Deps{})
	if res.Healthy {
		t.Fatal("a redirect loop: Healthy = true")
	}
	wantContains(t, "Output", res.Output, "stopped after 5 redirects")
	if n := hops.Load(); n != maxRedirects+1 {
		t.Errorf("the loop was requested %d times, want %d (the URL and 5 redirects)", n, maxRedirects+1)
	}
}

func TestHTTPDoesNotReuseConnections(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ok")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	cs := mustNew(t, []config.Check{httpCfg("web", srv.URL, time.Second)}, Deps{})
	for range 3 {
		if res := cs[0].Check(t.Context()); !res.Healthy {
			t.Fatalf("Healthy = false: %q", res.Output)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("3 checks opened %d connections, want 3 (no keep-alive reuse)", n)
	}
}

// Issue 17 item 9: a check URL's credentials never reach a result (which
// every member of the socket group, the journal and systemctl status
// see), whether the server answers, refuses the connection or hangs; the
// request itself still carries them.
func TestHTTPResultsNeverShowURLCredentials(t *testing.T) {
	authorized := make(chan bool, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ := r.BasicAuth()
		authorized <- user == "admin" && pass == "S3cretPw" && r.URL.Query().Get("token") == "hunter2"
		http.Error(w, "db_password=hunter2", http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)
	withCreds := func(base string) string {
		return strings.Replace(base, "http://", "http://admin:S3cretPw@", 1) + "/health?token=hunter2&verbose=1"
	}
	res, _ := checkOne(t, httpCfg("web", withCreds(srv.URL), time.Second), Deps{})
	if !<-authorized {
		t.Fatal("the request did not carry the URL's credentials")
	}
	wantContains(t, "Output", res.Output, "http://admin:xxxxx@", "token=xxxxx", "verbose=xxxxx")
	// Refused connection and a server that never answers.
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	refused, _ := checkOne(t, httpCfg("web", withCreds(closed.URL), time.Second), Deps{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(hang.Close)
	hung, _ := checkOne(t, httpCfg("web", withCreds(hang.URL), 200*time.Millisecond), Deps{})
	for _, r := range []api.CheckResult{res, refused, hung} {
		for _, secret := range []string{"S3cretPw", "hunter2"} {
			if strings.Contains(r.Output, secret) {
				t.Errorf("Output shows %q: %q", secret, r.Output)
			}
		}
	}
	// The body is detail, for root only.
	wantContains(t, "Detail", res.Detail, "db_password=hunter2")
}
