package workstation

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-agent/rollback-agent/internal/cli"
	"github.com/rollback-agent/rollback-agent/internal/fleet"
	"github.com/rollback-agent/rollback-agent/internal/push"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

func newReleasesCmd(g *cli.Globals) *cobra.Command {
	var af awsFlags
	var bucket, prefix, app string
	cmd := &cobra.Command{
		Use:   "releases --bucket B --app A [--prefix P]",
		Short: "List an app's uploaded versions and what each release channel points at",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := workCtx(g, cmd)
			defer cancel()
			clients, err := af.clients(ctx)
			if err != nil {
				return err
			}
			l, err := push.ListReleases(ctx, clients.S3, bucket, prefix, app)
			if err != nil {
				return err
			}
			return g.Print(l, func(w io.Writer) { printReleases(w, l) })
		},
	}
	cmd.Flags().StringVar(&bucket, "bucket", "", "S3 bucket of the releases (required)")
	cmd.Flags().StringVar(&prefix, "prefix", "", "key prefix before the app's name")
	cmd.Flags().StringVar(&app, "app", "", "application name (required)")
	af.add(cmd)
	_ = cmd.MarkFlagRequired("bucket")
	_ = cmd.MarkFlagRequired("app")
	return cmd
}

func printReleases(w io.Writer, l *push.Listing) {
	fmt.Fprintf(w, "s3://%s/%s\n", l.Bucket, l.Prefix)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tCREATED\tSIZE\tSHA256\tSIGNED\tCHANNELS")
	for _, r := range l.Releases {
		if r.Manifest == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t%s\n", r.Version, "problem: "+r.Problem)
			continue
		}
		signed := "no"
		if r.Signed {
			signed = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", r.Version, r.Manifest.CreatedAt.Format("2006-01-02 15:04:05Z"), r.Manifest.Size,
			r.Manifest.SHA256[:12], signed, cli.OrDash(strings.Join(r.Channels, ",")))
	}
	tw.Flush()
	if len(l.Channels) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "CHANNEL\tVERSION\tSEQUENCE\tUPDATED\tBY")
		for _, c := range l.Channels {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", c.Channel, c.Version, c.Sequence, c.UpdatedAt.Format("2006-01-02 15:04:05Z"), c.UpdatedBy)
		}
		tw.Flush()
	}
	for _, p := range l.Problems {
		fmt.Fprintln(w, "warning: "+p)
	}
}

func newPromoteCmd(g *cli.Globals) *cobra.Command {
	var af awsFlags
	var o push.PromoteOptions
	var signKey, after, minHealthy string
	var soak time.Duration
	cmd := &cobra.Command{
		Use:   "promote --bucket B --app A --channel C --version V [--sign-key K] [--after CANARY [--min-healthy 100%] [--soak 10m]]",
		Short: "Point a release channel at an uploaded version (an older one: a fleet-wide rollback)",
		Long: "Point channel C at version V, which must have been pushed. Every move is a new, higher sequence\n" +
			"number, also a move back to an older version; agents refuse a sequence that goes backwards.\n" +
			"Sign the channel with --sign-key when the agents require signatures.\n\n" +
			"With --after, C moves only when the hosts of channel CANARY (their host documents, see agentctl fleet)\n" +
			"run V with nothing in flight, healthy, for at least --soak, and at least --min-healthy of them do;\n" +
			"otherwise nothing moves, the hosts that hold it back are listed with why, and the exit status is 1.\n" +
			"A wave is then a channel: push to canary, promote prod --after canary.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			share, err := parseShare(minHealthy)
			if err != nil {
				return cli.UsageErr("%v", err)
			}
			if after == "" && (cmd.Flags().Changed("min-healthy") || cmd.Flags().Changed("soak")) {
				return cli.UsageErr("--min-healthy and --soak need --after: the channel whose hosts gate the promotion")
			}
			if after != "" {
				if err := release.CheckName("--after", after); err != nil {
					return cli.UsageErr("%v", err)
				}
				if after == o.Channel {
					return cli.UsageErr("--after %s is the channel being moved", after)
				}
			}
			if soak < 0 {
				return cli.UsageErr("--soak %s: want a duration of 0 or more", soak)
			}
			key, err := loadSignKey(g, signKey)
			if err != nil {
				return err
			}
			o.Key = key
			ctx, cancel := workCtx(g, cmd)
			defer cancel()
			clients, err := af.clients(ctx)
			if err != nil {
				return err
			}
			var gate *fleet.GateResult
			if after != "" {
				if gate, err = gatePromotion(ctx, g, af, o.Bucket, o.Prefix, o.App, fleet.GateOptions{After: after, Version: o.Version, MinHealthy: share, Soak: soak}); err != nil {
					return err
				}
			}
			ch, err := push.Promote(ctx, clients.S3, o)
			if err != nil {
				return err
			}
			out := struct {
				*release.ChannelDoc
				Gate *fleet.GateResult `json:"gate,omitempty"`
			}{ch, gate}
			return g.Print(out, func(w io.Writer) {
				if gate != nil {
					fmt.Fprintf(w, "gate passed: %s\n", gate.Why())
				}
				fmt.Fprintf(w, "channel %s of %s now at %s (sequence %d)\n", ch.Channel, ch.App, ch.Version, ch.Sequence)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Bucket, "bucket", "", "S3 bucket of the releases (required)")
	f.StringVar(&o.Prefix, "prefix", "", "key prefix before the app's name")
	f.StringVar(&o.App, "app", "", "application name (required)")
	f.StringVar(&o.Channel, "channel", "", "channel to move (required)")
	f.StringVar(&o.Version, "version", "", "version to point it at (required)")
	f.StringVar(&signKey, "sign-key", "", "minisign secret key to sign the channel")
	f.StringVar(&after, "after", "", "move only when the hosts of this channel run the version healthy (agentctl fleet)")
	f.StringVar(&minHealthy, "min-healthy", "100%", "with --after: the share of its hosts that must be ready")
	f.DurationVar(&soak, "soak", 0, "with --after: how long each host must have run the version, healthy")
	af.add(cmd)
	for _, name := range []string{"bucket", "app", "channel", "version"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}
