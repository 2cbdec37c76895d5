package daemon

import (
	"context"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/awsconf"
	"github.com/rollback-agent/rollback-agent/internal/doctor"
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
	in := doctor.Inputs{
		Config:        d.cfg.Load(),
		Identity:      d.identity(),
		EC2:           d.svc.ec2,
		S3:            awsconf.S3(cfg),
		CloudWatch:    cloudwatch.NewFromConfig(cfg),
		STS:           sts.NewFromConfig(cfg),
		DryRun:        d.svc.checkpoints.DryRun,
		SysClassBlock: "/sys/class/block",
		Root:          "/", Proc: "/proc", UsesCodeDeploy: d.usesCodeDeploy(),
	}
	in.HookContainment.On, in.HookContainment.Detail = d.svc.contain.On(), d.svc.contain.Describe()
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
