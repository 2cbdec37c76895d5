package health

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
)

// fastPolicy is a policy in tens of milliseconds.
func fastPolicy() Policy {
	return Policy{Grace: 0, Interval: 20 * time.Millisecond, AssessTimeout: 3 * time.Second, SuccessesNeeded: 2, FailuresAllowed: 3}
}

// roundLog records onRound calls.
type roundLog struct {
	mu     sync.Mutex
	rounds []int
	oks    []bool
}

func (l *roundLog) record(round int, results []api.CheckResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ok := true
	for _, r := range results {
		ok = ok && r.Healthy
	}
	l.rounds = append(l.rounds, round)
	l.oks = append(l.oks, ok)
}

func webChecker(t *testing.T, url string, timeout time.Duration) []Checker {
	t.Helper()
	return mustNew(t, []config.Check{httpCfg("web", url, timeout)}, Deps{})
}

func TestAssessHealthyAfterSuccessesNeeded(t *testing.T) {
	srv := newFlipServer(t, http.StatusOK)
	p := fastPolicy()
	p.SuccessesNeeded = 3
	var log roundLog
	a := Assess(t.Context(), webChecker(t, srv.URL, time.Second), p, log.record)
	if !a.Healthy || a.Interrupted {
		t.Fatalf("Healthy = %v, Interrupted = %v, reason %q", a.Healthy, a.Interrupted, a.Reason)
	}
	if a.Reason != "healthy: 3 passing rounds in a row" || a.Rounds != 3 {
		t.Errorf("Reason = %q, Rounds = %d; want 3 passing rounds", a.Reason, a.Rounds)
	}
	if got := len(log.rounds); got != 3 || log.rounds[0] != 1 || log.rounds[2] != 3 {
		t.Errorf("onRound saw rounds %v, want [1 2 3]", log.rounds)
	}
	if n := srv.requests.Load(); n != 3 {
		t.Errorf("server got %d requests, want 3", n)
	}
	// Three rounds 20ms apart: at least two intervals.
	wantDuration(t, "assessment", a.Ended.Sub(a.Started), 2*p.Interval, 2*p.Interval+margin)
	if len(a.Last) != 1 || !a.Last[0].Healthy || a.Last[0].Name != "web" {
		t.Errorf("Last = %+v", a.Last)
	}
}

func TestAssessUnhealthyAfterFailuresAllowed(t *testing.T) {
	srv := newFlipServer(t, http.StatusInternalServerError)
	p := fastPolicy()
	a := Assess(t.Context(), webChecker(t, srv.URL, time.Second), p, nil)
	if a.Healthy || a.Interrupted {
		t.Fatalf("Healthy = %v, Interrupted = %v, reason %q", a.Healthy, a.Interrupted, a.Reason)
	}
	want := "unhealthy: check web failed 3 rounds in a row: HTTP 500 from " + srv.URL + " (want 200-299)"
	if a.Reason != want || a.Rounds != 3 {
		t.Errorf("Reason = %q, Rounds = %d\nwant %q after 3 rounds", a.Reason, a.Rounds, want)
	}
}

func TestAssessStreaksReset(t *testing.T) {
	// Two failures (one short of unhealthy), then the app comes up.
	srv := newPatternServer(t, 0, []int32{500, 500, 200, 200, 200})
	a := Assess(t.Context(), webChecker(t, srv.URL, time.Second), fastPolicy(), nil)
	if !a.Healthy || a.Rounds != 4 {
		t.Fatalf("Healthy = %v after %d rounds (%q), want healthy after 4", a.Healthy, a.Rounds, a.Reason)
	}
}

func TestAssessFlappingEndsAtAssessTimeout(t *testing.T) {
	srv := newPatternServer(t, 0, []int32{200, 500})
	p := fastPolicy()
	p.AssessTimeout = 300 * time.Millisecond
	var log roundLog
	a := Assess(t.Context(), webChecker(t, srv.URL, time.Second), p, log.record)
	if a.Healthy || a.Interrupted {
		t.Fatalf("Healthy = %v, Interrupted = %v, reason %q", a.Healthy, a.Interrupted, a.Reason)
	}
	if !strings.HasPrefix(a.Reason, "unhealthy: not healthy within assess_timeout 300ms (") {
		t.Errorf("Reason = %q, want the assess_timeout reason", a.Reason)
	}
	wantDuration(t, "flapping assessment", a.Ended.Sub(a.Started), p.AssessTimeout, p.AssessTimeout+margin)
	if a.Rounds < 5 {
		t.Errorf("Rounds = %d, want the flapping to go on for many rounds", a.Rounds)
	}
	for i := 1; i < len(log.oks); i++ {
		if log.oks[i] == log.oks[i-1] {
			t.Fatalf("rounds %v passed %v: want alternating", log.rounds, log.oks)
		}
	}
}

