// Package workstation holds agentctl's workstation commands: push,
// releases, promote, keygen and restore-instance, which talk to AWS with
// the caller's credentials. They are linked only into agentctl-aws
// (cmd/agentctl-aws), which agentctl runs for them: see internal/cli's
// workstation.go for why.
package workstation

import (
	"github.com/spf13/cobra"

	"github.com/rollback-agent/rollback-agent/internal/cli"
)

// Commands are the workstation commands, in the order agentctl lists them.
func Commands(g *cli.Globals) []*cobra.Command {
	return []*cobra.Command{newRestoreInstanceCmd(g), newPushCmd(g), newReleasesCmd(g), newPromoteCmd(g), newFleetCmd(g), newKeygenCmd(g)}
}

// Command is agentctl's whole command tree, for the documentation.
func Command() *cobra.Command { return cli.Command(Commands) }
