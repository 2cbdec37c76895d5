// Command rollback-agent is the daemon; see internal/daemon.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/rollback-agent/rollback-agent/internal/daemon"
)

func main() {
	err := daemon.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "rollback-agent:", err)
	var ee *daemon.ExitError
	if errors.As(err, &ee) {
		os.Exit(ee.Code)
	}
	os.Exit(1)
}
