// Command agentctl-aws is agentctl with its workstation commands, which
// link the AWS SDK; agentctl runs it for them (see internal/cli).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/rollback-agent/rollback-agent/internal/cli"
	"github.com/rollback-agent/rollback-agent/internal/cli/workstation"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.RunWith(ctx, os.Args[1:], os.Stdout, os.Stderr, workstation.Commands)
	stop()
	os.Exit(cli.ExitCode(err))
}
