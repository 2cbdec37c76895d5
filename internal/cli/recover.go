package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-agent/rollback-agent/internal/journal/aside"
)

func newRecoverCmd(*globals) *cobra.Command {
	rec := &cobra.Command{
		Use:   "recover",
		Short: "Recover the agent's own state after damage (run as root, with the agent stopped)",
	}
	stateDir := "/var/lib/rollback-agent"
	j := &cobra.Command{
		Use:   "journal",
		Short: "Move a damaged journal aside so that the agent starts again",
		Long: "When the journal is damaged (pages overwritten, a record that does not decode) the agent refuses to start\n" +
			"(exit 78) and says so. With the agent stopped, this moves STATE_DIR/journal.db to journal.db.damaged-TIME,\n" +
			"kept for inspection. The agent started next finds its journal gone, reports needs_operator (journal-lost)\n" +
			"and deploys nothing until `agentctl acknowledge journal-lost`; the applied channel sequences survive in\n" +
			"journal.witness, so an older channel is still refused. The deployment history is not rebuilt.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			moved, err := aside.MoveAside(stateDir, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "moved the journal to %s; start the agent, check `agentctl status`, then `agentctl acknowledge %s`\n",
				moved, aside.TroubleJournalLost)
			return nil
		},
	}
	j.Flags().StringVar(&stateDir, "state-dir", stateDir, "the agent's state_dir")
	rec.AddCommand(j)
	return rec
}
