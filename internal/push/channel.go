package push

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"aead.dev/minisign"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// PromoteOptions move a channel.
type PromoteOptions struct {
	Bucket, Prefix, App, Channel, Version string
	// Key signs the channel document; nil leaves it unsigned.
	Key *minisign.PrivateKey
	Now func() time.Time
}

// Promote points a channel at a version that is already uploaded; an
// older version too, which is how a fleet-wide rollback is done. Every
// move is a new, higher sequence: agents refuse a sequence that goes
// backwards, so a replayed older channel document does nothing. The write
// is conditional on the document read, so two promotes at once cannot
// both take the same sequence.
func Promote(ctx context.Context, client *s3.Client, o PromoteOptions) (*release.ChannelDoc, error) {
	for _, n := range []struct{ what, v string }{{"--app", o.App}, {"--version", o.Version}, {"--channel", o.Channel}} {
		if err := release.CheckName(n.what, n.v); err != nil {
			return nil, err
		}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	l := release.NewLayout(o.Bucket, o.Prefix, o.App)
	mKey := l.ManifestKey(o.Version)
	mBody, _, found, err := getSmall(ctx, client, o.Bucket, mKey)
	if err != nil {
		return nil, fmt.Errorf("promote %s to %s: %w", o.Channel, o.Version, err)
	}
	if !found {
		return nil, fmt.Errorf("promote %s to %s: no manifest at %s: push the version first (agentctl releases lists what exists)", o.Channel, o.Version, l.URL(mKey))
	}
	m, err := release.ParseManifest(mBody)
	if err != nil {
		return nil, fmt.Errorf("promote %s to %s: manifest %s: %w", o.Channel, o.Version, l.URL(mKey), err)
	}
	if m.App != o.App || m.Version != o.Version {
		return nil, fmt.Errorf("promote %s to %s: manifest %s is of app %s version %s", o.Channel, o.Version, l.URL(mKey), m.App, m.Version)
	}
	cKey := l.ChannelKey(o.Channel)
	cur, etag, found, err := getSmall(ctx, client, o.Bucket, cKey)
	if err != nil {
		return nil, fmt.Errorf("promote %s to %s: %w", o.Channel, o.Version, err)
	}
	seq := int64(1)
	if found {
		old, err := release.ParseChannel(cur)
		if err != nil {
			return nil, fmt.Errorf("promote %s to %s: the current channel %s is unreadable (fix or delete it): %w", o.Channel, o.Version, l.URL(cKey), err)
		}
		seq = old.Sequence + 1
	}
	sum := sha256.Sum256(mBody)
	doc := &release.ChannelDoc{
		SchemaVersion: release.ChannelSchema, App: o.App, Channel: o.Channel, Sequence: seq, Version: o.Version,
		Manifest: release.ManifestRel(o.Version), ManifestSHA256: hex.EncodeToString(sum[:]),
		UpdatedAt: o.Now().UTC().Truncate(time.Second), UpdatedBy: Creator(),
	}
	body := doc.Encode()
	// The signature goes first: an agent that reads the new document then
	// finds its signature. A signature left by an unsigned move is removed
	// after the document is written.
	if o.Key != nil {
		sig := release.SignDoc(*o.Key, body, doc.TrustedComment())
		if err := putSmall(ctx, client, o.Bucket, cKey+release.SignatureSuffix, sig, "", false); err != nil {
			return nil, fmt.Errorf("promote %s to %s: %w", o.Channel, o.Version, err)
		}
	}
	if err := putSmall(ctx, client, o.Bucket, cKey, body, etag, !found); err != nil {
		return nil, fmt.Errorf("promote %s to %s: %w", o.Channel, o.Version, err)
	}
	if o.Key == nil {
		if err := deleteObject(ctx, client, o.Bucket, cKey+release.SignatureSuffix); err != nil {
			return doc, fmt.Errorf("promote %s to %s: moved, but the old signature stays and agents will refuse the move: %w", o.Channel, o.Version, err)
		}
	}
	return doc, nil
}
