package workstation

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollback-agent/rollback-agent/internal/cli"
	"github.com/rollback-agent/rollback-agent/internal/fleet"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

func newFleetCmd(g *cli.Globals) *cobra.Command {
	var af awsFlags
	var bucket, prefix, app, channel string
	cmd := &cobra.Command{
		Use:   "fleet --bucket B --app A [--channel C] [--prefix P]",
		Short: "Show every host of an app (or of one channel): version, status, health, last change; exit 1 when any failed, rolled back or needs an operator",
		Long: "Read the host documents the agents publish beside their channel (s3://B/P/A/hosts/) and print one line\n" +
			"per host, then how many hosts run each version. A host whose document is older than three of its\n" +
			"heartbeats (fleet.heartbeat) is stale: its agent is down, or the host is gone. Exit 1 when any host's\n" +
			"last operation failed, was rolled back, or needs an operator.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if channel != "" {
				if err := release.CheckName("--channel", channel); err != nil {
					return cli.UsageErr("%v", err)
				}
			}
			ctx, cancel := workCtx(g, cmd)
			defer cancel()
			v, err := readFleet(ctx, af, bucket, prefix, app, channel)
			if err != nil {
				return err
			}
			if err := g.Print(v, func(w io.Writer) { printFleet(w, v) }); err != nil {
				return err
			}
			if v.Attention() {
				return cli.Failed("some hosts failed, were rolled back or need an operator")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&bucket, "bucket", "", "S3 bucket of the releases (required)")
	f.StringVar(&prefix, "prefix", "", "key prefix before the app's name")
	f.StringVar(&app, "app", "", "application name (required)")
	f.StringVar(&channel, "channel", "", "only the hosts following this channel")
	af.add(cmd)
	_ = cmd.MarkFlagRequired("bucket")
	_ = cmd.MarkFlagRequired("app")
	return cmd
}

// now is the workstation's clock.
func now() time.Time { return time.Now() }

// readFleet reads the host documents of app and sums them up.
func readFleet(ctx context.Context, af awsFlags, bucket, prefix, app, channel string) (*fleet.View, error) {
	clients, err := af.clients(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := fleet.Read(ctx, clients.S3, bucket, prefix, app)
	if err != nil {
		return nil, err
	}
	v := fleet.NewView(entries, channel, now())
	l := release.NewLayout(bucket, prefix, app)
	v.Bucket, v.Prefix, v.App = bucket, l.Prefix, app
	return v, nil
}

func printFleet(w io.Writer, v *fleet.View) {
	where := fmt.Sprintf("s3://%s/%s%s", v.Bucket, v.Prefix, fleet.HostsDir)
	if v.Channel != "" {
		where += " (channel " + v.Channel + ")"
	}
	fmt.Fprintln(w, where)
	if len(v.Hosts) == 0 {
		fmt.Fprintln(w, "no hosts: no agent has published a host document here (fleet.publish, with sources.channel set)")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(v.Hosts) > 0 {
		fmt.Fprintln(tw, "INSTANCE\tZONE\tCHANNEL\tVERSION\tSTATUS\tHEALTH\tLAST CHANGE\tUPDATED")
	}
	for _, h := range v.Hosts {
		d := h.Doc
		version := "-"
		if d.Current != nil {
			version = d.Current.Revision
		}
		status := cli.OrDash(d.Status)
		if h.Attention {
			status = strings.ToUpper(status)
		}
		health := "-"
		if d.Health != nil {
			health = "healthy"
			if !d.Health.Healthy {
				health = "UNHEALTHY"
			}
		}
		change := "-"
		if op := d.Operation; op != nil {
			change = fmt.Sprintf("%s %s %s %s ago", op.Kind, op.Revision, op.Status, ago(v.At.Sub(op.At)))
		}
		updated := ago(h.Age) + " ago"
		if h.Stale {
			updated = "STALE " + updated
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.InstanceID, cli.OrDash(d.AvailabilityZone), cli.OrDash(d.Channel), version, status, health, change, updated)
	}
	tw.Flush()
	if len(v.Versions) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tHOSTS\tHEALTHY\tSTALE")
		for _, c := range v.Versions {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", c.Version, c.Hosts, c.Healthy, c.Stale)
		}
		tw.Flush()
	}
	for _, p := range v.Problems {
		fmt.Fprintln(w, "warning: "+p)
	}
}

func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Minute).String()
	case d < 48*time.Hour:
		return d.Round(time.Hour).String()
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// parseShare reads --min-healthy: "100%", "75%" or a fraction "0.75".
func parseShare(s string) (float64, error) {
	v, pct := strings.CutSuffix(strings.TrimSpace(s), "%")
	x, err := strconv.ParseFloat(v, 64)
	if err == nil && pct {
		x /= 100
	}
	if err != nil || x <= 0 || x > 1 {
		return 0, fmt.Errorf("--min-healthy %q: want a share of the hosts in (0%%, 100%%], like 100%% or 0.75", s)
	}
	return x, nil
}

// gatePromotion checks the --after channel's hosts; an error when the
// promotion must not happen, saying which hosts hold it back.
func gatePromotion(ctx context.Context, g *cli.Globals, af awsFlags, bucket, prefix, app string, o fleet.GateOptions) (*fleet.GateResult, error) {
	v, err := readFleet(ctx, af, bucket, prefix, app, o.After)
	if err != nil {
		return nil, err
	}
	o.Now = v.At
	res := fleet.Gate(v, o)
	if res.OK {
		return &res, nil
	}
	if g.JSON() {
		_ = g.Print(struct {
			Gate fleet.GateResult `json:"gate"`
		}{res}, func(io.Writer) {})
	} else {
		w := g.Stdout()
		fmt.Fprintf(w, "not promoting: %s\n", res.Why())
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, h := range res.Holdouts {
			fmt.Fprintf(tw, "  %s\t%s\n", h.InstanceID, h.Why)
		}
		tw.Flush()
		if res.SoakLeft > 0 {
			fmt.Fprintf(w, "the soak alone holds it back: try again in %s\n", res.SoakLeft.Round(time.Second))
		}
	}
	return &res, cli.Failed("channel %s holds the promotion back: %s", o.After, res.Why())
}
