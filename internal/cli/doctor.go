package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/spf13/cobra"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/client"
)

// agentUnit is the agent's systemd unit (DESIGN.md §2).
const agentUnit = "rollback-agent.service"

func newDoctorCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check what a first real run needs, each line ok, warn or fail with the fix; exit 1 when anything fails",
		Long: "Run on the host, as root. The agent checks, with its own credentials and config: IMDSv2 (and the hop\n" +
			"limit in containers), its identity, its credentials and their role, a DryRun of every mutating EC2 call\n" +
			"the config will use (CreateSnapshots; CreateImage with ami; CreateVolume, DetachVolume and AttachVolume\n" +
			"with the volumes rung; CreateReplaceRootVolumeTask with the root rung; CreateTags), the release\n" +
			"channel in S3 (telling a missing bucket or channel from a missing grant), the CloudWatch alarms of the\n" +
			"health checks, each volume's block device (and a partition, LVM or md the volumes rung cannot swap),\n" +
			"pending snapshots against EBS's limit, and whether AWS's CodeDeploy agent is installed and running\n" +
			"(a failure only on a host that has recorded CodeDeploy deployments). agentctl adds the state of " + agentUnit + ".\n" +
			"A failed check names what is missing: the grant (action and resource), the bucket, the alarm.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			rep := api.DoctorReport{SchemaVersion: api.SchemaVersion}
			agent, err := g.client().Doctor(ctx)
			switch {
			case err == nil:
				rep.Checks = append(rep.Checks, agent.Checks...)
			case isUnreachable(err):
				rep.Checks = append(rep.Checks, api.DoctorCheck{Name: "agent", Result: api.DoctorFail,
					Detail: err.Error() + ": the checks that need the agent did not run",
					Fix:    "start it (systemctl start rollback-agent) and read why it stops: journalctl -u rollback-agent"})
			default:
				return err
			}
			rep.Checks = append(rep.Checks, unitCheck(ctx))
			if err := g.print(rep, func(w io.Writer) { printDoctor(w, rep) }); err != nil {
				return err
			}
			if rep.Failed() {
				return failed("doctor: %d check(s) failed", countFailed(rep))
			}
			return nil
		},
	}
}

func isUnreachable(err error) bool {
	var nr *client.NotRunningError
	var nready *client.NotReadyError
	return errors.As(err, &nr) || errors.As(err, &nready)
}

func countFailed(rep api.DoctorReport) int {
	n := 0
	for _, c := range rep.Checks {
		if c.Result == api.DoctorFail {
			n++
		}
	}
	return n
}

// printDoctor prints one line per check, the fix under it.
func printDoctor(w io.Writer, rep api.DoctorReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tDETAIL")
	for _, c := range rep.Checks {
		res := string(c.Result)
		if c.Result == api.DoctorFail {
			res = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, res, c.Detail)
		if c.Fix != "" {
			fmt.Fprintf(tw, "\t\tfix: %s\n", c.Fix)
		}
	}
	tw.Flush()
	if n := countFailed(rep); n > 0 {
		fmt.Fprintf(w, "%d check(s) FAILED: a deployment or a rollback would fail; fix them and run agentctl doctor again\n", n)
	} else {
		fmt.Fprintln(w, "ready: nothing failed")
	}
}

// unitCheck asks systemd about the agent's unit over D-Bus.
func unitCheck(ctx context.Context) api.DoctorCheck {
	c := api.DoctorCheck{Name: "unit"}
	conn, err := sddbus.NewWithContext(ctx)
	if err != nil {
		c.Result, c.Detail = api.DoctorWarn, "cannot ask systemd about "+agentUnit+" over D-Bus (is systemd PID 1 here, and are you root?): "+err.Error()
		return c
	}
	defer conn.Close()
	props, err := conn.GetUnitPropertiesContext(ctx, agentUnit)
	if err != nil {
		c.Result, c.Detail = api.DoctorWarn, "systemd: "+err.Error()
		return c
	}
	str := func(k string) string { s, _ := props[k].(string); return s }
	svc, _ := conn.GetUnitTypePropertiesContext(ctx, agentUnit, "Service")
	restarts, _ := svc["NRestarts"].(uint32)
	status, _ := svc["ExecMainStatus"].(int32)
	state := fmt.Sprintf("%s (%s), %s", str("ActiveState"), str("SubState"), str("UnitFileState"))
	switch {
	case str("LoadState") == "not-found":
		c.Result, c.Detail, c.Fix = api.DoctorFail, agentUnit+" is not installed", "install the package: scripts/install.sh --package ... (README, Install on EC2)"
	case str("ActiveState") != "active":
		c.Result, c.Detail = api.DoctorFail, fmt.Sprintf("%s is %s, last exit status %d", agentUnit, state, status)
		c.Fix = "systemctl start rollback-agent; journalctl -u rollback-agent says why it stopped"
		if status == 78 {
			c.Fix = "the config is wrong: rollback-agent --check-config --config /etc/rollback-agent/agent.yaml lists every problem"
		}
	case str("UnitFileState") != "enabled":
		c.Result, c.Detail, c.Fix = api.DoctorWarn, agentUnit+" is "+state+": it will not start at boot", "systemctl enable rollback-agent"
	case restarts > 0:
		c.Result, c.Detail, c.Fix = api.DoctorWarn, fmt.Sprintf("%s is %s, restarted %d times", agentUnit, state, restarts), "journalctl -u rollback-agent says why"
	default:
		c.Result, c.Detail = api.DoctorOK, agentUnit+" is "+strings.TrimSpace(state)
	}
	return c
}
