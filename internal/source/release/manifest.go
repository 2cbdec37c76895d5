package release

import (
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"
)

// Release layout in S3, under s3://BUCKET/PREFIX/APP/:
//
//	revisions/VERSION/bundle.tar.gz
//	revisions/VERSION/manifest.json           the Manifest
//	revisions/VERSION/manifest.json.minisig   its minisign signature
//	channels/NAME.json                        a ChannelDoc
//	channels/NAME.json.minisig                its signature (when signed)
//
// Writers upload the signature before the document it signs, so a reader
// that sees a new document also finds its signature.
const (
	ManifestSchema  = 1
	ChannelSchema   = 1
	ManifestName    = "manifest.json"
	BundleName      = "bundle.tar.gz"
	SignatureSuffix = ".minisig"
	FormatTarGz     = "tar.gz"
	// MaxDocBytes bounds what is read of a manifest, channel or signature:
	// they are small, and a huge object must not fill the agent's memory.
	MaxDocBytes = 64 << 10
)

// namePattern (with at most 128 bytes, checked apart: a counted repetition
// compiles to one instruction per count, paid at every agentctl start) is
// what an app, a version and a channel may be called: safe as one S3 key
// segment and one file name, and never "." or "..".
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)

// CheckName reports whether s is usable as an app, version or channel name.
func CheckName(what, s string) error {
	if len(s) > 128 || !namePattern.MatchString(s) {
		return fmt.Errorf("%s %q: use 1-128 letters, digits, '.', '_', '+' or '-', starting with a letter or digit", what, s)
	}
	return nil
}

