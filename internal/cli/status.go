package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/client"
	"github.com/rollback-agent/rollback-agent/internal/version"
)

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show what the agent is doing: identity, revisions, operation, health, checkpoints",
		Args:  cobra.NoArgs,
		RunE: query(g, func(ctx context.Context, c *client.Client, _ []string) (*api.Status, error) {
			return c.Status(ctx)
		}, nil, printStatus),
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func revision(r *api.RevisionRef) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%s (deployment %s, %s)", r.Revision, r.DeploymentID, r.InstalledAt.Local().Format(time.DateTime))
}

// printStatus prints a one-line summary, then a key/value table, then the
// volumes.
func printStatus(w io.Writer, st *api.Status) {
	if st.State == api.StateNeedsOperator && st.Operator != nil {
		bar := strings.Repeat("!", 72)
		fmt.Fprintf(w, "%s\nNEEDS OPERATOR: %s\nNext: %s\n%s\n", bar, st.Operator.What, st.Operator.Next, bar)
	}
	fmt.Fprintln(w, st.Summary)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	id := st.Identity
	rows := [][2]string{
		{"STATE", string(st.State)},
		{"APPLICATION", st.Application},
		{"INSTANCE", id.InstanceID},
		{"REGION", id.Region},
		{"ZONE", id.AvailabilityZone},
		{"ACCOUNT", id.AccountID},
		{"TYPE", id.InstanceType},
		{"IDENTITY FROM", id.Source},
		{"CURRENT", revision(st.Current)},
		{"LAST GOOD", revision(st.LastGood)},
	}
	if op := st.Operation; op != nil {
		rows = append(rows, [2]string{"OPERATION", fmt.Sprintf("%s %s: %s (step %s, since %s)", op.Kind, op.DeploymentID, op.Status, op.Step, op.StartedAt.Local().Format(time.TimeOnly))})
	} else {
		rows = append(rows, [2]string{"OPERATION", "-"})
	}
	cp := st.Checkpoints
	cps := fmt.Sprintf("%d (%d pending)", cp.Total, cp.Pending)
	if cp.Newest != nil {
		cps += fmt.Sprintf("; newest %s (%s, %s, %s)", cp.Newest.ID, joinKinds(cp.Newest.Kinds), cp.Newest.State, cp.Newest.CreatedAt.Local().Format(time.DateTime))
	}
	rows = append(rows,
		[2]string{"CHECKPOINTS", cps},
		[2]string{"AGENT", fmt.Sprintf("%s (pid %d, up %s)", st.Agent.Version, st.Agent.PID, time.Since(st.Agent.StartedAt).Round(time.Second))},
		[2]string{"CONFIG", st.Config.Path},
	)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], orDash(r[1]))
	}
	for _, name := range sortedKeys(st.Sources) {
		src := st.Sources[name]
		line := src.Detail
		if src.LastError != "" {
			line += " (problem: " + firstLine(src.LastError) + ")"
		}
		fmt.Fprintf(tw, "SOURCE %s\t%s\n", strings.ToUpper(name), orDash(line))
	}
	if wv := st.Watch; wv != nil {
		fmt.Fprintf(tw, "WATCH WINDOW\t%s: %s left\n", wv.DeploymentID, time.Until(wv.Until).Round(time.Second))
	}
	if h := st.Health; h != nil {
		verdict := "healthy"
		if !h.Healthy {
			verdict = "UNHEALTHY"
		}
		fmt.Fprintf(tw, "HEALTH\t%s (assessed %s): %s\n", verdict, h.AssessedAt.Local().Format(time.TimeOnly), h.Reason)
		for _, c := range h.Checks {
			res := "ok"
			if !c.Healthy {
				res = "FAIL"
			}
			fmt.Fprintf(tw, "  %s\t%s %s %s\n", c.Name, c.Kind, res, checkText(c))
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VOLUME\tDEVICE\tROOT\tSIZE\tTYPE\tLINUX DEVICE")
	for _, v := range id.Volumes {
		root := "no"
		if v.Root {
			root = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d GiB\t%s\t%s\n", v.VolumeID, v.DeviceName, root, v.SizeGiB, orDash(v.VolumeType), orDash(v.LinuxDevice))
	}
	tw.Flush()
	for _, warn := range st.Warnings {
		fmt.Fprintln(w, "warning: "+warn)
	}
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print agentctl's version and, when it answers, the agent's",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := version.Get()
			out := struct {
				SchemaVersion int           `json:"schema_version"`
				Agentctl      version.Info  `json:"agentctl"`
				Agent         *version.Info `json:"agent,omitempty"`
				AgentError    string        `json:"agent_error,omitempty"`
			}{SchemaVersion: api.SchemaVersion, Agentctl: v}
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			if st, err := g.client().Status(ctx); err == nil {
				out.Agent = &version.Info{Version: st.Agent.Version, Commit: st.Agent.Commit, GoVersion: st.Agent.GoVersion}
			} else {
				out.AgentError = err.Error()
			}
			if g.json() {
				return writeJSON(g.stdout, out)
			}
			fmt.Fprintf(g.stdout, "agentctl %s\n", v)
			if out.Agent != nil {
				fmt.Fprintf(g.stdout, "rollback-agent %s\n", *out.Agent)
			} else {
				fmt.Fprintf(g.stdout, "rollback-agent: not reachable (%s)\n", out.AgentError)
			}
			return nil
		},
	}
}

// sortedKeys returns a map's keys in order, for stable output.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
