// Package push is the workstation side of releases: it bundles a
// directory (writing an appspec.yml when there is none), uploads it with a
// signed manifest to S3, moves release channels that agents watch, and
// hands revisions to CodeDeploy for fleets that keep that orchestrator.
package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"time"

	"aead.dev/minisign"
	"github.com/aws/aws-sdk-go-v2/service/codedeploy"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rollback-agent/rollback-agent/internal/source/release"
	"github.com/rollback-agent/rollback-agent/internal/version"
)

// Clients are the AWS clients a push uses. CodeDeploy may be nil when no
// CodeDeploy deployment is asked for.
type Clients struct {
	S3         *s3.Client
	CodeDeploy *codedeploy.Client
}

// Options are one push.
type Options struct {
	Dir     string
	Bucket  string
	Prefix  string
	App     string
	Version string
	// Destination is where a generated appspec installs the directory
	// (default /opt/APP).
	Destination string
	// Channel, when set, is moved to the new version.
	Channel string
	// Key signs the manifest (and the channel); nil uploads unsigned.
	Key *minisign.PrivateKey
	// Force replaces a version that already exists.
	Force bool
	// CodeDeploy, when set, registers the revision and deploys it.
	CodeDeploy *CodeDeployOptions
	// Progress receives a live progress line (a terminal), or nil.
	Progress io.Writer
	// Log receives one line per step.
	Log io.Writer
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Result says what a push did.
type Result struct {
	Bucket       string           `json:"bucket"`
	BundleKey    string           `json:"bundle_key"`
	ManifestKey  string           `json:"manifest_key"`
	SignatureKey string           `json:"signature_key,omitempty"`
	Manifest     release.Manifest `json:"manifest"`
	Generated    bool             `json:"generated_appspec"`
	// CodeDeployHooks: the checkpoint and health-gate hooks were added to
	// the bundle's appspec (--codedeploy-app).
	CodeDeployHooks bool                `json:"codedeploy_hooks,omitempty"`
	Channel         *release.ChannelDoc `json:"channel,omitempty"`
	CodeDeploy      *CodeDeployResult   `json:"codedeploy,omitempty"`
	Replaced        bool                `json:"replaced,omitempty"`
	Multipart       bool                `json:"multipart,omitempty"`
}

// ErrExists means the version is already in the bucket (use Force).
var ErrExists = errors.New("version already exists")

func (o *Options) check() error {
	var errs []error
	if o.Bucket == "" {
		errs = append(errs, errors.New("--bucket is required"))
	}
	for _, n := range []struct{ what, v string }{{"--app", o.App}, {"--version", o.Version}} {
		if err := release.CheckName(n.what, n.v); err != nil {
			errs = append(errs, err)
		}
	}
	if o.Channel != "" {
		if err := release.CheckName("--channel", o.Channel); err != nil {
			errs = append(errs, err)
		}
	}
	if o.Destination == "" {
		o.Destination = "/opt/" + o.App
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return errors.Join(errs...)
}

// Creator names who pushed: user@host and the agentctl version.
func Creator() string {
	who := "unknown"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s@%s (agentctl %s)", who, host, version.Get().Version)
}

// Push bundles, uploads, signs and optionally moves a channel and starts
// a CodeDeploy deployment. Objects are written bundle first, then the
// signature, then the manifest: a reader that finds the manifest finds
// everything it names.
func Push(ctx context.Context, c Clients, o Options) (*Result, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	l := release.NewLayout(o.Bucket, o.Prefix, o.App)
	res := &Result{Bucket: o.Bucket, BundleKey: l.BundleKey(o.Version), ManifestKey: l.ManifestKey(o.Version)}
	exists, err := objectExists(ctx, c.S3, o.Bucket, res.ManifestKey)
	if err != nil {
		return nil, err
	}
	if exists && !o.Force {
		return nil, fmt.Errorf("push %s %s: %w at %s (use --force to replace it)", o.App, o.Version, ErrExists, l.URL(res.ManifestKey))
	}
	res.Replaced = exists
	tmp, err := os.MkdirTemp("", "agentctl-push-")
	if err != nil {
		return nil, fmt.Errorf("push: temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	var built *Built
	if o.CodeDeploy != nil {
		built, err = BuildForCodeDeploy(ctx, o.Dir, o.Destination, tmp, o.Version)
	} else {
		built, err = Build(ctx, o.Dir, o.Destination, tmp)
	}
	if err != nil {
		return nil, err
	}
	res.Generated, res.CodeDeployHooks = built.Generated, built.Injected
	if built.Generated {
		fmt.Fprintf(o.Log, "no appspec.yml in %s: generated one installing it to %s\n", o.Dir, o.Destination)
	}
	if built.Injected {
		fmt.Fprintf(o.Log, "added rollback-agent's CodeDeploy hooks to the bundle's appspec: %s first in BeforeInstall, %s last in ValidateService\n", InjectedBeforeInstall, InjectedValidateService)
	}
	fmt.Fprintf(o.Log, "bundled %s: %d bytes, sha256 %s\n", o.Dir, built.Size, built.SHA256)
	m := release.Manifest{
		SchemaVersion: release.ManifestSchema, App: o.App, Version: o.Version, Bundle: release.BundleName,
		SHA256: built.SHA256, Size: built.Size, Format: release.FormatTarGz,
		CreatedAt: o.Now().UTC().Truncate(time.Second), CreatedBy: Creator(),
	}
	res.Manifest = m
	up, err := uploadFile(ctx, c.S3, o.Bucket, res.BundleKey, built.Path, built.Size, o.Progress)
	if err != nil {
		return nil, err
	}
	res.Multipart = up.multipart
	fmt.Fprintf(o.Log, "uploaded %s\n", l.URL(res.BundleKey))
	doc := m.Encode()
	if o.Key != nil {
		res.SignatureKey = res.ManifestKey + release.SignatureSuffix
		sig := release.SignDoc(*o.Key, doc, m.TrustedComment())
		if err := putSmall(ctx, c.S3, o.Bucket, res.SignatureKey, sig, "", false); err != nil {
			return nil, err
		}
	}
	// Without --force the manifest is created only if still absent, so two
	// pushes of one version cannot both win.
	if err := putSmall(ctx, c.S3, o.Bucket, res.ManifestKey, doc, "", !o.Force); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Log, "uploaded %s (%s)\n", l.URL(res.ManifestKey), signedWord(o.Key != nil))
	if o.Channel != "" {
		ch, err := Promote(ctx, c.S3, PromoteOptions{Bucket: o.Bucket, Prefix: o.Prefix, App: o.App, Channel: o.Channel, Version: o.Version, Key: o.Key, Now: o.Now})
		if err != nil {
			return res, err
		}
		res.Channel = ch
		fmt.Fprintf(o.Log, "channel %s now at %s (sequence %d)\n", o.Channel, ch.Version, ch.Sequence)
	}
	if o.CodeDeploy != nil {
		cd, err := deployCodeDeploy(ctx, c.CodeDeploy, *o.CodeDeploy, o.Bucket, res.BundleKey, up.etag, o.Version)
		if err != nil {
			return res, err
		}
		res.CodeDeploy = cd
		fmt.Fprintf(o.Log, "CodeDeploy deployment %s of %s to group %s created\n", cd.DeploymentID, cd.Application, cd.DeploymentGroup)
	}
	return res, nil
}

func signedWord(signed bool) string {
	if signed {
		return "signed"
	}
	return "UNSIGNED: agents with trust.require_signature will refuse it"
}
