// Package testutil holds what tests of every package share: WaitFor,
// the one way a test waits for something to become true.
package testutil

import (
	"errors"
	"time"
)

// TB is the part of testing.TB that WaitFor uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// WaitFor calls try until it returns nil, and fails t with try's last
// error when that has not happened within maxWait. The first retry comes
// after a millisecond and the wait doubles up to 100 ms, so a condition
// that holds soon is seen soon. what names the condition in the failure.
//
// Tests wait with WaitFor (or on an event) and never sleep to let
// something happen: a sleep is either too short on a loaded machine or
// too long everywhere else.
func WaitFor(t TB, maxWait time.Duration, what string, try func() error) {
	t.Helper()
	if err := Poll(maxWait, try); err != nil {
		t.Fatalf("waiting %s for %s: %v", maxWait, what, err)
	}
}

// Poll is WaitFor without a test: it returns try's last error after
// maxWait, or nil as soon as try succeeds. For helpers that report
// failures their own way.
func Poll(maxWait time.Duration, try func() error) error {
	deadline := time.Now().Add(maxWait)
	delay := time.Millisecond
	for {
		err := try()
		if err == nil {
			return nil
		}
		var stop stopError
		if errors.As(err, &stop) {
			return stop.err
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(delay)
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// Stop wraps err so that Poll and WaitFor give up at once with it: for
// a condition that can no longer come true (the process being waited on
// exited) or an answer that does not decode, where waiting out maxWait
// would only hide the cause.
func Stop(err error) error { return stopError{err} }

type stopError struct{ err error }

func (s stopError) Error() string { return s.err.Error() }
func (s stopError) Unwrap() error { return s.err }