// Manifest describes one uploaded revision. Its signature covers its bytes
// exactly as uploaded; it carries the bundle's sha256, so the bundle is
// covered too.
type Manifest struct {
	SchemaVersion int    `json:"schema_version"`
	App           string `json:"app"`
	Version       string `json:"version"`
	// Bundle is the bundle's object name, beside the manifest.
	Bundle    string    `json:"bundle"`
	SHA256    string    `json:"sha256"`
	Size      int64     `json:"size"`
	Format    string    `json:"format"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

var sha256Pattern = regexp.MustCompile(`^[0-9a-f]+$`)

func isSHA256(s string) bool { return len(s) == 64 && sha256Pattern.MatchString(s) }

// ParseManifest decodes and checks a manifest.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("manifest is not valid JSON: %w", err)
	}
	switch {
	case m.SchemaVersion != ManifestSchema:
		return nil, fmt.Errorf("manifest schema_version %d: this agent reads version %d", m.SchemaVersion, ManifestSchema)
	case CheckName("app", m.App) != nil:
		return nil, CheckName("manifest app", m.App)
	case CheckName("version", m.Version) != nil:
		return nil, CheckName("manifest version", m.Version)
	case m.Bundle == "" || m.Bundle != path.Base(m.Bundle) || strings.HasPrefix(m.Bundle, "."):
		return nil, fmt.Errorf("manifest bundle %q: want a plain object name beside the manifest", m.Bundle)
	case !isSHA256(m.SHA256):
		return nil, fmt.Errorf("manifest sha256 %q: want 64 lowercase hex digits", m.SHA256)
	case m.Size <= 0:
		return nil, fmt.Errorf("manifest size %d: want the bundle's size in bytes", m.Size)
	case m.Format != FormatTarGz:
		return nil, fmt.Errorf("manifest format %q: want %s", m.Format, FormatTarGz)
	}
	return &m, nil
}

// Encode returns the manifest as uploaded (indented, newline-terminated).
func (m *Manifest) Encode() []byte { return encodeDoc(m) }

// TrustedComment is the signed comment of the manifest's signature.
func (m *Manifest) TrustedComment() string {
	return fmt.Sprintf("rollback-agent manifest app=%s version=%s sha256=%s", m.App, m.Version, m.SHA256)
}

// ChannelDoc is channels/NAME.json: the version a channel points at.
type ChannelDoc struct {
	SchemaVersion int    `json:"schema_version"`
	App           string `json:"app"`
	Channel       string `json:"channel"`
	// Sequence only grows: every move, forward or back, is a new one, so
	// an agent can refuse a replayed older document.
	Sequence int64  `json:"sequence"`
	Version  string `json:"version"`
	// Manifest is the manifest's key relative to the app's prefix, and
	// ManifestSHA256 its digest: the channel names exact manifest bytes.
	Manifest       string    `json:"manifest"`
	ManifestSHA256 string    `json:"manifest_sha256"`
	UpdatedAt      time.Time `json:"updated_at"`
	UpdatedBy      string    `json:"updated_by"`
}

// ParseChannel decodes and checks a channel document.
func ParseChannel(data []byte) (*ChannelDoc, error) {
	var c ChannelDoc
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("channel is not valid JSON: %w", err)
	}
	switch {
	case c.SchemaVersion != ChannelSchema:
		return nil, fmt.Errorf("channel schema_version %d: this agent reads version %d", c.SchemaVersion, ChannelSchema)
	case CheckName("app", c.App) != nil:
		return nil, CheckName("channel app", c.App)
	case CheckName("channel", c.Channel) != nil:
		return nil, CheckName("channel name", c.Channel)
	case CheckName("version", c.Version) != nil:
		return nil, CheckName("channel version", c.Version)
	case c.Sequence < 1:
		return nil, fmt.Errorf("channel sequence %d: want 1 or more", c.Sequence)
	case c.Manifest != ManifestRel(c.Version):
		return nil, fmt.Errorf("channel manifest %q: want %s for version %s", c.Manifest, ManifestRel(c.Version), c.Version)
	case !isSHA256(c.ManifestSHA256):
		return nil, fmt.Errorf("channel manifest_sha256 %q: want 64 lowercase hex digits", c.ManifestSHA256)
	}
	return &c, nil
}

// Encode returns the document as uploaded.
func (c *ChannelDoc) Encode() []byte { return encodeDoc(c) }

// TrustedComment is the signed comment of the channel's signature.
func (c *ChannelDoc) TrustedComment() string {
	return fmt.Sprintf("rollback-agent channel app=%s channel=%s sequence=%d version=%s", c.App, c.Channel, c.Sequence, c.Version)
}

func encodeDoc(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		// Only plain strings, numbers and times: marshalling cannot fail.
		panic(fmt.Sprintf("source: encode %T: %v", v, err))
	}
	return append(b, '\n')
}

// Layout names the objects of one app's releases.
type Layout struct {
	Bucket string
	// Prefix is the app's prefix with a trailing slash: "PREFIX/APP/".
	Prefix string
}

// NewLayout returns the layout of app under prefix (may be empty) in bucket.
func NewLayout(bucket, prefix, app string) Layout {
	p := strings.Trim(prefix, "/")
	if p != "" {
		p += "/"
	}
	return Layout{Bucket: bucket, Prefix: p + app + "/"}
}

// ManifestRel is the manifest's key relative to the app prefix.
func ManifestRel(version string) string { return "revisions/" + version + "/" + ManifestName }

// RevisionsKey is the prefix under which every version lives.
func (l Layout) RevisionsKey() string { return l.Prefix + "revisions/" }

// BundleKey is where version's bundle is stored.
func (l Layout) BundleKey(version string) string {
	return l.Prefix + "revisions/" + version + "/" + BundleName
}

// ManifestKey is where version's manifest is stored.
func (l Layout) ManifestKey(version string) string { return l.Prefix + ManifestRel(version) }

// ChannelsKey is the prefix under which every channel lives.
func (l Layout) ChannelsKey() string { return l.Prefix + "channels/" }

// ChannelKey is where channel's document is stored.
func (l Layout) ChannelKey(channel string) string { return l.ChannelsKey() + channel + ".json" }

// URL returns s3://bucket/key.
func (l Layout) URL(key string) string { return "s3://" + l.Bucket + "/" + key }

// ParseChannelURL splits s3://BUCKET/PREFIX/APP/channels/NAME.json into
// the app's layout, the app name and the channel name.
func ParseChannelURL(u string) (Layout, string, string, error) {
	rest, ok := strings.CutPrefix(u, "s3://")
	bucket, key, _ := strings.Cut(rest, "/")
	dir, file := path.Split(key)
	name, isJSON := strings.CutSuffix(file, ".json")
	appPrefix, isChannels := strings.CutSuffix(dir, "channels/")
	app := path.Base(strings.TrimSuffix(appPrefix, "/"))
	if !ok || bucket == "" || !isJSON || !isChannels || appPrefix == "" || CheckName("channel", name) != nil || CheckName("app", app) != nil {
		return Layout{}, "", "", fmt.Errorf("channel %q: want s3://BUCKET/[PREFIX/]APP/channels/NAME.json", u)
	}
	return Layout{Bucket: bucket, Prefix: appPrefix}, app, name, nil
}
