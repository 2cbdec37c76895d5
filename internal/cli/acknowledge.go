package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func newAcknowledgeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "acknowledge TROUBLE",
		Short: "Tell the agent an operator saw the trouble that stopped it (needs_operator), so it takes work again",
		Long: "When the agent's own record is in trouble (TROUBLE journal-lost: its journal vanished, was emptied or was\n" +
			"replaced), it reports needs_operator and deploys nothing, from any source, until an operator has looked:\n" +
			"agentctl status says what happened and what to check. Then acknowledge it by the name status gives.\n" +
			"The applied sequences of release channels survive (journal.witness), so a replayed older channel is\n" +
			"still refused afterwards. Root only.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			st, err := g.client().Acknowledge(ctx, args[0])
			if err != nil {
				return err
			}
			return g.print(st, func(w io.Writer) {
				fmt.Fprintf(w, "acknowledged %s; the agent is %s: %s\n", args[0], st.State, st.Summary)
			})
		},
	}
}
