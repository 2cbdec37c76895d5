package daemon

import (
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
		cfg := d.svc.awsCfg
		rep := doctor.Run(r.Context(), doctor.Inputs{
			Config:        d.cfg.Load(),
			Identity:      d.identity(),
			EC2:           d.svc.ec2,
			S3:            awsconf.S3(cfg),
			CloudWatch:    cloudwatch.NewFromConfig(cfg),
			STS:           sts.NewFromConfig(cfg),
			DryRun:        d.svc.checkpoints.DryRun,
			SysClassBlock: "/sys/class/block",
			Root:          "/", Proc: "/proc", UsesCodeDeploy: d.usesCodeDeploy(),
		})
		server.WriteJSON(w, http.StatusOK, rep)
	})
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
