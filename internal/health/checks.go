// Package health runs the configured health checks (http, tcp, command,
// systemd, cloudwatch_alarm) and turns rounds of them into a verdict: the
// assessment after a deployment and the watch window that follows it.
//
// Every check has a hard timeout that holds even when the thing it talks to,
// or the library that talks to it, ignores its context: a hanging check is a
// failed check, never a hanging deployment.
package health

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
)

// Check kinds, as reported in api.CheckResult.Kind.
const (
	KindHTTP       = "http"
	KindTCP        = "tcp"
	KindCommand    = "command"
	KindSystemd    = "systemd"
	KindCloudWatch = "cloudwatch_alarm"
)

// maxOutput bounds CheckResult.Output: results are journaled and shown in
// the status of every deployment, so one chatty check must not bloat them.
const maxOutput = 4 << 10

// Timeouts used when the config has none. The loader fills http, tcp and
// command timeouts; systemd and cloudwatch_alarm have no timeout key.
const (
	defaultHTTPTimeout       = 2 * time.Second
	defaultTCPTimeout        = time.Second
	defaultCommandTimeout    = 10 * time.Second
	defaultSystemdTimeout    = 5 * time.Second
	defaultCloudWatchTimeout = 5 * time.Second
)

// Checker runs one configured check once.
type Checker interface {
	Name() string
	Kind() string // "http", "tcp", "command", "systemd", "cloudwatch_alarm"
	// Check runs the check with its own hard timeout; it must return by then
	// even if the thing it talks to hangs (a hanging check is a failed check).
	Check(ctx context.Context) api.CheckResult
}

// Deps are what some checks need. Nil fields: those checks fail with a
// clear error (at check time, so that a config naming them still loads).
type Deps struct {
	// CloudWatch builds (or returns a cached) CloudWatch client. It is called
	// at check time so that the agent does not need AWS credentials unless a
	// cloudwatch_alarm check is configured.
	CloudWatch func(ctx context.Context) (CloudWatchAPI, error)
	// SystemdConn opens a connection to systemd's D-Bus API (nil: the
	// default system bus via go-systemd's dbus.NewWithContext).
	SystemdConn func(ctx context.Context) (SystemdAPI, error)
}

// CloudWatchAPI is the part of the CloudWatch client the alarm check uses.
type CloudWatchAPI interface {
	DescribeAlarms(ctx context.Context, in *cloudwatch.DescribeAlarmsInput, opts ...func(*cloudwatch.Options)) (*cloudwatch.DescribeAlarmsOutput, error)
}

// SystemdAPI is the part of go-systemd's *dbus.Conn the systemd check uses.
type SystemdAPI interface {
	GetUnitPropertyContext(ctx context.Context, unit, property string) (*sddbus.Property, error)
	Close()
}

// New builds the checkers of the config, in order. The loader has already
// validated the checks; New still refuses what it cannot run, so that a
// hand-built config fails here rather than at the first round.
func New(checks []config.Check, deps Deps) ([]Checker, error) {
	out := make([]Checker, 0, len(checks))
	seen := make(map[string]bool, len(checks))
	var errs []error
	for i, c := range checks {
		ch, err := newChecker(c, deps)
		if err == nil && seen[c.Name] {
			err = errors.New("the name is used by another check")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("health check %d (%q): %w", i+1, c.Name, err))
			continue
		}
		seen[c.Name] = true
		out = append(out, ch)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func newChecker(c config.Check, deps Deps) (Checker, error) {
	if c.Name == "" {
		return nil, errors.New("a check needs a name")
	}
	kinds := 0
	for _, set := range []bool{c.HTTP != nil, c.TCP != nil, c.Command != nil, c.Systemd != nil, c.CloudWatchAlarm != nil} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		return nil, fmt.Errorf("a check has exactly one of http, tcp, command, systemd, cloudwatch_alarm (found %d)", kinds)
	}
	switch {
	case c.HTTP != nil:
		return newHTTPCheck(c.Name, *c.HTTP)
	case c.TCP != nil:
		return newTCPCheck(c.Name, *c.TCP)
	case c.Command != nil:
		return newCommandCheck(c.Name, *c.Command)
	case c.Systemd != nil:
		return newSystemdCheck(c.Name, *c.Systemd, deps.SystemdConn)
	default:
		return newCloudWatchCheck(c.Name, *c.CloudWatchAlarm, deps.CloudWatch)
	}
}

// RunAll runs every check once, concurrently, and returns results in config
// order. It returns when the slowest check does, which every check bounds
// with its own timeout.
func RunAll(ctx context.Context, checkers []Checker) []api.CheckResult {
	results := make([]api.CheckResult, len(checkers))
	var wg sync.WaitGroup
	for i, c := range checkers {
		wg.Go(func() { results[i] = c.Check(ctx) })
	}
	wg.Wait()
	return results
}

