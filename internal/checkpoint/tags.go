// Package checkpoint owns the rollback points of the host: EBS snapshot
// sets of the instance's own volumes (CreateSnapshots) and AMIs
// (CreateImage, always NoReboot), their completion, their catalogue
// (rebuilt from AWS by tags; the journal only caches it), retention, and
// the primitives of restoring data and root volumes. docs/design.md says
// how the engine uses them and which tags they leave.
package checkpoint

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// Tags on every resource the agent creates (docs/design.md).
const (
	TagPrefix     = "rollback-agent:"
	TagApp        = TagPrefix + "app"
	TagCheckpoint = TagPrefix + "checkpoint"
	TagRevision   = TagPrefix + "revision"
	TagReason     = TagPrefix + "reason"
	TagInstance   = TagPrefix + "instance"
	TagManaged    = TagPrefix + "managed"
	TagLabel      = TagPrefix + "label"
	TagPinned     = TagPrefix + "pinned"
	TagKind       = TagPrefix + "kind"
	TagDeployment = TagPrefix + "deployment"
	TagDevice     = TagPrefix + "device"
	TagCreated    = TagPrefix + "created"
	// TagReplacedBy marks a data volume a restore swapped out (kept for undo).
	TagReplacedBy = TagPrefix + "replaced-by"
	// TagRestoredFrom marks a volume created by a restore.
	TagRestoredFrom = TagPrefix + "restored-from"
	// TagRestoreIntent on the instance holds a root restore in progress:
	// after the reboot the journal on the new root is older than the
	// restore, so the intent must live outside the instance.
	TagRestoreIntent = TagPrefix + "restore-intent"
)

// Reasons a checkpoint is taken.
const (
	ReasonDeploy     = "deploy"
	ReasonManual     = "manual"
	ReasonGuard      = "guard"
	ReasonPreRestore = "pre-restore"
	// ReasonPackageManager: the apt/dnf hooks, honoured only when
	// checkpoint.package_managers is on.
	ReasonPackageManager = "package-manager"
)

// Meta describes a checkpoint being created.
type Meta struct {
	ID         string
	Kinds      []api.CheckpointKind
	Reason     string
	Label      string
	Revision   string
	Deployment string
	Pin        bool
	Created    time.Time
}

// NewID returns a checkpoint id: cp- and 12 hex digits.
func NewID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "cp-" + hex.EncodeToString(b)
}

// tags returns the tag set of one resource of the checkpoint.
func (m Meta) tags(app, instance string, kind api.CheckpointKind) []types.Tag {
	kv := map[string]string{
		TagApp: app, TagCheckpoint: m.ID, TagRevision: m.Revision, TagReason: m.Reason,
		TagInstance: instance, TagManaged: "true", TagKind: string(kind), TagCreated: m.Created.UTC().Format(time.RFC3339Nano),
	}
	if m.Label != "" {
		kv[TagLabel] = m.Label
	}
	if m.Deployment != "" {
		kv[TagDeployment] = m.Deployment
	}
	if m.Pin {
		kv[TagPinned] = "true"
	}
	return toTags(kv)
}

func toTags(kv map[string]string) []types.Tag {
	out := make([]types.Tag, 0, len(kv))
	for k, v := range kv {
		if v == "" {
			continue
		}
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(cleanTagValue(v))})
	}
	return out
}

// Limits of EC2 tags and descriptions (EC2 User Guide, "Tag your Amazon
// EC2 resources", Tag restrictions; CreateImage, Description): counted in
// Unicode characters, not bytes.
const (
	MaxTags           = 50
	maxTagValueRunes  = 256
	maxDescriptionLen = 255
)

// cleanTagValue keeps a tag value within EC2's rules: 256 characters of
// valid UTF-8, cut on a character boundary.
func cleanTagValue(v string) string {
	return truncateRunes(strings.ToValidUTF8(v, "\uFFFD"), maxTagValueRunes)
}

// truncateRunes cuts s to at most n characters, marking a cut with "…".
func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// description is what EC2 shows for the checkpoint's snapshots and AMI:
// at most 255 characters, whatever the length of the revision.
func (m Meta) description(app string) string {
	d := fmt.Sprintf("rollback-agent %s of %s: %s %s", m.ID, app, m.Reason, m.Revision)
	return truncateRunes(strings.ToValidUTF8(d, "\uFFFD"), maxDescriptionLen)
}

func tagMap(tags []types.Tag) map[string]string {
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

// ours reports whether a resource's tags say it is this agent's, for
// this instance and app: the last check before anything is deleted.
func ours(tags map[string]string, app, instance string) bool {
	return tags[TagManaged] == "true" && tags[TagApp] == app && tags[TagInstance] == instance
}

var amiNameBad = regexp.MustCompile(`[^A-Za-z0-9()\[\] ./'@_-]+`)

// AMIName builds <app>-<revision>-<short id> within AMI naming rules:
// 3-128 characters of letters, digits, ()[] space . / - ' @ _. The id
// keeps it unique per account and region.
func AMIName(app, revision, id string) string {
	short := strings.TrimPrefix(id, "cp-")
	if len(short) > 8 {
		short = short[:8]
	}
	if revision == "" {
		revision = "manual"
	}
	base := amiNameBad.ReplaceAllString(app+"-"+revision, "_")
	max := 128 - len(short) - 1
	if len(base) > max {
		base = base[:max]
	}
	name := base + "-" + short
	for len(name) < 3 {
		name += "_"
	}
	return name
}
