package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// The hook environment of AWS's CodeDeploy agent (its hook executor sets
// these for every script; the DEPLOYMENT_GROUP_ID only in later agents).
const (
	envDeploymentID    = "DEPLOYMENT_ID"
	envApplicationName = "APPLICATION_NAME"
	envDeploymentGroup = "DEPLOYMENT_GROUP_NAME"
	envGroupID         = "DEPLOYMENT_GROUP_ID"
	envLifecycleEvent  = "LIFECYCLE_EVENT"
)

func newCodeDeployCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "codedeploy",
		Short: "The hooks agentctl push --codedeploy-app adds to a revision: a checkpoint before, a health gate after",
		Long: "Run by AWS's CodeDeploy agent from the hooks `agentctl push --codedeploy-app` injects into the\n" +
			"revision's appspec, with CodeDeploy's hook environment (DEPLOYMENT_ID, APPLICATION_NAME,\n" +
			"DEPLOYMENT_GROUP_NAME). The agent records the CodeDeploy deployment (kind codedeploy) so\n" +
			"`agentctl history` and `checkpoint list` show it. Run by rollback-agent's own deployments (the\n" +
			"same bundle from a channel), they do nothing: the agent takes its own checkpoint and is its own gate.",
	}
	var revision string
	before := &cobra.Command{
		Use:   "before-install [--revision V]",
		Short: "BeforeInstall: record the CodeDeploy deployment and take its checkpoint; exit 1 without one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.codedeploy(cmd.Context(), revision, false)
		},
	}
	gate := &cobra.Command{
		Use:   "validate-service [--revision V]",
		Short: "ValidateService: the agent's health checks as the gate; exit 1 when unhealthy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.codedeploy(cmd.Context(), revision, true)
		},
	}
	for _, c := range []*cobra.Command{before, gate} {
		c.Flags().StringVar(&revision, "revision", "", "the version agentctl push bundled (it writes it into the hook)")
	}
	cmd.AddCommand(before, gate)
	return cmd
}

// codedeploy is one of the two hooks.
func (g *globals) codedeploy(parent context.Context, revision string, gate bool) error {
	ref := api.CodeDeployRef{
		DeploymentID: os.Getenv(envDeploymentID), Application: os.Getenv(envApplicationName),
		DeploymentGroup: os.Getenv(envDeploymentGroup), GroupID: os.Getenv(envGroupID),
	}
	if ref.DeploymentID == "" {
		return usageErr("%s is not set: this command is a CodeDeploy hook (agentctl push --codedeploy-app adds it to the appspec)", envDeploymentID)
	}
	ctx, cancel := g.ctx(parent)
	defer cancel()
	c := g.client()
	if own, err := g.ownDeployment(ctx, ref.DeploymentID); err != nil {
		return err
	} else if own {
		fmt.Fprintf(g.stdout, "run by rollback-agent's own deployment %s: it takes its own checkpoint and is its own health gate; nothing to do\n", ref.DeploymentID)
		return nil
	}
	req := api.CodeDeployRequest{CodeDeploy: ref, Revision: revision}
	if !gate {
		d, err := c.CodeDeployBegin(ctx, req)
		if err != nil {
			return err
		}
		return g.print(api.DeploymentBody{SchemaVersion: api.SchemaVersion, Deployment: *d}, func(w io.Writer) {
			if d.Checkpoint != "" {
				fmt.Fprintf(w, "checkpoint %s taken before CodeDeploy deployment %s (%s %s; agent record %s)\n", d.Checkpoint, ref.DeploymentID, os.Getenv(envLifecycleEvent), d.Revision, d.ID)
			} else {
				fmt.Fprintf(w, "CodeDeploy deployment %s recorded as %s, without a checkpoint (checkpoint.before_deploy)\n", ref.DeploymentID, d.ID)
			}
		})
	}
	d, err := c.CodeDeployGate(ctx, req)
	if err != nil {
		return err
	}
	if err := g.print(api.DeploymentBody{SchemaVersion: api.SchemaVersion, Deployment: *d}, func(w io.Writer) {
		if d.Health != nil {
			printChecks(g, d.Health.Checks)
		}
		if d.Status == api.StatusSucceeded {
			fmt.Fprintf(w, "health gate open for CodeDeploy deployment %s (agent record %s)\n", ref.DeploymentID, d.ID)
		} else {
			fmt.Fprintf(w, "health gate CLOSED for CodeDeploy deployment %s (agent record %s, %s): %s\n", ref.DeploymentID, d.ID, d.Status, d.Error)
		}
	}); err != nil {
		return err
	}
	if d.Status != api.StatusSucceeded {
		return failed("the health gate closed")
	}
	return nil
}

// ownDeployment reports whether the hook runs inside rollback-agent's own
// deployment of the same bundle: the agent gives its hooks DEPLOYMENT_ID
// = its own record's id, which is then the operation in flight.
func (g *globals) ownDeployment(ctx context.Context, id string) (bool, error) {
	if _, ok := os.LookupEnv("ROLLBACK_AGENT_DEPLOYMENT_REVISION"); ok {
		return true, nil
	}
	st, err := g.client().Status(ctx)
	if err != nil {
		return false, err
	}
	return st.Operation != nil && st.Operation.DeploymentID == id && st.Operation.Kind != api.KindCodeDeploy, nil
}
