package cli

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/client"
)

func newHistoryCmd(g *globals) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "history",
		Short: "List deployments and rollbacks, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			deps, err := g.client().Deployments(ctx, limit)
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(g.stdout, api.DeploymentList{SchemaVersion: api.SchemaVersion, Deployments: deps})
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKIND\tREVISION\tSTATUS\tTRIGGER\tCREATED\tTOOK\tNOTE")
			for _, d := range deps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Kind, d.Revision, d.Status, d.Trigger,
					d.CreatedAt.Local().Format(time.DateTime), took(d), note(d))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "how many (0: all)")
	return cmd
}

func took(d api.Deployment) string {
	if d.StartedAt.IsZero() {
		return "-"
	}
	end := d.EndedAt
	if end.IsZero() {
		end = time.Now()
	}
	return end.Sub(d.StartedAt).Round(100 * time.Millisecond).String()
}

func note(d api.Deployment) string {
	switch {
	case d.NoOp:
		return "no-op (same digest as current)"
	case d.Kind == api.KindRollback:
		return "to " + d.RollbackTo
	case d.Status == api.StatusRolledBack && d.RolledBackTo != "":
		return "rolled back to " + d.RolledBackTo
	case d.Status == api.StatusRolledBack:
		return "rolled back (no earlier revision)"
	case d.Error != "":
		return firstLine(d.Error)
	}
	return ""
}

func newShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show DEPLOYMENT-ID",
		Short: "Show one deployment with its steps",
		Args:  cobra.ExactArgs(1),
		RunE: query(g, func(ctx context.Context, c *client.Client, args []string) (*api.Deployment, error) {
			return c.Deployment(ctx, args[0])
		}, func(d *api.Deployment) any {
			return api.DeploymentBody{SchemaVersion: api.SchemaVersion, Deployment: *d}
		}, printDeployment),
	}
}

func printDeployment(w io.Writer, d *api.Deployment) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	rows := [][2]string{
		{"ID", d.ID}, {"KIND", string(d.Kind)}, {"REVISION", d.Revision}, {"STATUS", string(d.Status)}, {"TRIGGER", d.Trigger},
		{"SOURCE", d.Source.Type + " " + d.Source.Location}, {"DIGEST", d.Digest}, {"CHECKPOINT", d.Checkpoint},
		{"CREATED", d.CreatedAt.Local().Format(time.DateTime)}, {"TOOK", took(*d)},
	}
	if d.RollbackTo != "" {
		rows = append(rows, [2]string{"ROLLBACK TO", d.RollbackTo})
	}
	if d.RolledBackTo != "" {
		rows = append(rows, [2]string{"ROLLED BACK TO", d.RolledBackTo})
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], orDash(r[1]))
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "STEPS")
	for i := range d.Steps {
		fmt.Fprintln(w, stepLine(&d.Steps[i]))
	}
	for _, r := range d.Rungs {
		fmt.Fprintf(w, "\nRUNG %s: %s  %s %s\n", r.Name, r.Status, r.Detail, r.Error)
	}
	if d.Error != "" {
		fmt.Fprintf(w, "\nERROR\n%s\n", d.Error)
	}
	for _, warn := range d.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}

func newLogsCmd(g *globals) *cobra.Command {
	var event string
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs DEPLOYMENT-ID",
		Short: "Print the output of a deployment's hook scripts",
		Long: "Print the output of a deployment's hook scripts, all events in order, or one with --event\n" +
			"(e.g. --event ValidateService; rollback steps are named revision-<Event>). -f follows until the deployment ends.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if !follow {
				var cancel func()
				ctx, cancel = g.ctx(ctx)
				defer cancel()
			}
			rc, err := g.client().Log(ctx, args[0], event, follow)
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = io.Copy(g.stdout, rc)
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("read log: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&event, "event", "", "only this lifecycle event")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the deployment ends")
	return cmd
}
