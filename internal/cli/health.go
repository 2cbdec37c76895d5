package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

func newHealthCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "Run the health checks now and print each result; exit 1 when unhealthy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			rep, err := g.client().Health(ctx)
			if err != nil {
				return err
			}
			if g.json() {
				if err := writeJSON(g.stdout, rep); err != nil {
					return err
				}
			} else {
				printChecks(g, rep.Checks)
				if len(rep.Checks) == 0 {
					fmt.Fprintln(g.stdout, "no health checks configured (health.checks in agent.yaml)")
				} else if rep.Healthy {
					fmt.Fprintln(g.stdout, "healthy")
				} else {
					fmt.Fprintln(g.stdout, "UNHEALTHY")
				}
			}
			if !rep.Healthy {
				return failed("unhealthy")
			}
			return nil
		},
	}
}

func printChecks(g *globals, checks []api.CheckResult) {
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tKIND\tRESULT\tTOOK\tOUTPUT")
	for _, c := range checks {
		res := "ok"
		if !c.Healthy {
			res = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Kind, res, c.Duration.Round(time.Millisecond), checkText(c))
	}
	tw.Flush()
}

// checkText is a check's output on one line, with the first line of its
// detail for root, or a note that the detail is root's to see.
func checkText(c api.CheckResult) string {
	s := firstLine(strings.TrimSpace(c.Output))
	switch {
	case c.DetailWithheld:
		s += " (details shown to root only)"
	case strings.TrimSpace(c.Detail) != "":
		s += ": " + firstLine(strings.TrimSpace(c.Detail))
	}
	return s
}

func newGuardCmd(g *globals) *cobra.Command {
	var label string
	cmd := &cobra.Command{
		Use:   "guard [--label L] -- CMD [ARGS...]",
		Short: "Run a local change (a package upgrade, say) with a checkpoint before and a health check after",
		Long: "Take a checkpoint (reason guard), run the command here with its output on the terminal, then let the\n" +
			"agent assess health: healthy keeps the change (exit: the command's status); unhealthy climbs the\n" +
			"rollback ladder from the volumes rung (a package upgrade is not a revision) and exits 1.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if label == "" {
				label = strings.Join(args, " ")
			}
			ctx := cmd.Context()
			started, err := g.client().Guard(ctx, api.GuardRequest{Label: label})
			if err != nil {
				return err
			}
			if !g.json() {
				fmt.Fprintf(g.stderr, "guard %s: checkpoint %s taken; running %s\n", started.ID, started.Checkpoint, strings.Join(args, " "))
			}
			code := runGuarded(args)
			if err := g.client().GuardDone(ctx, started.ID, code); err != nil {
				return err
			}
			d, err := g.follow(ctx, started.ID)
			if err != nil {
				return err
			}
			if g.json() {
				if err := writeJSON(g.stdout, d); err != nil {
					return err
				}
			} else {
				printOutcome(g.stdout, d)
			}
			switch {
			case d.Status != api.StatusSucceeded:
				return failed("guard %s ended %s", d.ID, d.Status)
			case code != 0:
				return &exitError{code: code, err: fmt.Errorf("the command exited %d (the host is healthy; the change was kept)", code)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&label, "label", "", "what the change is (default: the command line)")
	return cmd
}

// runGuarded runs the command with the terminal's stdio and returns its
// exit status (127 when it could not be started, as a shell does).
func runGuarded(args []string) int {
	c := exec.Command(args[0], args[1:]...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := c.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if code := ee.ExitCode(); code >= 0 {
			return code
		}
		return 128
	default:
		fmt.Fprintln(os.Stderr, "agentctl guard:", err)
		return 127
	}
}
