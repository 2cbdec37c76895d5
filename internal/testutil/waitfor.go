// Package testutil holds what tests of every package share: WaitFor,
// the one way a test waits for something to become true.
package testutil

import "time"

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
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(delay)
		delay = min(2*delay, 100*time.Millisecond)
	}
}