func TestAssessWaitsGrace(t *testing.T) {
	srv := newFlipServer(t, http.StatusOK)
	p := fastPolicy()
	p.Grace = 150 * time.Millisecond
	a := Assess(t.Context(), webChecker(t, srv.URL, time.Second), p, nil)
	if !a.Healthy {
		t.Fatalf("Healthy = false: %q", a.Reason)
	}
	first := time.Unix(0, srv.first.Load())
	if d := first.Sub(a.Started); d < p.Grace {
		t.Errorf("first request %v after the start, want no earlier than the %v grace", d, p.Grace)
	}
}

func TestAssessGraceLongerThanTimeout(t *testing.T) {
	srv := newFlipServer(t, http.StatusOK)
	p := fastPolicy()
	p.Grace, p.AssessTimeout = time.Minute, 100*time.Millisecond
	a := Assess(t.Context(), webChecker(t, srv.URL, time.Second), p, nil)
	if a.Healthy || a.Rounds != 0 || srv.requests.Load() != 0 {
		t.Fatalf("Healthy = %v, Rounds = %d, requests = %d; want unhealthy with no round", a.Healthy, a.Rounds, srv.requests.Load())
	}
	if a.Reason != "unhealthy: not healthy within assess_timeout 100ms (no round completed; grace 60s)" {
		t.Errorf("Reason = %q", a.Reason)
	}
	wantDuration(t, "assessment", a.Ended.Sub(a.Started), p.AssessTimeout, p.AssessTimeout+margin)
}

func TestAssessTimeoutCutsAHangingRound(t *testing.T) {
	srv := hangingServer(t)
	p := fastPolicy()
	p.AssessTimeout = 200 * time.Millisecond
	a := Assess(t.Context(), webChecker(t, srv.URL, 5*time.Second), p, nil)
	if a.Healthy || a.Rounds != 0 {
		t.Fatalf("Healthy = %v, Rounds = %d, reason %q", a.Healthy, a.Rounds, a.Reason)
	}
	wantDuration(t, "assessment", a.Ended.Sub(a.Started), p.AssessTimeout, p.AssessTimeout+margin)
	wantContains(t, "Reason", a.Reason, "unhealthy: not healthy within assess_timeout 200ms")
	if len(a.Last) != 1 || a.Last[0].Healthy || !strings.HasPrefix(a.Last[0].Output, "interrupted before the check finished") {
		t.Errorf("Last = %+v, want the cut round's interrupted result", a.Last)
	}
}

func TestAssessNoChecksIsHealthyAtOnce(t *testing.T) {
	p := fastPolicy()
	p.Grace = time.Minute
	start := time.Now()
	a := Assess(t.Context(), nil, p, nil)
	if !a.Healthy || a.Reason != "healthy: no health checks are configured" || a.Rounds != 0 {
		t.Fatalf("Assessment = %+v", a)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("took %v, want at once", d)
	}
}

