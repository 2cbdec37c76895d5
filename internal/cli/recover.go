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
		Long: "When the journal is damaged (pages overwritten, a file bbolt refuses) the agent runs on a scratch journal\n" +
			"in needs_operator (journal-damaged): status and doctor say so, everything else is refused, and the damaged\n" +
			"file is held, never written. Stop the agent, then run this: it moves STATE_DIR/journal.db to\n" +
			"journal.db.damaged-TIME, kept for inspection. The agent started next finds its journal gone and reports\n" +
			"needs_operator (journal-lost) until `agentctl acknowledge journal-lost`; it rebuilds the installed revision\n" +
			"from the newest install manifest under releases/ and the checkpoint catalogue from AWS tags, and the\n" +
			"applied channel sequences survive in journal.witness, so an older channel is still refused. The deployment\n" +
			"history is not rebuilt.",
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
