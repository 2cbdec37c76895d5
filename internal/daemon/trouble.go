package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/releases"
	"github.com/rollback-agent/rollback-agent/internal/server"
)

// Trouble with the agent's own record (journal.Trouble) puts the agent
// in needs_operator: the status and the doctor say what happened and what
// to do. A journal that vanished or was replaced (journal-lost): the
// engine's gate refuses new deployments, rollbacks and guards from every
// source until an operator acknowledges it (POST /v1/acknowledge, root).
// A journal that cannot be read (journal-damaged): no engine, source or
// observer starts at all, the API answers status and doctor only, and
// only recovery clears it (startDamaged).

// startDamaged is the agent on a damaged journal. It knows who it is
// (status shows the identity, the doctor checks AWS with the agent's own
// credentials) and nothing of what it did: it must not act on the host,
// so it records nothing, runs nothing and refuses every other request
// with what to do.
func (d *Daemon) startDamaged(ctx context.Context, awsCfg aws.Config) {
	d.svc = &services{ctx: ctx, awsCfg: awsCfg, ec2: ec2.NewFromConfig(awsCfg)}
	d.srv.Handle("GET "+api.PathDoctor, d.doctorHandler())
	t := d.journal.Trouble()
	d.srv.Limit(fmt.Sprintf("the agent needs an operator (%s): %s. %s", t.Kind, t.What, t.Next),
		"GET "+api.PathStatus, "HEAD "+api.PathStatus, "GET "+api.PathDoctor, "GET "+api.PathMetrics)
}

// rebuildInstalled tells a journal that replaced a lost one what is
// installed: the release whose install manifest was committed last. With
// it the next deployment runs that revision's ApplicationStop and
// replaces its files by its manifest, as if the journal had never been
// lost; without it those files would be strangers to the agent. An
// Install begun after it and cut short becomes the journal's install
// intent, as after a crash: the next Install knows both manifests.
func (d *Daemon) rebuildInstalled(rel *releases.Store) {
	if t := d.journal.Trouble(); t == nil || t.Kind != journal.TroubleJournalLost {
		return
	}
	od, err := rel.FindOnDisk()
	if err != nil || od.Installed == nil {
		if err != nil {
			d.log.Warn("rebuild the installed revision from releases/", zap.Error(err))
		}
		return
	}
	note := fmt.Sprintf("the installed revision is %s (release %s, its Install ended %s)", od.Installed.Revision, od.Installed.ID, od.At.UTC().Format(time.RFC3339))
	var intent *journal.InstallIntent
	if od.Interrupted != nil {
		intent = &journal.InstallIntent{Target: od.Interrupted.ID, Previous: []string{od.Installed.ID}}
		note += fmt.Sprintf(", and a later Install of %s (release %s) did not complete: some of its files may be on disk too", od.Interrupted.Revision, od.Interrupted.ID)
	}
	if ok, err := d.journal.RebuildInstalled(od.Installed.ID, intent, note); err != nil {
		d.log.Warn("rebuild the installed revision from releases/", zap.Error(err))
	} else if ok {
		d.log.Warn("journal lost: "+note, zap.String("release", od.Installed.ID))
	}
}

// record is the record's trouble as the API shows it, nil when none.
func (d *Daemon) record() *api.OperatorAttention {
	t := d.journal.Trouble()
	if t == nil {
		return nil
	}
	return &api.OperatorAttention{Trouble: t.Kind, What: t.What, Next: t.Next, Since: t.Since}
}

// gate is the engine's Gate.
func (d *Daemon) gate() error {
	if t := d.journal.Trouble(); t != nil {
		return fmt.Errorf("%s: %s; nothing is deployed until an operator runs `agentctl acknowledge %s` (see agentctl status)", t.Kind, t.What, t.Kind)
	}
	return nil
}

// troubleStatus puts the record's trouble, if any, into st.
func (d *Daemon) troubleStatus(st *api.Status) {
	t := d.record()
	if t == nil {
		return
	}
	st.State = api.StateNeedsOperator
	st.Operator = t
	st.Warnings = append([]string{"NEEDS OPERATOR (" + t.Trouble + "): " + t.What}, st.Warnings...)
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
		if errors.Is(err, journal.ErrDamagedRecord) {
			return server.Conflict(err)
		}
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
