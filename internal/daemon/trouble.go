package daemon

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/server"
)

// Trouble with the agent's own record (journal.Trouble: a journal that
// vanished or was replaced; item 12 adds a damaged one) puts the agent in
// needs_operator: the status says what happened and what to do, and the
// engine's gate refuses new deployments, rollbacks and guards from every
// source until an operator acknowledges it (POST /v1/acknowledge, root).

// gate is the engine's Gate.
func (d *Daemon) gate() error {
	if t := d.journal.Trouble(); t != nil {
		return fmt.Errorf("%s: %s; nothing is deployed until an operator runs `agentctl acknowledge %s` (see agentctl status)", t.Kind, t.What, t.Kind)
	}
	return nil
}

// troubleStatus puts the record's trouble, if any, into st.
func (d *Daemon) troubleStatus(st *api.Status) {
	t := d.journal.Trouble()
	if t == nil {
		return
	}
	st.State = api.StateNeedsOperator
	st.Operator = &api.OperatorAttention{Trouble: t.Kind, What: t.What, Next: t.Next, Since: t.Since}
	st.Warnings = append([]string{"NEEDS OPERATOR (" + t.Kind + "): " + t.What}, st.Warnings...)
}

// Acknowledge implements server.Backend.
func (d *Daemon) Acknowledge(_ context.Context, kind string) error {
	t := d.journal.Trouble()
	if t == nil || t.Kind != kind {
		now := "nothing"
		if t != nil {
			now = t.Kind
		}
		return server.Conflict(fmt.Errorf("nothing to acknowledge of kind %q (the agent reports %s)", kind, now))
	}
	if err := d.journal.Acknowledge(kind); err != nil {
		return err
	}
	d.log.Warn("operator acknowledged the agent's trouble; deployments are accepted again", zap.String("trouble", kind), zap.String("what", t.What))
	d.notify.status(d.summary())
	return nil
}

// needsOperator maps the engine's gate refusal to 409.
func needsOperator(err error) error {
	if errors.Is(err, engine.ErrNeedsOperator) {
		return server.Conflict(err)
	}
	return err
}
