package workstation

import (
	"context"
	"fmt"
	"io"
	"os"

	"aead.dev/minisign"
	"github.com/aws/aws-sdk-go-v2/service/codedeploy"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/rollback-agent/rollback-agent/internal/awsconf"
	"github.com/rollback-agent/rollback-agent/internal/cli"
	"github.com/rollback-agent/rollback-agent/internal/push"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// keyPasswordEnv holds the password of an encrypted signing key, for CI;
// on a terminal agentctl asks instead.
const keyPasswordEnv = "AGENTCTL_KEY_PASSWORD"

// awsFlags are the flags of the commands that talk to AWS themselves.
type awsFlags struct {
	region string
}

func (a *awsFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.region, "region", "", "AWS region (default: the SDK's, from AWS_REGION or the profile)")
}

func (a *awsFlags) clients(ctx context.Context) (push.Clients, error) {
	cfg, err := awsconf.Load(ctx, a.region)
	if err != nil {
		return push.Clients{}, err
	}
	// An object uploaded without a checksum is still checked by its sha256
	// in the manifest: the SDK's note that it cannot check it is noise.
	s3c := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = cfg.BaseEndpoint != nil
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	return push.Clients{S3: s3c, CodeDeploy: codedeploy.NewFromConfig(cfg)}, nil
}

// workCtx bounds a workstation command by --timeout only when it was
// given: an upload takes as long as the bundle and the link need.
func workCtx(g *cli.Globals, cmd *cobra.Command) (context.Context, context.CancelFunc) {
	if cmd.Flags().Changed("timeout") {
		return g.Ctx(cmd.Context())
	}
	return context.WithCancel(cmd.Context())
}

// loadSignKey reads --sign-key, asking for the password of an encrypted
// key on a terminal, or taking it from AGENTCTL_KEY_PASSWORD.
func loadSignKey(g *cli.Globals, path string) (*minisign.PrivateKey, error) {
	if path == "" {
		return nil, nil
	}
	b, err := release.ReadKeyFile(path)
	if err != nil {
		return nil, cli.UsageErr("--sign-key: %v", err)
	}
	password := os.Getenv(keyPasswordEnv)
	if minisign.IsEncrypted(b) && password == "" {
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return nil, cli.UsageErr("--sign-key %s is encrypted: set %s to its password", path, keyPasswordEnv)
		}
		fmt.Fprintf(g.Stderr(), "password for %s: ", path)
		pw, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(g.Stderr())
		if err != nil {
			return nil, fmt.Errorf("read the password of %s: %w", path, err)
		}
		password = string(pw)
	}
	k, err := release.LoadPrivateKey(path, password)
	if err != nil {
		return nil, err
	}
	return &k, nil
}

func newPushCmd(g *cli.Globals) *cobra.Command {
	var o push.Options
	var af awsFlags
	var signKey string
	var cd push.CodeDeployOptions
	cmd := &cobra.Command{
		Use:   "push DIR --bucket B --app A --version V [--channel C] [--sign-key K]",
		Short: "Bundle a directory, upload it with a signed manifest, and optionally move a channel",
		Long: "Bundle DIR as a reproducible tar.gz (leaving out what .rollbackignore lists, gitignore syntax, and .git),\n" +
			"with its own appspec.yml validated as the agent would, or one written for it: the whole directory to\n" +
			"--destination, and hooks from scripts/application_stop.sh, before_install.sh, after_install.sh,\n" +
			"application_start.sh and validate_service.sh when present. Upload it to\n" +
			"s3://B/[P/]A/revisions/V/bundle.tar.gz with manifest.json (and manifest.json.minisig with --sign-key).\n" +
			"An existing version is refused unless --force. --channel C then points channel C at it; agents\n" +
			"watching s3://B/[P/]A/channels/C.json deploy it. --codedeploy-app and --deployment-group hand the\n" +
			"revision to CodeDeploy instead, with automatic rollback on failure and on the --alarm alarms.\n" +
			"An encrypted signing key's password comes from " + keyPasswordEnv + " or a prompt.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Dir = args[0]
			if (cd.Application == "") != (cd.DeploymentGroup == "") {
				return cli.UsageErr("--codedeploy-app and --deployment-group go together")
			}
			if len(cd.Alarms) > 0 && cd.Application == "" {
				return cli.UsageErr("--alarm needs --codedeploy-app and --deployment-group")
			}
			if cd.Application != "" {
				o.CodeDeploy = &cd
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
			if cli.IsTerminal(g.Stderr()) && !g.JSON() {
				o.Progress = g.Stderr()
			}
			if !g.JSON() {
				o.Log = g.Stdout()
			}
			res, err := push.Push(ctx, clients, o)
			if err != nil {
				return err
			}
			return g.Print(res, func(w io.Writer) {
				fmt.Fprintf(w, "pushed %s %s: s3://%s/%s\n", o.App, o.Version, res.Bucket, res.ManifestKey)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Bucket, "bucket", "", "S3 bucket of the releases (required)")
	f.StringVar(&o.Prefix, "prefix", "", "key prefix before the app's name")
	f.StringVar(&o.App, "app", "", "application name, as in the agents' application: (required)")
	f.StringVar(&o.Version, "version", "", "version label (required)")
	f.StringVar(&o.Channel, "channel", "", "move this channel to the new version")
	f.StringVar(&signKey, "sign-key", "", "minisign secret key to sign the manifest and channel (agentctl keygen)")
	f.StringVar(&o.Destination, "destination", "", "install directory of a generated appspec (default /opt/APP)")
	f.BoolVar(&o.Force, "force", false, "replace a version that already exists")
	f.StringVar(&cd.Application, "codedeploy-app", "", "CodeDeploy application to register the revision with")
	f.StringVar(&cd.DeploymentGroup, "deployment-group", "", "CodeDeploy deployment group to deploy to")
	f.StringArrayVar(&cd.Alarms, "alarm", nil, "CloudWatch alarm that stops and rolls back the CodeDeploy deployment (repeatable)")
	f.StringVar(&cd.Config, "deployment-config", "", "CodeDeploy deployment configuration (default: the group's)")
	af.add(cmd)
	for _, name := range []string{"bucket", "app", "version"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}
