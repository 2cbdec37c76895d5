package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// docTimeout bounds one GET of a small document, so a black-holed
// connection costs one poll, not the agent's attention forever.
const docTimeout = 30 * time.Second

// poll makes one conditional GET of the channel and, when it changed,
// verifies and deploys what it names. It returns only trouble reaching S3
// (to back off); refusals are recorded in the state.
func (c *Channel) poll(ctx context.Context) error {
	client, err := c.o.S3(ctx)
	if err != nil {
		return fmt.Errorf("channel %s: S3 client: %w", c.o.URL, err)
	}
	c.mu.Lock()
	etag := c.state.etag
	c.mu.Unlock()
	key := c.layout.ChannelKey(c.name)
	body, newTag, err := getDoc(ctx, client, c.layout.Bucket, key, etag)
	switch {
	case errors.Is(err, errNotModified):
		return nil
	case isNotFound(err):
		// Not an outage: nothing was released on this channel yet.
		c.mu.Lock()
		c.state.etag, c.state.refused = "", "channel "+c.layout.URL(key)+" does not exist (yet): nothing to deploy"
		c.mu.Unlock()
		return nil
	case err == nil:
		err = c.apply(ctx, client, body, newTag)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, engine.ErrNeedsOperator):
		// Not S3's fault and not the document's: the agent takes no work
		// until an operator acknowledges. The document is looked at again
		// at the next poll (its ETag is not recorded).
		c.mu.Lock()
		c.state.refused = err.Error()
		c.mu.Unlock()
		return nil
	case isRefusal(err):
		c.o.Log.Warn("channel: refused; nothing installed", zap.String("channel", c.o.URL), zap.Error(err))
		c.mu.Lock()
		c.state.etag, c.state.refused = newTag, err.Error()
		c.mu.Unlock()
		return nil
	default:
		return err
	}
}

// apply verifies a new channel document, its manifest and bundle, and
// queues the deployment. Anything that fails verification is a refusal.
func (c *Channel) apply(ctx context.Context, client *s3.Client, body []byte, etag string) error {
	chanURL := c.layout.URL(c.layout.ChannelKey(c.name))
	ch, err := release.ParseChannel(body)
	if err != nil {
		return refuse("refused channel %s: %w", chanURL, err)
	}
	what := fmt.Sprintf("channel %s sequence %d (version %s)", chanURL, ch.Sequence, ch.Version)
	if ch.App != c.o.App || ch.Channel != c.name {
		return refuse("refused %s: it is channel %q of app %q, this agent deploys app %q from channel %q", what, ch.Channel, ch.App, c.o.App, c.name)
	}
	c.mu.Lock()
	last := c.state.applied
	c.mu.Unlock()
	switch {
	case ch.Sequence < last.Sequence:
		return refuse("refused %s: the sequence went backwards, this agent already applied sequence %d (version %s): a replayed older channel", what, last.Sequence, last.Version)
	case ch.Sequence == last.Sequence && (ch.Version != last.Version || ch.ManifestSHA256 != last.ManifestSHA256):
		return refuse("refused %s: sequence %d was already applied with version %s; a move needs a new sequence", what, ch.Sequence, last.Version)
	case ch.Sequence == last.Sequence:
		c.mu.Lock()
		c.state.etag, c.state.refused = etag, ""
		c.mu.Unlock()
		return nil
	}
	chSig, err := c.getSig(ctx, client, c.layout.ChannelKey(c.name))
	if err != nil {
		return err
	}
	comment, chErr := c.o.Keys.Verify(body, chSig)
	if chErr != nil && !errors.Is(chErr, release.ErrUnsigned) {
		return refuse("refused %s: signature %s%s: %w", what, chanURL, release.SignatureSuffix, chErr)
	}
	if err := release.CheckComment(comment, "channel", map[string]string{"app": ch.App, "channel": ch.Channel, "sequence": fmt.Sprint(ch.Sequence), "version": ch.Version}); err != nil {
		return refuse("refused %s: %w", what, err)
	}
	m, signer, err := c.manifest(ctx, client, ch, what)
	if err != nil {
		return err
	}
	mUnsigned := signer == ""
	path, err := c.download(ctx, client, ch, m, what)
	if err != nil {
		return err
	}
	bundleKey := c.layout.Prefix + "revisions/" + m.Version + "/" + m.Bundle
	d, err := c.o.Engine.Submit(engine.Request{
		// The verified local copy is what deploys: fetching the object
		// again could give other bytes than those just checked. Its digest
		// and signer go along: the fetch checks the bytes again, and the
		// key must still be trusted then.
		Source: api.Source{Type: TypeFile, Location: path, Bucket: c.layout.Bucket, Key: bundleKey, Size: m.Size,
			SHA256: m.SHA256, Signer: signer},
		Revision: m.Version,
		Trigger:  "channel",
	})
	if err != nil {
		return fmt.Errorf("%s: queue the deployment of %s: %w", what, path, err)
	}
	rec := appliedRecord{Sequence: ch.Sequence, Version: ch.Version, ManifestSHA256: ch.ManifestSHA256, ETag: etag, Deployment: d.ID}
	b, _ := json.Marshal(rec)
	if err := c.o.Journal.SetMeta(c.metaKey, string(b)); err != nil {
		c.o.Log.Error("channel: could not record the applied sequence; a restart may deploy it again", zap.String("channel", c.o.URL), zap.Error(err))
	}
	if c.o.Floors != nil {
		if err := c.o.Floors.RaiseChannelFloor(c.o.URL, journal.ChannelFloor{Sequence: ch.Sequence, Version: ch.Version, ManifestSHA256: ch.ManifestSHA256}); err != nil {
			c.o.Log.Error("channel: could not record the applied sequence apart from the journal; after a loss of the journal an older channel could be replayed",
				zap.String("channel", c.o.URL), zap.Error(err))
		}
	}
	unsigned := errors.Is(chErr, release.ErrUnsigned) || mUnsigned
	c.mu.Lock()
	c.state.applied, c.state.etag, c.state.refused, c.state.unsigned = rec, etag, "", unsigned
	c.mu.Unlock()
	c.o.Log.Info("channel: new release queued", zap.String("channel", c.o.URL), zap.Int64("sequence", ch.Sequence),
		zap.String("version", ch.Version), zap.String("deployment", d.ID), zap.Bool("unsigned", unsigned))
	return nil
}