// probeFunc does the work of one check. It should honour ctx, but the
// caller does not rely on it: see checker.Check. output is what anyone
// who may read the agent's status may see (it goes into reasons, the
// journal and systemctl status); detail is what the check saw that may
// hold the application's secrets (a command's output, an HTTP body):
// the API gives it to root only.
type probeFunc func(ctx context.Context) (healthy bool, output, detail string)

// plain adapts a probe whose output holds nothing secret.
func plain(f func(context.Context) (bool, string)) probeFunc {
	return func(ctx context.Context) (bool, string, string) {
		ok, out := f(ctx)
		return ok, out, ""
	}
}

// checker is what every kind of check shares: name, kind, hard timeout and
// the result bookkeeping around its probe.
type checker struct {
	name, kind string
	// what names the work for a probe that never answered: "GET http://…".
	what    string
	timeout time.Duration
	probe   probeFunc
}

func (c *checker) Name() string { return c.name }
func (c *checker) Kind() string { return c.kind }

// Check runs the probe in a goroutine and stops waiting for it at the
// deadline. Libraries that ignore their context (a D-Bus handshake with a
// wedged peer, say) then cost one goroutine until they give up, instead of
// a stuck assessment.
func (c *checker) Check(ctx context.Context) api.CheckResult {
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// The probe's own deadline comes a little earlier, so that a probe that
	// honours it (killing a command, say) can still report what it saw
	// before the hard deadline below gives up on it.
	pctx, pcancel := context.WithTimeout(cctx, c.timeout-probeSlack(c.timeout))
	defer pcancel()

	type outcome struct {
		healthy        bool
		output, detail string
	}
	done := make(chan outcome, 1) // buffered: an abandoned probe must not block forever
	go func() {
		// A panic in a goroutine would take the whole agent down; a check
		// that panics is a failed check.
		defer func() {
			if r := recover(); r != nil {
				done <- outcome{false, fmt.Sprintf("%s check %s panicked: %v", c.kind, c.name, r), ""}
			}
		}()
		ok, out, detail := c.probe(pctx)
		done <- outcome{ok, out, detail}
	}()

	var o outcome
	select {
	case o = <-done:
	case <-cctx.Done():
		select {
		case o = <-done: // finished at the same instant: keep its own words
		default:
			o = outcome{false, c.what + " did not finish", ""}
		}
	}
	// The clock, not only pctx.Err: a socket deadline derived from pctx can
	// fire a hair before the context's own timer marks it done.
	if dl, _ := pctx.Deadline(); !o.healthy && (pctx.Err() != nil || !time.Now().Before(dl)) {
		// The probe's own words ("context deadline exceeded") do not say
		// which deadline passed; say it.
		o.output = c.stopped(ctx) + ": " + o.output
	}
	return api.CheckResult{
		Name:     c.name,
		Kind:     c.kind,
		Healthy:  o.healthy,
		Output:   boundOutput(o.output),
		Detail:   boundOutput(o.detail),
		Duration: time.Since(start),
		At:       start,
	}
}

// probeSlack is how much earlier than the check's timeout its probe is
// told to stop: a tenth of it, at most 50ms.
func probeSlack(timeout time.Duration) time.Duration {
	return min(timeout/10, 50*time.Millisecond)
}

// stopped explains why a probe was cut short: the caller's context (the
// assessment was stopped or reached its own deadline) or the check's timeout.
func (c *checker) stopped(parent context.Context) string {
	if err := parent.Err(); err != nil {
		return fmt.Sprintf("interrupted before the check finished (%v)", context.Cause(parent))
	}
	if dl, ok := parent.Deadline(); ok && !time.Now().Before(dl) {
		// Its timer has not marked it done yet, but its time is up.
		return fmt.Sprintf("interrupted before the check finished (%v)", context.DeadlineExceeded)
	}
	return "timed out after " + fmtDuration(c.timeout)
}

// boundOutput cuts s to maxOutput bytes on a rune boundary and says so.
func boundOutput(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxOutput {
		return s
	}
	const marker = " …[truncated]"
	return cutUTF8(s, maxOutput-len(marker)) + marker
}

// cutUTF8 returns the longest prefix of s of at most n bytes that does not
// split a rune.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// tailUTF8 returns the longest suffix of s of at most n bytes that does not
// split a rune.
func tailUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := len(s) - n
	for i < len(s) && !utf8.RuneStart(s[i]) {
		i++
	}
	return s[i:]
}

// fmtDuration prints whole seconds as "60s" (as written in agent.yaml)
// rather than Go's "1m0s".
func fmtDuration(d time.Duration) string {
	if d > 0 && d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

// orDefault returns d when v is not positive.
func orDefault(v, d time.Duration) time.Duration {
	if v <= 0 {
		return d
	}
	return v
}
