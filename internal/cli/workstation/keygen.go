package workstation

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/rollback-agent/rollback-agent/internal/cli"
	"github.com/rollback-agent/rollback-agent/internal/push"
)

func newKeygenCmd(g *cli.Globals) *cobra.Command {
	var secret, public string
	var force bool
	cmd := &cobra.Command{
		Use:   "keygen [--secret-key FILE] [--public-key FILE]",
		Short: "Make a minisign key pair for signing releases",
		Long: "Write a minisign secret key (mode 0600) and its public key. The minisign tool reads both: it can\n" +
			"sign manifests by hand (minisign -S -s KEY -m manifest.json). With " + keyPasswordEnv + " set, the\n" +
			"secret key is encrypted with it. Put the public key's base64 line, or the .pub file's absolute path,\n" +
			"into the agents' trust.public_keys.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kp, err := push.Keygen(secret, public, os.Getenv(keyPasswordEnv), force)
			if err != nil {
				return err
			}
			if g.JSON() {
				return cli.WriteJSON(g.Stdout(), kp)
			}
			enc := "unencrypted: keep it in a secret store"
			if kp.Encrypted {
				enc = "encrypted with " + keyPasswordEnv
			}
			fmt.Fprintf(g.Stdout(), "secret key %s (%s)\npublic key %s (key id %s)\n\nagent.yaml:\ntrust:\n  public_keys: [%q]\n  require_signature: true\n",
				kp.SecretPath, enc, kp.PublicPath, kp.KeyID, kp.Public)
			return nil
		},
	}
	cmd.Flags().StringVar(&secret, "secret-key", "rollback-agent.key", "where to write the secret key")
	cmd.Flags().StringVar(&public, "public-key", "rollback-agent.pub", "where to write the public key")
	cmd.Flags().BoolVar(&force, "force", false, "replace existing key files")
	return cmd
}
