// Package cli is agentctl: the cobra commands that talk to the daemon over
// its socket, and the workstation commands that talk to AWS.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/client"
)

// Exit statuses of agentctl (README, CLI reference).
const (
	ExitOK          = 0
	ExitFailed      = 1
	ExitUsage       = 2
	ExitUnreachable = 3
	ExitDenied      = 4
)

// exitError carries an exit status through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr marks a usage mistake (exit 2).
func usageErr(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

// failed marks an operation that ran and failed (exit 1) and whose story
// was already printed.
func failed(format string, args ...any) error {
	return &exitError{code: ExitFailed, err: fmt.Errorf(format, args...)}
}

// ExitCode maps Run's error to the process exit status.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var nr *client.NotRunningError
	var nready *client.NotReadyError
	if errors.As(err, &nr) || errors.As(err, &nready) {
		return ExitUnreachable
	}
	var de *client.DeniedError
	if errors.As(err, &de) {
		return ExitDenied
	}
	return ExitFailed
}

// globals are the flags every command shares.
type globals struct {
	socket string
	// socketOwner is --socket-owner: a user besides root (and the caller)
	// whose socket agentctl may talk to.
	socketOwner string
	ownerUID    []int
	output      string
	timeout     time.Duration
	stdout      io.Writer
	stderr      io.Writer
	// args is the command line, for handing it to HelperName whole.
	args []string
}

func (g *globals) client() *client.Client { return client.New(g.socket, g.ownerUID...) }

// resolveOwner turns --socket-owner (a user name or uid) into a uid.
func (g *globals) resolveOwner() error {
	if g.socketOwner == "" {
		return nil
	}
	if uid, err := strconv.Atoi(g.socketOwner); err == nil && uid >= 0 {
		g.ownerUID = []int{uid}
		return nil
	}
	u, err := user.Lookup(g.socketOwner)
	if err != nil {
		return usageErr("--socket-owner %q: %v", g.socketOwner, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return usageErr("--socket-owner %q: uid %q is not a number", g.socketOwner, u.Uid)
	}
	g.ownerUID = []int{uid}
	return nil
}

// ctx bounds one command by --timeout.
func (g *globals) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	if g.timeout <= 0 {
		return context.WithCancel(parent)
	}
	return context.WithTimeout(parent, g.timeout)
}

func (g *globals) json() bool { return g.output == "json" }

// query is the RunE of a read-only command: ask the agent for one value,
// then print it as a JSON body (-o json; body wraps it, nil for as is) or
// as text.
func query[T any](g *globals, ask func(context.Context, *client.Client, []string) (T, error), body func(T) any, text func(io.Writer, T)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		ctx, cancel := g.ctx(cmd.Context())
		defer cancel()
		v, err := ask(ctx, g.client(), args)
		if err != nil {
			return err
		}
		var js any = v
		if body != nil {
			js = body(v)
		}
		return g.print(js, func(w io.Writer) { text(w, v) })
	}
}

// print writes a command's result: v as JSON with -o json, else text.
func (g *globals) print(v any, text func(io.Writer)) error {
	if g.json() {
		return writeJSON(g.stdout, v)
	}
	text(g.stdout)
	return nil
}

// checkpointBody is the JSON body of one checkpoint, as the API sends it.
func checkpointBody(c *api.Checkpoint) any {
	return api.CheckpointBody{SchemaVersion: api.SchemaVersion, Checkpoint: *c}
}

// Run is agentctl: cmd/agentctl's main calls it and exits with ExitCode.
// The workstation commands are handed to HelperName (workstation.go).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 1 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd) && isWorkstation(args[1]) {
		// Shell completion of a workstation command's flags.
		return execHelper(args)
	}
	return RunWith(ctx, args, stdout, stderr, standIns)
}

// RunWith is agentctl with the commands more adds: HelperName's main
// passes the workstation commands.
func RunWith(ctx context.Context, args []string, stdout, stderr io.Writer, more Commands) error {
	g := &globals{stdout: stdout, stderr: stderr, args: args}
	root := newRoot(g, more)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return nil
	}
	code := ExitCode(err)
	// cobra's own argument and flag errors are usage errors.
	var ee *exitError
	if !errors.As(err, &ee) && !isClientError(err) && isCobraUsage(err) {
		code = ExitUsage
		err = &exitError{code: ExitUsage, err: err}
	}
	fmt.Fprintln(stderr, "agentctl: "+err.Error())
	if hint := hintFor(err, g.socket); hint != "" {
		fmt.Fprintln(stderr, hint)
	}
	if code == ExitUsage {
		fmt.Fprintln(stderr, "Run 'agentctl --help' for usage.")
	}
	return err
}

func isClientError(err error) bool {
	var nr *client.NotRunningError
	var de *client.DeniedError
	var ae *client.APIError
	var nready *client.NotReadyError
	var ue *client.UntrustedSocketError
	return errors.As(err, &nr) || errors.As(err, &de) || errors.As(err, &ae) || errors.As(err, &nready) || errors.As(err, &ue)
}

// isCobraUsage recognises cobra's unexported usage errors by their text.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires ", "invalid argument", "flag needs an argument", "required flag"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

func hintFor(err error, socket string) string {
	var nr *client.NotRunningError
	var de *client.DeniedError
	var nready *client.NotReadyError
	var ue *client.UntrustedSocketError
	switch {
	case errors.As(err, &nr):
		return "hint: check the daemon with 'systemctl status rollback-agent' and 'journalctl -u rollback-agent'" +
			" (or point --socket at another agent; now " + socket + ")"
	case errors.As(err, &nready):
		return "hint: the agent is starting; try again in a moment, or watch 'journalctl -u rollback-agent -f'"
	case errors.As(err, &de):
		return "hint: run as root (sudo agentctl ...), or join the agent's socket group for read-only commands"
	case errors.As(err, &ue):
		return "hint: check who made " + socket + " (ls -l) and the agent's socket setting; the agent refuses to start with its socket in a directory others can write"
	}
	return ""
}

func newRoot(g *globals, more Commands) *cobra.Command {
	root := &cobra.Command{
		Use:           "agentctl",
		Short:         "Control the rollback-agent on this host, and publish releases from a workstation",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       "", // `agentctl version` prints more than cobra's --version would
	}
	defSocket := client.DefaultSocket
	if v := os.Getenv("ROLLBACK_AGENT_SOCKET"); v != "" {
		defSocket = v
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.socket, "socket", defSocket, "the agent's socket (env ROLLBACK_AGENT_SOCKET)")
	pf.StringVar(&g.socketOwner, "socket-owner", os.Getenv("ROLLBACK_AGENT_SOCKET_OWNER"),
		"a user besides root whose agent socket may be trusted (env ROLLBACK_AGENT_SOCKET_OWNER)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&g.timeout, "timeout", 30*time.Second, "give up after this long (0: no limit)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if g.output != "table" && g.output != "json" {
			return usageErr("--output %q: want table or json", g.output)
		}
		return g.resolveOwner()
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: ExitUsage, err: err}
	})
	root.AddCommand(newStatusCmd(g), newVersionCmd(g), newDeployCmd(g), newRollbackCmd(g), newHistoryCmd(g), newShowCmd(g), newLogsCmd(g), newCheckpointCmd(g), newHealthCmd(g), newGuardCmd(g), newDoctorCmd(g), newLintCmd(g), newAcknowledgeCmd(g), newRecoverCmd(g), newCodeDeployCmd(g))
	root.AddCommand(more(g)...)
	return root
}
