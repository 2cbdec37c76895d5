package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/client"
)

func newCheckpointCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "checkpoint",
		Short: "Rollback points of this host: EBS snapshot sets and AMIs",
	}
	cmd.AddCommand(newCheckpointCreateCmd(g), newCheckpointListCmd(g), newCheckpointShowCmd(g),
		newCheckpointPinCmd(g, true), newCheckpointPinCmd(g, false), newCheckpointPruneCmd(g),
		newCheckpointDeleteCmd(g), newCheckpointRestoreCmd(g))
	return cmd
}

func newCheckpointCreateCmd(g *globals) *cobra.Command {
	var label, reason string
	var kinds []string
	var wait, pin bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Take a checkpoint now (returns once the point in time is fixed; --wait for completion)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var want []api.CheckpointKind
			for _, k := range kinds {
				if k := api.CheckpointKind(k); k != api.KindEBS && k != api.KindAMI {
					return usageErr("--kind %q: want ebs or ami", k)
				}
				want = append(want, api.CheckpointKind(k))
			}
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			c, err := g.client().CreateCheckpoint(ctx, api.CheckpointRequest{Kinds: want, Label: label, Pin: pin, Reason: reason})
			var ae *client.APIError
			if errors.As(err, &ae) && ae.Code == api.CodeDisabled {
				// Not an error for the package manager hook that asked.
				fmt.Fprintln(g.stderr, "agentctl: no checkpoint: "+ae.Message)
				return nil
			}
			if err != nil {
				return err
			}
			if !wait {
				return g.print(checkpointBody(c), func(w io.Writer) {
					fmt.Fprintf(w, "checkpoint %s taken (%s): %s\n", c.ID, joinKinds(c.Kinds), c.State)
				})
			}
			c, err = g.waitCheckpoint(cmd.Context(), c.ID)
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(g.stdout, checkpointBody(c))
			}
			fmt.Fprintf(g.stdout, "checkpoint %s %s\n", c.ID, c.State)
			if c.State != api.CheckpointCompleted {
				return failed("checkpoint %s ended %s", c.ID, c.State)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&label, "label", "", "a label for it (e.g. \"apt 2026-11-25\")")
	cmd.Flags().StringSliceVar(&kinds, "kind", nil, "ebs, ami or ebs,ami (default: checkpoint.before_deploy, or ebs)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until it is complete, with progress")
	cmd.Flags().BoolVar(&pin, "pin", false, "never prune it (a release AMI kept for good)")
	cmd.Flags().StringVar(&reason, "reason", "manual", "why: manual, or package-manager (the apt/dnf hooks; a no-op unless checkpoint.package_managers is on)")
	return cmd
}

// waitCheckpoint follows a checkpoint until it is no longer pending: a
// progress bar on a terminal, a line per change otherwise.
func (g *globals) waitCheckpoint(ctx context.Context, id string) (*api.Checkpoint, error) {
	live := isTerminal(g.stdout) && !g.json()
	last := ""
	for {
		c, err := func() (*api.Checkpoint, error) {
			cctx, cancel := g.ctx(ctx)
			defer cancel()
			return g.client().Checkpoint(cctx, id)
		}()
		if err != nil {
			return nil, err
		}
		line := fmt.Sprintf("%s %s %s", c.ID, c.State, c.Progress)
		switch {
		case live:
			fmt.Fprintf(g.stdout, "\r\033[K%s %s", progressBar(c.Progress), line)
		case !g.json() && line != last:
			fmt.Fprintln(g.stdout, time.Now().Format(time.TimeOnly)+"  "+line)
		}
		last = line
		if c.State != api.CheckpointPending {
			if live {
				fmt.Fprintln(g.stdout)
			}
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func progressBar(p string) string {
	var n int
	fmt.Sscanf(strings.TrimSuffix(p, "%"), "%d", &n)
	n = max(0, min(100, n))
	return "[" + strings.Repeat("#", n/5) + strings.Repeat("-", 20-n/5) + "]"
}

func newCheckpointListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List this host's checkpoints (rebuilt from AWS)",
		Args:  cobra.NoArgs,
		RunE: query(g, func(ctx context.Context, c *client.Client, _ []string) (*api.CheckpointList, error) {
			return c.Checkpoints(ctx)
		}, nil, printCheckpoints),
	}
}

func printCheckpoints(w io.Writer, l *api.CheckpointList) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKINDS\tSTATE\tPROGRESS\tCREATED\tREASON\tREVISION\tLABEL\tKEPT BECAUSE")
	for _, c := range l.Checkpoints {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, joinKinds(c.Kinds), c.State, orDash(c.Progress),
			c.CreatedAt.Local().Format(time.DateTime), orDash(c.Reason), orDash(c.Revision), orDash(c.Label), orDash(c.Protected))
	}
	tw.Flush()
	if len(l.ReplacedVolumes) > 0 {
		fmt.Fprintln(w, "\nvolumes kept after restores (undo):")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VOLUME\tDEVICE\tREPLACED BY\tCHECKPOINT\tAT")
		for _, v := range l.ReplacedVolumes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.VolumeID, v.DeviceName, v.ReplacedBy, v.Checkpoint, v.ReplacedAt.Local().Format(time.DateTime))
		}
		tw.Flush()
	}
}

func newCheckpointShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one checkpoint with its snapshots and image",
		Args:  cobra.ExactArgs(1),
		RunE: query(g, func(ctx context.Context, c *client.Client, args []string) (*api.Checkpoint, error) {
			return c.Checkpoint(ctx, args[0])
		}, checkpointBody, printCheckpoint),
	}
}

func printCheckpoint(w io.Writer, c *api.Checkpoint) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range [][2]string{
		{"ID", c.ID}, {"KINDS", joinKinds(c.Kinds)}, {"STATE", string(c.State)}, {"PROGRESS", c.Progress},
		{"CREATED", c.CreatedAt.Local().Format(time.DateTime)}, {"REASON", c.Reason}, {"REVISION", c.Revision},
		{"DEPLOYMENT", c.Deployment}, {"LABEL", c.Label}, {"PINNED", fmt.Sprint(c.Pinned)}, {"KEPT BECAUSE", c.Protected},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], orDash(r[1]))
	}
	tw.Flush()
	if len(c.Snapshots) > 0 {
		fmt.Fprintln(w, "\nSNAPSHOTS")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, s := range c.Snapshots {
			root := ""
			if s.Root {
				root = "root"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s %s\t%d GiB\n", s.SnapshotID, s.VolumeID, orDash(s.DeviceName), root, s.State, s.Progress, s.SizeGiB)
		}
		tw.Flush()
	}
	if c.Image != nil {
		fmt.Fprintf(w, "\nIMAGE %s %q %s (snapshots %s)\n", c.Image.ImageID, c.Image.Name, c.Image.State, strings.Join(c.Image.SnapshotIDs, ","))
	}
}

func newCheckpointPinCmd(g *globals, pin bool) *cobra.Command {
	use, short := "unpin ID", "Let retention prune it again"
	if pin {
		use, short = "pin ID", "Keep it for good: never pruned"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: query(g, func(ctx context.Context, c *client.Client, args []string) (*api.Checkpoint, error) {
			return c.PinCheckpoint(ctx, args[0], pin)
		}, checkpointBody, func(w io.Writer, c *api.Checkpoint) {
			fmt.Fprintf(w, "checkpoint %s pinned=%v\n", c.ID, c.Pinned)
		}),
	}
}

func newCheckpointPruneCmd(g *globals) *cobra.Command {
	var dry bool
	cmd := &cobra.Command{
		Use:   "prune [--dry-run]",
		Short: "Apply retention (keep_checkpoints, max_age) now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			rep, err := g.client().PruneCheckpoints(ctx, dry)
			if err != nil {
				return err
			}
			if g.json() {
				if err := writeJSON(g.stdout, rep); err != nil {
					return err
				}
			} else {
				verb := "deleted"
				if dry {
					verb = "would delete"
				}
				fmt.Fprintf(g.stdout, "%s %d: %s\n", verb, len(rep.Deleted), strings.Join(rep.Deleted, " "))
				ids := make([]string, 0, len(rep.Kept))
				for id := range rep.Kept {
					ids = append(ids, id)
				}
				sort.Strings(ids)
				for _, id := range ids {
					fmt.Fprintf(g.stdout, "kept %s: %s\n", id, rep.Kept[id])
				}
				for _, e := range rep.Errors {
					fmt.Fprintln(g.stdout, "error: "+e)
				}
			}
			if len(rep.Errors) > 0 {
				return failed("%d delete(s) failed", len(rep.Errors))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dry, "dry-run", false, "only say what would be deleted")
	return cmd
}

func newCheckpointDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a checkpoint's snapshots and image",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			if err := g.client().DeleteCheckpoint(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "checkpoint %s deleted\n", args[0])
			return nil
		},
	}
}

func newCheckpointRestoreCmd(g *globals) *cobra.Command {
	var volumes, root, wait bool
	cmd := &cobra.Command{
		Use:   "restore ID --volumes|--root",
		Short: "Restore a checkpoint's data volumes (--volumes) or root volume (--root: the host reboots)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if volumes == root {
				return usageErr("say what to restore: --volumes or --root")
			}
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			ref, err := g.client().RestoreCheckpoint(ctx, args[0], api.RestoreRequest{Volumes: volumes, Root: root})
			if err != nil {
				return err
			}
			return g.afterSubmit(cmd.Context(), ref, wait)
		},
	}
	cmd.Flags().BoolVar(&volumes, "volumes", false, "restore the data volumes (the old ones are kept, detached)")
	cmd.Flags().BoolVar(&root, "root", false, "replace the root volume (EC2 reboots the host)")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow it to its end")
	return cmd
}

// joinKinds is a checkpoint's kinds as one word: ebs+ami.
func joinKinds(ks []api.CheckpointKind) string {
	parts := make([]string, len(ks))
	for i, k := range ks {
		parts[i] = string(k)
	}
	return strings.Join(parts, "+")
}
