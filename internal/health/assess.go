package health

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/config"
)

// reasonOutputLen bounds the check output quoted in a Reason: the reason is
// one sentence; the full output is in Last.
const reasonOutputLen = 300

// Policy is the assessment policy (from config.Health).
type Policy struct {
	Grace, Interval, AssessTimeout   time.Duration
	SuccessesNeeded, FailuresAllowed int
}

// PolicyFrom takes the assessment policy out of the health config.
func PolicyFrom(h config.Health) Policy {
	return Policy{
		Grace:           h.Grace,
		Interval:        h.Interval,
		AssessTimeout:   h.AssessTimeout,
		SuccessesNeeded: h.SuccessesNeeded,
		FailuresAllowed: h.FailuresAllowed,
	}
}

// normalized replaces values that would make the loops spin or never end
// (a zero interval, no timeout, zero rounds needed) with the config
// defaults; the loader never produces them, a hand-built Policy might.
func (p Policy) normalized() Policy {
	d := config.Default().Health
	if p.Grace < 0 {
		p.Grace = 0
	}
	if p.Interval <= 0 {
		p.Interval = d.Interval
	}
	if p.AssessTimeout <= 0 {
		p.AssessTimeout = d.AssessTimeout
	}
	if p.SuccessesNeeded <= 0 {
		p.SuccessesNeeded = d.SuccessesNeeded
	}
	if p.FailuresAllowed <= 0 {
		p.FailuresAllowed = d.FailuresAllowed
	}
	return p
}

// Assessment is the outcome of Assess or Watch.
type Assessment struct {
	Healthy bool
	// Reason is a human sentence: "healthy: 2 passing rounds in a row",
	// "unhealthy: check web failed 3 rounds in a row: HTTP 500 from …",
	// "unhealthy: not healthy within assess_timeout 60s …".
	Reason string
	// Interrupted is set when ctx ended the assessment: Healthy is then
	// false but says nothing about the application, and callers must not
	// roll back because of it.
	Interrupted    bool
	Rounds         int
	Started, Ended time.Time
	// Last is each check's last result, output bounded to 4 KiB.
	Last []api.CheckResult
}

// Summary is the assessment as the status API shows it.
func (a Assessment) Summary() api.HealthSummary {
	checks := slices.Clone(a.Last)
	if checks == nil {
		checks = []api.CheckResult{} // "checks": [] rather than null
	}
	return api.HealthSummary{Healthy: a.Healthy, AssessedAt: a.Ended, Reason: a.Reason, Checks: checks}
}

// Assess waits Grace, then runs all checks every Interval: healthy after
// SuccessesNeeded rounds in a row where every check passed; unhealthy after
// FailuresAllowed rounds in a row where some check failed, or when
// AssessTimeout (counted from the start, grace included) passes first; a
// round still running then is cut short and does not count. With no checks
// at all it is healthy at once. onRound (may be nil) is called after every
// completed round. ctx cancellation returns promptly with Healthy=false,
// Interrupted=true.
func Assess(ctx context.Context, checkers []Checker, p Policy, onRound func(round int, results []api.CheckResult)) Assessment {
	p = p.normalized()
	r := newRunner(checkers, p, onRound)
	if len(checkers) == 0 {
		return r.finish(true, "healthy: no health checks are configured")
	}
	deadline := r.a.Started.Add(p.AssessTimeout)
	next := r.a.Started.Add(p.Grace)
	for {
		switch wait(ctx, next, deadline) {
		case waitCanceled:
			return r.interrupted(ctx)
		case waitDeadline:
			return r.finish(false, r.timeoutReason())
		}
		next = time.Now().Add(p.Interval)
		if !r.round(ctx, deadline) {
			if ctx.Err() != nil {
				return r.interrupted(ctx)
			}
			return r.finish(false, r.timeoutReason())
		}
		switch {
		case r.successes >= p.SuccessesNeeded:
			return r.finish(true, "healthy: "+plural(r.successes, "passing round")+inARow(r.successes))
		case r.failures >= p.FailuresAllowed:
			return r.finish(false, r.failureReason())
		}
	}
}

// Watch keeps running rounds every Interval, the first one an Interval
// after the start (the assessment that precedes it has just run one),
// until ctx ends or window passes. It returns unhealthy as soon as
// FailuresAllowed rounds in a row failed, healthy when the window ends
// without that (a round still running then is cut short and does not
// count). Grace and AssessTimeout do not apply.
func Watch(ctx context.Context, checkers []Checker, p Policy, window time.Duration, onRound func(int, []api.CheckResult)) Assessment {
	p = p.normalized()
	r := newRunner(checkers, p, onRound)
	if len(checkers) == 0 {
		return r.finish(true, "healthy: no health checks are configured, nothing to watch")
	}
	if window <= 0 {
		return r.finish(true, "healthy: no watch window")
	}
	end := r.a.Started.Add(window)
	windowEnded := func() Assessment {
		return r.finish(true, fmt.Sprintf("healthy: no %s%s during the %s watch window (%s)",
			plural(p.FailuresAllowed, "failing round"), inARow(p.FailuresAllowed), fmtDuration(window), plural(r.a.Rounds, "round")))
	}
	next := r.a.Started.Add(p.Interval)
	for {
		switch wait(ctx, next, end) {
		case waitCanceled:
			return r.interrupted(ctx)
		case waitDeadline:
			return windowEnded()
		}
		next = time.Now().Add(p.Interval)
		if !r.round(ctx, end) {
			if ctx.Err() != nil {
				return r.interrupted(ctx)
			}
			return windowEnded()
		}
		if r.failures >= p.FailuresAllowed {
			return r.finish(false, r.failureReason())
		}
	}
}