// manifest fetches and verifies the manifest a channel names; signer is
// the key that signed it, "" when it was accepted without a signature
// (none required).
func (c *Channel) manifest(ctx context.Context, client *s3.Client, ch *release.ChannelDoc, what string) (m *release.Manifest, signer string, err error) {
	key := c.layout.Prefix + ch.Manifest
	url := c.layout.URL(key)
	body, _, err := getDoc(ctx, client, c.layout.Bucket, key, "")
	if isNotFound(err) {
		return nil, "", refuse("refused %s: its manifest %s does not exist", what, url)
	}
	if err != nil {
		return nil, "", err
	}
	if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != ch.ManifestSHA256 {
		return nil, "", refuse("refused %s: manifest %s has sha256 %x, the channel names %s", what, url, sum, ch.ManifestSHA256)
	}
	sig, err := c.getSig(ctx, client, key)
	if err != nil {
		return nil, "", err
	}
	v, mErr := c.o.Keys.Check(body, sig)
	if mErr != nil && !errors.Is(mErr, release.ErrUnsigned) {
		return nil, "", refuse("refused %s: manifest signature %s%s: %w", what, url, release.SignatureSuffix, mErr)
	}
	m, err = release.ParseManifest(body)
	if err != nil {
		return nil, "", refuse("refused %s: manifest %s: %w", what, url, err)
	}
	switch {
	case m.App != c.o.App:
		return nil, "", refuse("refused %s: manifest %s is for app %q, this agent deploys %q", what, url, m.App, c.o.App)
	case m.Version != ch.Version:
		return nil, "", refuse("refused %s: manifest %s is of version %q", what, url, m.Version)
	}
	if err := release.CheckComment(v.Comment, "manifest", map[string]string{"app": m.App, "version": m.Version, "sha256": m.SHA256}); err != nil {
		return nil, "", refuse("refused %s: manifest %s: %w", what, url, err)
	}
	return m, v.KeyID, nil
}

