package engine

import (
	"errors"
	"fmt"
	"slices"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/journal"
)

// ErrStopped means the engine stopped taking work: it could not record
// what it does (a failing or read-only state disk, a damaged journal),
// and work it cannot record could not be recovered after a crash. Status
// says why and what to do; a restart after the cause is fixed recovers
// whatever was in flight from the journal.
var ErrStopped = errors.New("the agent stopped taking work")

// Fault is why the engine stopped taking work, nil while it works.
func (e *Engine) Fault() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fault
}

// setFault stops the engine for good (until a restart); the first cause
// is kept.
func (e *Engine) setFault(err error) {
	e.mu.Lock()
	first := e.fault == nil
	if first {
		e.fault = err
	}
	e.mu.Unlock()
	if first {
		e.o.Log.Error("the engine stops taking work: it cannot record it", zap.Error(err))
	}
}

// refuse is the error new work gets once the engine stopped.
func (e *Engine) refuse() error {
	if err := e.Fault(); err != nil {
		return fmt.Errorf("%w: %w", ErrStopped, err)
	}
	return nil
}

// FaultHint says what an operator does about a fault.
func FaultHint(fault error, stateDir string) string {
	if errors.Is(fault, journal.ErrCorrupt) {
		return fmt.Sprintf("the journal %s/%s is damaged: stop the agent, run `agentctl recover journal --state-dir %s` (moves the file aside, kept for inspection), "+
			"and start the agent again; docs/design.md (\"When the journal cannot be written, or is damaged\") says what the agent rebuilds and what it cannot",
			stateDir, journal.FileName, stateDir)
	}
	return fmt.Sprintf("the agent could not write its journal in %s: fix the state disk (space, read-only mount, I/O errors) and restart the agent; "+
		"recovery then finishes or rolls back the operation in flight from the journal", stateDir)
}

// halt ends the in-flight operation in memory only, since the journal
// cannot take it: waiters (`agentctl deploy --wait`, the inbox) are told
// it needs an operator, and the record on disk stays as it was, for
// recovery after a restart.
func (r *run) halt() {
	fault := r.e.Fault()
	r.d.Status = api.StatusNeedsOperator
	r.d.Error = appendError(r.d.Error, fmt.Sprintf("%v; %s", fault, FaultHint(fault, r.e.o.StateDir)))
	// The in-memory record stays the operation in flight: status and
	// `agentctl show` read it, newer than the journal's.
	c := *r.d
	c.Steps = append([]api.Step(nil), r.d.Steps...)
	// The worker changes rungs and volume stages in place: readers get
	// their own.
	c.Rungs, c.Volumes = slices.Clone(r.d.Rungs), slices.Clone(r.d.Volumes)
	r.e.mu.Lock()
	r.e.active = &c
	r.e.mu.Unlock()
	r.e.bus.publish(api.Event{Type: api.EventStatus, DeploymentID: r.d.ID, Status: r.d.Status, Message: r.d.Error})
	r.log.Error("operation stopped: its record cannot be written", zap.String("deployment", r.d.ID), zap.Error(fault))
}
