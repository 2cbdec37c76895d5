package cli

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/rollback-agent/rollback-agent/internal/client"
)

// Command returns agentctl's whole command tree, with the commands more
// adds (workstation.Command passes the workstation commands), for the
// documentation generators (internal/docs). Its flags are bound to
// throwaway globals, and it is never executed.
func Command(more Commands) *cobra.Command {
	root := newRoot(&globals{stdout: io.Discard, stderr: io.Discard}, more)
	// The socket flag's default follows $ROLLBACK_AGENT_SOCKET when agentctl
	// starts; the docs must not depend on the shell that generated them.
	if f := root.PersistentFlags().Lookup("socket"); f != nil {
		f.DefValue = client.DefaultSocket
	}
	// `completion` is added by cobra when it executes; the docs list it too.
	root.InitDefaultCompletionCmd()
	// No generation date in the pages: they are compared with the tree.
	root.DisableAutoGenTag = true
	return root
}
