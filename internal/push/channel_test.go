package push

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// Every move of a channel is a new sequence, back to an older version
// too; a signed channel verifies; releases lists versions and channels.
func TestPromoteAndReleases(t *testing.T) {
	c, bed := clients(t)
	bucket(t, c, "push-chan")
	pub, key := signingKey(t)
	dir := t.TempDir()
	for i, v := range []string{"v1", "v2"} {
		write(t, dir, "version.txt", v, 0o644)
		res, err := Push(context.Background(), c, Options{Dir: dir, Bucket: "push-chan", App: "demo", Version: v, Channel: "prod", Key: key})
		if err != nil {
			t.Fatal(err)
		}
		if res.Channel == nil || res.Channel.Sequence != int64(i+1) || res.Channel.Version != v {
			t.Errorf("push %s: channel %+v", v, res.Channel)
		}
	}
	ch, err := Promote(context.Background(), c.S3, PromoteOptions{Bucket: "push-chan", App: "demo", Channel: "prod", Version: "v1", Key: key})
	if err != nil || ch.Sequence != 3 || ch.Version != "v1" {
		t.Fatalf("promote back to v1: %+v %v", ch, err)
	}
	doc := download(t, bed, "push-chan", "demo/channels/prod.json")
	sig := download(t, bed, "push-chan", "demo/channels/prod.json.minisig")
	kr, _ := release.NewKeyring([]string{pub.String()}, true)
	comment, err := kr.Verify(doc, sig)
	if err != nil || !strings.Contains(comment, "channel=prod sequence=3 version=v1") {
		t.Errorf("channel signature: %q %v", comment, err)
	}
	parsed, err := release.ParseChannel(doc)
	if err != nil || parsed.Sequence != 3 || parsed.Manifest != "revisions/v1/manifest.json" {
		t.Errorf("channel %s: %v", doc, err)
	}
	manifest := download(t, bed, "push-chan", "demo/revisions/v1/manifest.json")
	if m, _ := release.ParseManifest(manifest); m == nil || !strings.HasPrefix(parsed.ManifestSHA256, "") {
		t.Errorf("manifest %s", manifest)
	}

	if _, err := Promote(context.Background(), c.S3, PromoteOptions{Bucket: "push-chan", App: "demo", Channel: "prod", Version: "v9"}); err == nil || !strings.Contains(err.Error(), "no manifest at s3://push-chan/demo/revisions/v9/manifest.json") {
		t.Errorf("promote to a version never pushed: %v", err)
	}
	// An unsigned move removes the old signature, which would no longer match.
	if _, err := Promote(context.Background(), c.S3, PromoteOptions{Bucket: "push-chan", App: "demo", Channel: "beta", Version: "v2"}); err != nil {
		t.Fatal(err)
	}
	if out := awsCLI(t, bed, "s3api", "list-objects-v2", "--bucket", "push-chan", "--prefix", "demo/channels/beta"); strings.Contains(string(out), "minisig") {
		t.Errorf("unsigned channel has a signature: %s", out)
	}

	l, err := ListReleases(context.Background(), c.S3, "push-chan", "", "demo")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(l)
	if len(l.Releases) != 2 || len(l.Channels) != 2 || len(l.Problems) != 0 {
		t.Fatalf("listing %s", b)
	}
	byVersion := map[string]Release{}
	for _, r := range l.Releases {
		byVersion[r.Version] = r
	}
	if r := byVersion["v1"]; !r.Signed || strings.Join(r.Channels, ",") != "prod" || r.Manifest == nil {
		t.Errorf("v1 %+v", r)
	}
	if r := byVersion["v2"]; strings.Join(r.Channels, ",") != "beta" {
		t.Errorf("v2 %+v", r)
	}
}

// Two writers moving a channel at once: the conditional write lets only
// the one that read the current document win.
func TestPromoteConflict(t *testing.T) {
	c, _ := clients(t)
	bucket(t, c, "push-race")
	dir := t.TempDir()
	write(t, dir, "a.txt", "a", 0o644)
	if _, err := Push(context.Background(), c, Options{Dir: dir, Bucket: "push-race", App: "demo", Version: "v1", Channel: "prod"}); err != nil {
		t.Fatal(err)
	}
	l := release.NewLayout("push-race", "", "demo")
	_, etag, _, err := getSmall(context.Background(), c.S3, "push-race", l.ChannelKey("prod"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Promote(context.Background(), c.S3, PromoteOptions{Bucket: "push-race", App: "demo", Channel: "prod", Version: "v1"}); err != nil {
		t.Fatal(err)
	}
	// A writer still holding the old ETag loses.
	err = putSmall(context.Background(), c.S3, "push-race", l.ChannelKey("prod"), []byte("{}"), etag, false)
	if !errors.Is(err, errConflict) {
		t.Errorf("stale write: %v", err)
	}
}
