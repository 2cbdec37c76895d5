package cli

import (
	"context"
	"io"

	"github.com/spf13/cobra"
)

// What the workstation commands (internal/cli/workstation, linked only
// into agentctl-aws: see workstation.go) use of agentctl's shared flags
// and output helpers.

// Globals are the flags every command shares.
type Globals = globals

// Commands builds a set of commands on the shared flags.
type Commands func(*Globals) []*cobra.Command

// Stdout is where a command prints its result.
func (g *globals) Stdout() io.Writer { return g.stdout }

// Stderr is where a command prints progress and prompts.
func (g *globals) Stderr() io.Writer { return g.stderr }

// JSON reports whether -o json was asked for.
func (g *globals) JSON() bool { return g.json() }

// Ctx bounds one command by --timeout.
func (g *globals) Ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return g.ctx(parent)
}

// Print writes a command's result: v as JSON with -o json, else text.
func (g *globals) Print(v any, text func(io.Writer)) error { return g.print(v, text) }

// UsageErr marks a usage mistake (exit 2).
func UsageErr(format string, args ...any) error { return usageErr(format, args...) }

// WriteJSON writes v as indented JSON.
func WriteJSON(w io.Writer, v any) error { return writeJSON(w, v) }

// OrDash is s, or "-" when empty.
func OrDash(s string) string { return orDash(s) }

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool { return isTerminal(w) }

// Failed marks an operation that ran and failed (exit 1), its story
// printed already.
func Failed(format string, args ...any) error { return failed(format, args...) }