// runner holds the state shared by Assess and Watch: the rounds so far and
// the streaks they make.
type runner struct {
	checkers []Checker
	p        Policy
	onRound  func(int, []api.CheckResult)
	a        Assessment

	successes, failures int   // rounds in a row that passed / failed
	checkFailures       []int // per check: rounds in a row it failed
	lastRound           []api.CheckResult
}

func newRunner(checkers []Checker, p Policy, onRound func(int, []api.CheckResult)) *runner {
	return &runner{
		checkers:      checkers,
		p:             p,
		onRound:       onRound,
		a:             Assessment{Started: time.Now()},
		checkFailures: make([]int, len(checkers)),
	}
}

// round runs every check once, cut short at deadline, and reports whether
// it completed. A completed round updates the streaks; a cut one only
// fills Last when no round completed before it, so that Last never shows
// "interrupted" in place of a real earlier result.
func (r *runner) round(ctx context.Context, deadline time.Time) bool {
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	results := RunAll(rctx, r.checkers)
	for i := range results {
		results[i].Output = boundOutput(results[i].Output)
	}
	if rctx.Err() != nil {
		if r.a.Rounds == 0 {
			r.a.Last = results
		}
		return false
	}
	r.a.Rounds++
	r.a.Last = results
	r.lastRound = results
	passed := true
	for i, res := range results {
		if res.Healthy {
			r.checkFailures[i] = 0
		} else {
			r.checkFailures[i]++
			passed = false
		}
	}
	if passed {
		r.successes, r.failures = r.successes+1, 0
	} else {
		r.successes, r.failures = 0, r.failures+1
	}
	if r.onRound != nil {
		// A copy: the callback may keep it, and Last must not change under it.
		r.onRound(r.a.Rounds, slices.Clone(results))
	}
	return true
}

func (r *runner) finish(healthy bool, reason string) Assessment {
	r.a.Healthy, r.a.Reason, r.a.Ended = healthy, reason, time.Now()
	return r.a
}

func (r *runner) interrupted(ctx context.Context) Assessment {
	a := r.finish(false, fmt.Sprintf("unhealthy: interrupted after %s (%v)", plural(r.a.Rounds, "round"), context.Cause(ctx)))
	a.Interrupted = true
	return a
}

// failureReason names the check behind the failing streak: the one of the
// last round that has failed longest, with its last output.
func (r *runner) failureReason() string {
	worst := -1
	var others []string
	for i, res := range r.lastRound {
		if res.Healthy {
			continue
		}
		if worst < 0 || r.checkFailures[i] > r.checkFailures[worst] {
			if worst >= 0 {
				others = append(others, r.lastRound[worst].Name)
			}
			worst = i
		} else {
			others = append(others, res.Name)
		}
	}
	if worst < 0 {
		// Not reachable: a failing round has a failing check.
		return fmt.Sprintf("unhealthy: %s%s failed", plural(r.failures, "round"), inARow(r.failures))
	}
	res, n := r.lastRound[worst], r.checkFailures[worst]
	var msg string
	if n >= r.failures {
		msg = fmt.Sprintf("unhealthy: check %s failed %s%s: %s", res.Name, plural(n, "round"), inARow(n), oneLine(res.Output))
	} else {
		// Different checks failed in different rounds.
		msg = fmt.Sprintf("unhealthy: %s%s had a failing check; check %s failed the last %s: %s",
			plural(r.failures, "round"), inARow(r.failures), res.Name, plural(n, "round"), oneLine(res.Output))
	}
	if len(others) > 0 {
		slices.Sort(others)
		msg += " (also failing: " + strings.Join(others, ", ") + ")"
	}
	return msg
}

func (r *runner) timeoutReason() string {
	msg := "unhealthy: not healthy within assess_timeout " + fmtDuration(r.p.AssessTimeout)
	if r.a.Rounds == 0 {
		return msg + fmt.Sprintf(" (no round completed; grace %s)", fmtDuration(r.p.Grace))
	}
	detail := "the last one passed"
	for _, res := range r.lastRound {
		if !res.Healthy {
			detail = fmt.Sprintf("in the last one check %s failed: %s", res.Name, oneLine(res.Output))
			break
		}
	}
	return msg + fmt.Sprintf(" (%s; %s)", plural(r.a.Rounds, "round"), detail)
}

type waitResult int

const (
	waitReached waitResult = iota
	waitDeadline
	waitCanceled
)

// wait sleeps until t, or until deadline if that comes first, or until ctx
// ends.
func wait(ctx context.Context, t, deadline time.Time) waitResult {
	result := waitReached
	if !t.Before(deadline) {
		t, result = deadline, waitDeadline
	}
	if err := ctx.Err(); err != nil {
		return waitCanceled
	}
	d := time.Until(t)
	if d <= 0 {
		return result
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return waitCanceled
	case <-timer.C:
		return result
	}
}

// plural says "1 round" or "3 rounds".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// inARow adds " in a row" where it means something (more than one round).
func inARow(n int) string {
	if n == 1 {
		return ""
	}
	return " in a row"
}

// oneLine flattens a check's output for a one-sentence reason.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > reasonOutputLen {
		s = cutUTF8(s, reasonOutputLen) + "…"
	}
	return s
}
