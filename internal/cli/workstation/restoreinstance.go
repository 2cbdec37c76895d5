package workstation

import (
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/spf13/cobra"

	"github.com/rollback-agent/rollback-agent/internal/awsconf"
	"github.com/rollback-agent/rollback-agent/internal/checkpoint"
	"github.com/rollback-agent/rollback-agent/internal/cli"
)

// newRestoreInstanceCmd is workstation-side: it talks to AWS with the
// caller's credentials, not to an agent.
func newRestoreInstanceCmd(g *cli.Globals) *cobra.Command {
	var instance, image, eip, region string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "restore-instance --instance I --image AMI [--eip ALLOCATION]",
		Short: "Replace a whole instance from an AMI (run from a workstation with AWS credentials)",
		Long: "Launch a new instance from the AMI with the old instance's type, subnet, security groups, key,\n" +
			"instance profile and tags; wait until it runs and passes its status checks; move the Elastic IP\n" +
			"with AllowReassociation; stop (not terminate) the old instance. The instance id and private IP change.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if instance == "" || image == "" {
				return cli.UsageErr("--instance and --image are required")
			}
			ctx := cmd.Context()
			cfg, err := awsconf.Load(ctx, region)
			if err != nil {
				return err
			}
			if cfg.Region == "" {
				return cli.UsageErr("no region: pass --region or set AWS_REGION")
			}
			res, err := checkpoint.ReplaceInstance(ctx, ec2.NewFromConfig(cfg), checkpoint.ReplaceInstanceRequest{
				InstanceID: instance, ImageID: image, AllocationID: eip, Wait: wait,
				Progress: func(s string) {
					if !g.JSON() {
						fmt.Fprintln(g.Stderr(), time.Now().Format(time.TimeOnly)+"  "+s)
					}
				},
			})
			if err != nil {
				return err
			}
			if g.JSON() {
				return cli.WriteJSON(g.Stdout(), res)
			}
			fmt.Fprintf(g.Stdout(), "instance   %s -> %s\nprivate IP %s -> %s\n", res.OldInstanceID, res.NewInstanceID, res.OldPrivateIP, res.NewPrivateIP)
			if res.AllocationID != "" {
				fmt.Fprintf(g.Stdout(), "elastic IP %s (%s) now on %s\n", res.PublicIP, res.AllocationID, res.NewInstanceID)
			}
			fmt.Fprintf(g.Stdout(), "old instance %s: %s (kept; terminate it when you no longer need the way back)\n", res.OldInstanceID, res.OldState)
			return nil
		},
	}
	cmd.Flags().StringVar(&instance, "instance", "", "the instance to replace")
	cmd.Flags().StringVar(&image, "image", "", "the AMI to launch the new instance from (a checkpoint's image)")
	cmd.Flags().StringVar(&eip, "eip", "", "allocation id of the Elastic IP to move")
	cmd.Flags().StringVar(&region, "region", "", "AWS region (default: from the environment)")
	cmd.Flags().DurationVar(&wait, "wait-for", 10*time.Minute, "how long to wait for the new instance")
	return cmd
}