func TestAssessCancelReturnsPromptly(t *testing.T) {
	// A round hangs on the server when the context ends: Assess must not
	// wait for the check's 5s timeout.
	srv := hangingServer(t)
	p := fastPolicy()
	p.AssessTimeout = time.Minute
	checks := webChecker(t, srv.URL, 5*time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	start := time.Now()
	time.AfterFunc(100*time.Millisecond, cancel)
	a := Assess(ctx, checks, p, nil)
	if a.Healthy || !a.Interrupted {
		t.Fatalf("Healthy = %v, Interrupted = %v", a.Healthy, a.Interrupted)
	}
	wantDuration(t, "cancelled assessment", time.Since(start), 100*time.Millisecond, 100*time.Millisecond+margin)
	if a.Reason != "unhealthy: interrupted after 0 rounds (context canceled)" {
		t.Errorf("Reason = %q", a.Reason)
	}

	// Cancelled during the grace wait.
	p.Grace = time.Minute
	ctx, cancel = context.WithCancel(t.Context())
	start = time.Now()
	time.AfterFunc(50*time.Millisecond, cancel)
	a = Assess(ctx, checks, p, nil)
	if !a.Interrupted {
		t.Fatalf("Interrupted = false, reason %q", a.Reason)
	}
	wantDuration(t, "assessment cancelled in grace", time.Since(start), 50*time.Millisecond, 50*time.Millisecond+margin)
}

func TestAssessReasonNamesTheFailingCheck(t *testing.T) {
	up := newFlipServer(t, http.StatusOK)
	down := newFlipServer(t, http.StatusServiceUnavailable)
	checks := mustNew(t, []config.Check{
		httpCfg("front", up.URL, time.Second),
		httpCfg("api", down.URL, time.Second),
		cmdCfg(time.Second, "/bin/true"),
	}, Deps{})
	a := Assess(t.Context(), checks, fastPolicy(), nil)
	if a.Healthy {
		t.Fatal("Healthy = true")
	}
	wantContains(t, "Reason", a.Reason, "unhealthy: check api failed 3 rounds in a row: HTTP 503 from "+down.URL)
	if len(a.Last) != 3 || a.Last[0].Name != "front" || a.Last[1].Name != "api" || a.Last[2].Name != "script" {
		t.Errorf("Last is not in config order: %+v", a.Last)
	}
}

func TestAssessReasonWhenDifferentChecksFail(t *testing.T) {
	a := newPatternServer(t, 0, []int32{500, 200, 200})
	b := newPatternServer(t, 0, []int32{200, 500, 500})
	checks := mustNew(t, []config.Check{httpCfg("a", a.URL, time.Second), httpCfg("b", b.URL, time.Second)}, Deps{})
	res := Assess(t.Context(), checks, fastPolicy(), nil)
	if res.Healthy || res.Rounds != 3 {
		t.Fatalf("Healthy = %v after %d rounds: %q", res.Healthy, res.Rounds, res.Reason)
	}
	wantContains(t, "Reason", res.Reason, "unhealthy: 3 rounds in a row had a failing check; check b failed the last 2 rounds: HTTP 500")
}

// bigChecker is a Checker of another package's making that ignores the
// 4 KiB bound: Assess must bound what it keeps anyway.
type bigChecker struct{}

func (bigChecker) Name() string { return "big" }
func (bigChecker) Kind() string { return "custom" }
func (bigChecker) Check(context.Context) api.CheckResult {
	return api.CheckResult{Name: "big", Kind: "custom", Healthy: true, Output: strings.Repeat("é", 10000), At: time.Now()}
}

func TestAssessBoundsOutputs(t *testing.T) {
	a := Assess(t.Context(), []Checker{bigChecker{}}, fastPolicy(), nil)
	if !a.Healthy || len(a.Last) != 1 {
		t.Fatalf("Assessment = %q, %d results", a.Reason, len(a.Last))
	}
	if out := a.Last[0].Output; len(out) > maxOutput || !strings.HasSuffix(out, "…[truncated]") {
		t.Errorf("Output is %d bytes ending %q, want at most %d with a truncation mark", len(out), tailUTF8(out, 20), maxOutput)
	}
}

func TestWatchUnhealthyWhenServerStartsFailing(t *testing.T) {
	srv := newFlipServer(t, http.StatusOK)
	p := fastPolicy()
	const window = 5 * time.Second
	checks := webChecker(t, srv.URL, time.Second)
	start := time.Now()
	time.AfterFunc(150*time.Millisecond, func() { srv.status.Store(http.StatusBadGateway) })
	a := Watch(t.Context(), checks, p, window, nil)
	if a.Healthy || a.Interrupted {
		t.Fatalf("Healthy = %v, Interrupted = %v, reason %q", a.Healthy, a.Interrupted, a.Reason)
	}
	wantContains(t, "Reason", a.Reason, "unhealthy: check web failed 3 rounds in a row: HTTP 502 from "+srv.URL)
	// Failing from 150ms, three rounds 20ms apart: well inside the window.
	wantDuration(t, "watch", time.Since(start), 150*time.Millisecond+2*p.Interval, 150*time.Millisecond+3*p.Interval+margin)
}

func TestWatchHealthyAtWindowEnd(t *testing.T) {
	// Two failing rounds in a row, one short of unhealthy, are tolerated.
	srv := newPatternServer(t, 0, []int32{200, 500, 500, 200, 200, 200, 200, 200})
	p := fastPolicy()
	const window = 300 * time.Millisecond
	var log roundLog
	a := Watch(t.Context(), webChecker(t, srv.URL, time.Second), p, window, log.record)
	if !a.Healthy || a.Interrupted {
		t.Fatalf("Healthy = %v, Interrupted = %v, reason %q", a.Healthy, a.Interrupted, a.Reason)
	}
	wantDuration(t, "watch", a.Ended.Sub(a.Started), window, window+margin)
	wantContains(t, "Reason", a.Reason, "healthy: no 3 failing rounds in a row during the 300ms watch window (")
	if a.Rounds < 5 || len(log.rounds) != a.Rounds {
		t.Errorf("Rounds = %d, onRound calls = %d; want many rounds, each reported", a.Rounds, len(log.rounds))
	}
	// The first round waits one interval: the assessment just ran one.
	first := time.Unix(0, srv.first.Load())
	if d := first.Sub(a.Started); d < p.Interval {
		t.Errorf("first watch round %v after the start, want one interval (%v)", d, p.Interval)
	}
}

func TestWatchCancelReturnsPromptly(t *testing.T) {
	srv := newFlipServer(t, http.StatusOK)
	checks := webChecker(t, srv.URL, time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	start := time.Now()
	time.AfterFunc(100*time.Millisecond, cancel)
	a := Watch(ctx, checks, fastPolicy(), time.Minute, nil)
	if a.Healthy || !a.Interrupted || !strings.HasPrefix(a.Reason, "unhealthy: interrupted after ") {
		t.Fatalf("Healthy = %v, Interrupted = %v, Reason = %q", a.Healthy, a.Interrupted, a.Reason)
	}
	wantDuration(t, "cancelled watch", time.Since(start), 100*time.Millisecond, 100*time.Millisecond+margin)
}

func TestWatchWithoutChecksOrWindow(t *testing.T) {
	if a := Watch(t.Context(), nil, fastPolicy(), time.Minute, nil); !a.Healthy || !strings.Contains(a.Reason, "no health checks") {
		t.Errorf("no checks: %+v", a)
	}
	srv := newFlipServer(t, http.StatusInternalServerError)
	if a := Watch(t.Context(), webChecker(t, srv.URL, time.Second), fastPolicy(), 0, nil); !a.Healthy || a.Reason != "healthy: no watch window" {
		t.Errorf("no window: %+v", a)
	}
}

func TestSummary(t *testing.T) {
	end := time.Now()
	a := Assessment{Healthy: true, Reason: "healthy: 2 passing rounds in a row", Ended: end,
		Last: []api.CheckResult{{Name: "web", Kind: KindHTTP, Healthy: true}}}
	s := a.Summary()
	if !s.Healthy || s.Reason != a.Reason || !s.AssessedAt.Equal(end) || len(s.Checks) != 1 || s.Checks[0].Name != "web" {
		t.Errorf("Summary = %+v", s)
	}
	s.Checks[0].Name = "changed"
	if a.Last[0].Name != "web" {
		t.Error("Summary shares its Checks with the Assessment")
	}
	if s := (Assessment{}).Summary(); s.Checks == nil {
		t.Error("Summary of an empty assessment has nil Checks, want [] for JSON")
	}
}

func TestPolicyFrom(t *testing.T) {
	h := config.Default().Health
	p := PolicyFrom(h)
	want := Policy{Grace: 5 * time.Second, Interval: 2 * time.Second, AssessTimeout: time.Minute, SuccessesNeeded: 2, FailuresAllowed: 3}
	if p != want {
		t.Errorf("PolicyFrom(defaults) = %+v, want %+v", p, want)
	}
	if got := (Policy{Grace: -1}).normalized(); got != (Policy{Interval: 2 * time.Second, AssessTimeout: time.Minute, SuccessesNeeded: 2, FailuresAllowed: 3}) {
		t.Errorf("normalized zero policy = %+v", got)
	}
}
