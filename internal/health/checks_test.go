package health

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rollback-agent/rollback-agent/internal/config"
)

func TestNewBuildsCheckersInOrder(t *testing.T) {
	cs := mustNew(t, []config.Check{
		httpCfg("web", "http://127.0.0.1:8080/health", 0),
		tcpCfg("127.0.0.1:8080", 0),
		cmdCfg(0, "/usr/local/bin/check"),
		systemdCfg("myapp.service"),
		alarmCfg("", "myapp-5xx"),
	}, Deps{})
	wantKinds := []string{"http", "tcp", "command", "systemd", "cloudwatch_alarm"}
	wantNames := []string{"web", "port", "script", "unit", "errors"}
	// Zero timeouts (a config not from the loader) get the loader's defaults.
	wantTimeouts := []time.Duration{2 * time.Second, time.Second, 10 * time.Second, 5 * time.Second, 5 * time.Second}
	for i, c := range cs {
		if c.Kind() != wantKinds[i] || c.Name() != wantNames[i] || c.(*checker).timeout != wantTimeouts[i] {
			t.Errorf("checker %d = %s %s %v, want %s %s %v", i, c.Name(), c.Kind(), c.(*checker).timeout, wantNames[i], wantKinds[i], wantTimeouts[i])
		}
	}
}

func TestNewRejectsWhatItCannotRun(t *testing.T) {
	_, err := New([]config.Check{
		{Name: "none"},
		{Name: "two", TCP: &config.TCPCheck{Address: "a:1"}, Systemd: &config.SystemdCheck{Unit: "x"}},
		{HTTP: &config.HTTPCheck{URL: "http://a"}},
		httpCfg("badurl", "ftp://a", 0),
		{Name: "badaddr", TCP: &config.TCPCheck{Address: "nohost"}},
		{Name: "noargv", Command: &config.CommandCheck{}},
		{Name: "nounit", Systemd: &config.SystemdCheck{}},
		{Name: "noalarm", CloudWatchAlarm: &config.CloudWatchCheck{}},
		{Name: "badinsuff", CloudWatchAlarm: &config.CloudWatchCheck{AlarmNames: []string{"a"}, InsufficientData: "maybe"}},
		httpCfg("dup", "http://a", 0),
		httpCfg("dup", "http://b", 0),
	}, Deps{})
	if err == nil {
		t.Fatal("New accepted broken checks")
	}
	for _, want := range []string{
		`health check 1 ("none"): a check has exactly one of http, tcp, command, systemd, cloudwatch_alarm (found 0)`,
		`health check 2 ("two"): a check has exactly one of http, tcp, command, systemd, cloudwatch_alarm (found 2)`,
		`health check 3 (""): a check needs a name`,
		`health check 4 ("badurl"): http.url "ftp://a" is not an http(s) URL`,
		`health check 5 ("badaddr"): tcp.address "nohost": want host:port`,
		`health check 6 ("noargv"): command.argv must name a program`,
		`health check 7 ("nounit"): systemd.unit must name a unit`,
		`health check 8 ("noalarm"): cloudwatch_alarm.alarm_names must name at least one alarm`,
		`health check 9 ("badinsuff"): cloudwatch_alarm.insufficient_data "maybe": want healthy or unhealthy`,
		`health check 11 ("dup"): the name is used by another check`,
	} {
		wantContains(t, "error", err.Error(), want)
	}
	if strings.Contains(err.Error(), "health check 10") {
		t.Errorf("the first of two checks named dup was refused: %v", err)
	}
}

func TestRunAllRunsConcurrentlyInConfigOrder(t *testing.T) {
	cs := mustNew(t, []config.Check{
		{Name: "slow", Command: &config.CommandCheck{Argv: []string{"/bin/sh", "-c", "sleep 0.3; echo slow"}, Timeout: 5 * time.Second}},
		{Name: "fail", Command: &config.CommandCheck{Argv: []string{"/bin/sh", "-c", "sleep 0.3; exit 1"}, Timeout: 5 * time.Second}},
		{Name: "quick", Command: &config.CommandCheck{Argv: []string{"/bin/echo", "quick"}, Timeout: 5 * time.Second}},
	}, Deps{})
	start := time.Now()
	res := RunAll(t.Context(), cs)
	took := time.Since(start)
	if took > 550*time.Millisecond {
		t.Errorf("RunAll took %v for two 300ms checks, want them run side by side", took)
	}
	if len(res) != 3 || res[0].Name != "slow" || res[1].Name != "fail" || res[2].Name != "quick" {
		t.Fatalf("results not in config order: %+v", res)
	}
	if !res[0].Healthy || res[1].Healthy || !res[2].Healthy {
		t.Errorf("healthy = %v %v %v, want true false true", res[0].Healthy, res[1].Healthy, res[2].Healthy)
	}
}

func TestRunAllWithCancelledContext(t *testing.T) {
	srv := hangingServer(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	start := time.Now()
	res := RunAll(ctx, mustNew(t, []config.Check{httpCfg("web", srv.URL, 5*time.Second)}, Deps{}))
	if time.Since(start) > margin {
		t.Errorf("RunAll with a cancelled context took %v", time.Since(start))
	}
	if res[0].Healthy || !strings.HasPrefix(res[0].Output, "interrupted before the check finished (context canceled)") {
		t.Errorf("result = %+v", res[0])
	}
}

func TestCheckThatPanicsIsFailed(t *testing.T) {
	c := &checker{name: "p", kind: "custom", what: "panicking", timeout: time.Second,
		probe: plain(func(context.Context) (bool, string) { panic("nil map") })}
	res := c.Check(t.Context())
	if res.Healthy || res.Output != "custom check p panicked: nil map" {
		t.Errorf("result = %+v", res)
	}
}

func TestCheckIgnoringItsContextReturnsAtTimeout(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	const timeout = 150 * time.Millisecond
	c := &checker{name: "stuck", kind: "custom", what: "waiting for a stuck library", timeout: timeout,
		probe: plain(func(context.Context) (bool, string) { <-release; return true, "late" })}
	start := time.Now()
	res := c.Check(t.Context())
	wantDuration(t, "stuck check", time.Since(start), timeout-5*time.Millisecond, timeout+margin)
	if res.Healthy || res.Output != "timed out after 150ms: waiting for a stuck library did not finish" {
		t.Errorf("result = %+v", res)
	}
}

func TestBoundOutput(t *testing.T) {
	if got := boundOutput("short"); got != "short" {
		t.Errorf("boundOutput(short) = %q", got)
	}
	long := strings.Repeat("日本", 2000) // 3-byte runes: a cut must not split one
	got := boundOutput(long)
	if len(got) > maxOutput || !utf8.ValidString(got) || !strings.HasSuffix(got, "…[truncated]") {
		t.Errorf("boundOutput(long) is %d bytes, valid UTF-8 %v, ends %q", len(got), utf8.ValidString(got), tailUTF8(got, 20))
	}
	if got := boundOutput("bad \xff byte"); !utf8.ValidString(got) {
		t.Errorf("boundOutput kept invalid UTF-8: %q", got)
	}
}

func TestFmtDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		60 * time.Second:        "60s",
		5 * time.Minute:         "300s",
		300 * time.Millisecond:  "300ms",
		1500 * time.Millisecond: "1.5s",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