// download brings the bundle to Dir, checking its size and sha256 against
// the manifest on the way; a mismatch leaves nothing behind.
func (c *Channel) download(ctx context.Context, client *s3.Client, ch *release.ChannelDoc, m *release.Manifest, what string) (string, error) {
	c.prune()
	key := c.layout.Prefix + "revisions/" + m.Version + "/" + m.Bundle
	url := c.layout.URL(key)
	final := filepath.Join(c.o.Dir, fmt.Sprintf("%s-seq%d-%s.tar.gz", c.name, ch.Sequence, m.Version))
	part := final + ".part"
	out, err := getObject(ctx, client, &s3.GetObjectInput{Bucket: aws.String(c.layout.Bucket), Key: aws.String(key)}, quietChecksum)
	if isNotFound(err) {
		return "", refuse("refused %s: its bundle %s does not exist", what, url)
	}
	if err != nil {
		return "", fmt.Errorf("%s: GET %s: %w", what, url, err)
	}
	defer out.Body.Close()
	f, err := os.OpenFile(part, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return "", fmt.Errorf("%s: create %s: %w", what, part, err)
	}
	h := sha256.New()
	// One byte more than the manifest says is enough to know it is too big.
	n, err := io.Copy(io.MultiWriter(f, h), ctxReader{ctx, io.LimitReader(out.Body, m.Size+1)})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(part)
		return "", fmt.Errorf("%s: download %s to %s: %w", what, url, part, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	switch {
	case n != m.Size:
		os.Remove(part)
		return "", refuse("refused %s: bundle %s is %s bytes, the manifest says %d", what, url, sizeWord(n, m.Size), m.Size)
	case sum != m.SHA256:
		os.Remove(part)
		return "", refuse("refused %s: bundle %s has sha256 %s, the manifest says %s (tampered or replaced)", what, url, sum, m.SHA256)
	}
	if err := os.Rename(part, final); err != nil {
		os.Remove(part)
		return "", fmt.Errorf("%s: rename %s: %w", what, part, err)
	}
	return final, nil
}

func sizeWord(n, want int64) string {
	if n > want {
		return fmt.Sprintf("more than %d", want)
	}
	return fmt.Sprint(n)
}

// getSig returns the signature object beside key, nil when there is none.
func (c *Channel) getSig(ctx context.Context, client *s3.Client, key string) ([]byte, error) {
	b, _, err := getDoc(ctx, client, c.layout.Bucket, key+release.SignatureSuffix, "")
	if isNotFound(err) {
		return nil, nil
	}
	return b, err
}

// prune removes verified bundles no queued or running deployment needs.
func (c *Channel) prune() {
	ents, err := os.ReadDir(c.o.Dir)
	if err != nil {
		return
	}
	deps, err := c.o.Journal.Deployments(0)
	if err != nil {
		c.o.Log.Warn("channel: read deployments to prune downloads", zap.Error(err))
		return
	}
	needed := map[string]bool{}
	for _, d := range deps {
		if !d.Status.Terminal() {
			needed[d.Source.Location] = true
		}
	}
	for _, e := range ents {
		p := filepath.Join(c.o.Dir, e.Name())
		if !needed[p] {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				c.o.Log.Warn("channel: remove an old download", zap.String("file", p), zap.Error(err))
			}
		}
	}
}

// quietChecksum: the manifest's sha256 checks the bundle, so the SDK's
// note that an object has no checksum of its own is noise in the log.
func quietChecksum(o *s3.Options) { o.DisableLogOutputChecksumValidationSkipped = true }

// errNotModified is a conditional GET answered 304.
var errNotModified = errors.New("not modified")

// getDoc GETs a small object, conditionally when etag is set (then a 304
// is errNotModified and transfers no body). It makes one attempt: the
// watcher's own backoff paces retries, so a poll costs one request.
func getDoc(ctx context.Context, client *s3.Client, bucket, key, etag string) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(ctx, docTimeout)
	defer cancel()
	in := &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
	if etag != "" {
		in.IfNoneMatch = aws.String(etag)
	}
	out, err := getObject(ctx, client, in, func(o *s3.Options) {
		o.RetryMaxAttempts = 1
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	if err != nil {
		var re *smithyhttp.ResponseError
		if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotModified {
			return nil, etag, errNotModified
		}
		return nil, "", fmt.Errorf("GET s3://%s/%s: %w", bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, release.MaxDocBytes+1))
	if err != nil {
		return nil, "", fmt.Errorf("GET s3://%s/%s: read body: %w", bucket, key, err)
	}
	if len(b) > release.MaxDocBytes {
		return nil, aws.ToString(out.ETag), &refusal{fmt.Errorf("s3://%s/%s is larger than %d bytes: not a release document", bucket, key, release.MaxDocBytes)}
	}
	return b, aws.ToString(out.ETag), nil
}

// isNotFound reports a missing object (NoSuchKey on GET, 404 otherwise).
func isNotFound(err error) bool {
	if err == nil {
		return false
	}
	var nsk *s3types.NoSuchKey
	var re *smithyhttp.ResponseError
	return errors.As(err, &nsk) || (errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound)
}
