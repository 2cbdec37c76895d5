package daemon

import (
	"context"
	"net/http"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/awsconf"
	"github.com/rollback-agent/rollback-agent/internal/doctor"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/server"
)

// doctorHandler answers GET /v1/doctor: the checks run here, with the
// agent's own credentials (the instance profile), config and identity, so
// they see what the agent will see.
func (d *Daemon) doctorHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// One run answers everyone who asks meanwhile: it costs dozens of
		// AWS calls, and members of the socket group may ask.
		rep, err := d.doctorRuns.get(r.Context(), d.doctor)
		if err != nil {
			server.WriteError(w, http.StatusServiceUnavailable, api.CodeUnavailable, "doctor: "+err.Error())
			return
		}
		server.WriteJSON(w, http.StatusOK, rep)
	})
}

// doctor runs every check once.
func (d *Daemon) doctor(ctx context.Context) (api.DoctorReport, error) {
	cfg := d.svc.awsCfg
	conf := d.cfg.Load()
	in := doctor.Inputs{
		Config:        conf,
		Identity:      d.identity(),
		EC2:           d.svc.ec2,
		S3:            awsconf.S3(cfg),
		CloudWatch:    cloudwatch.NewFromConfig(cfg),
		STS:           sts.NewFromConfig(cfg),
		SysClassBlock: "/sys/class/block",
		Root:          "/", Proc: "/proc", UsesCodeDeploy: d.usesCodeDeploy(),
		Record: d.record(), JournalPath: filepath.Join(conf.StateDir, journal.FileName),
	}
	if fault := d.engineFault(); in.Record == nil && fault != nil {
		// The journal opened but a write or a record failed since: the
		// engine stopped taking work (status says the same).
		in.Record = &api.OperatorAttention{Trouble: "engine-stopped", What: "the agent stopped taking work: " + fault.Error(),
			Next: engine.FaultHint(fault, conf.StateDir)}
	}
	// On a damaged journal there is no checkpoint manager to ask EC2
	// with, and no hook runs.
	if d.svc.checkpoints != nil {
		in.DryRun = d.svc.checkpoints.DryRun
	}
	if d.svc.contain != nil {
		in.HookContainment.On, in.HookContainment.Detail = d.svc.contain.On(), d.svc.contain.Describe()
	}
	return doctor.Run(ctx, in), nil
}

// usesCodeDeploy reports whether the journal holds CodeDeploy deployments.
func (d *Daemon) usesCodeDeploy() bool {
	deps, _ := d.journal.Deployments(0)
	for _, dep := range deps {
		if dep.Kind == api.KindCodeDeploy {
			return true
		}
	}
	return false
}
