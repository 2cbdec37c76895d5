package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rollback-agent/rollback-agent/internal/lint"
)

func newLintCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "lint BUNDLE|DIR",
		Short: "Check a revision offline: what this agent refuses, and what CodeDeploy's agent would do differently",
		Long: "Unpack a bundle (zip, tar, tgz) or bundle a directory as `agentctl deploy` does, and validate its\n" +
			"appspec, files and permissions with this agent's rules, without a daemon. The report lists apart:\n" +
			"errors (the agent refuses the revision before any hook runs), warnings, and CODEDEPLOY: what AWS\n" +
			"CodeDeploy's own agent would refuse or do differently (see docs/codedeploy/compatibility.md), such as\n" +
			"a misspelt event, an unquoted mode 0755, a quoted version, a lowercase file_exists_behavior, two\n" +
			"permissions on one path, appspec.yaml without appspec.yml, or a script that leaves a background\n" +
			"process holding its output. Users and groups the appspec names are listed: they must exist on the\n" +
			"hosts. Exit status 1 when there are errors.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			rep, err := lint.Lint(ctx, args[0])
			if err != nil {
				return err
			}
			if err := g.print(rep, func(w io.Writer) { printLint(w, rep) }); err != nil {
				return err
			}
			if !rep.OK() {
				return failed("%s: %d error(s): this agent would refuse the revision", args[0], len(rep.Errors))
			}
			return nil
		},
	}
}

func printLint(w io.Writer, rep *lint.Report) {
	fmt.Fprintf(w, "%s: %s, %d files\n", rep.Path, rep.Format, rep.Files)
	section := func(title string, lines []string) {
		if len(lines) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s\n", title)
		for _, l := range lines {
			fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(l, "\n", "\n    "))
		}
	}
	section("ERRORS (this agent refuses the revision)", rep.Errors)
	section("WARNINGS (this agent deploys it and warns)", rep.Warnings)
	section("CODEDEPLOY (what CodeDeploy's agent would refuse or do differently)", rep.CodeDeploy)
	if len(rep.HostUsers)+len(rep.HostGroups) > 0 {
		fmt.Fprintf(w, "\nNEEDED ON THE HOSTS\n")
		if len(rep.HostUsers) > 0 {
			fmt.Fprintf(w, "  users: %s\n", strings.Join(rep.HostUsers, ", "))
		}
		if len(rep.HostGroups) > 0 {
			fmt.Fprintf(w, "  groups: %s\n", strings.Join(rep.HostGroups, ", "))
		}
	}
	if rep.OK() && len(rep.Warnings)+len(rep.CodeDeploy) == 0 {
		fmt.Fprintln(w, "\nno problems found")
	}
}
