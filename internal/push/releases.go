package push

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// Release is one uploaded version as `agentctl releases` shows it.
type Release struct {
	Version  string            `json:"version"`
	Manifest *release.Manifest `json:"manifest,omitempty"`
	Signed   bool              `json:"signed"`
	// Problem says why the manifest could not be read, if it could not.
	Problem  string   `json:"problem,omitempty"`
	Channels []string `json:"channels,omitempty"`
}

// Listing is every version and channel of an app.
type Listing struct {
	Bucket   string               `json:"bucket"`
	Prefix   string               `json:"prefix"`
	App      string               `json:"app"`
	Releases []Release            `json:"releases"`
	Channels []release.ChannelDoc `json:"channels"`
	// Problems are channels that could not be read.
	Problems []string `json:"problems,omitempty"`
}

// ListReleases reads the versions (newest first) and channels of app.
func ListReleases(ctx context.Context, client *s3.Client, bucket, prefix, app string) (*Listing, error) {
	if err := release.CheckName("--app", app); err != nil {
		return nil, err
	}
	l := release.NewLayout(bucket, prefix, app)
	out := &Listing{Bucket: bucket, Prefix: l.Prefix, App: app, Releases: []Release{}, Channels: []release.ChannelDoc{}}
	versions, err := listDirs(ctx, client, bucket, l.RevisionsKey())
	if err != nil {
		return nil, err
	}
	byVersion := map[string]*Release{}
	for _, v := range versions {
		r := Release{Version: v}
		body, _, found, err := getSmall(ctx, client, bucket, l.ManifestKey(v))
		switch {
		case err != nil:
			r.Problem = err.Error()
		case !found:
			r.Problem = "no manifest (an interrupted push?)"
		default:
			if m, err := release.ParseManifest(body); err != nil {
				r.Problem = err.Error()
			} else {
				r.Manifest = m
			}
			r.Signed, err = objectExists(ctx, client, bucket, l.ManifestKey(v)+release.SignatureSuffix)
			if err != nil {
				r.Problem = err.Error()
			}
		}
		out.Releases = append(out.Releases, r)
	}
	channels, err := listKeys(ctx, client, bucket, l.ChannelsKey())
	if err != nil {
		return nil, err
	}
	for _, k := range channels {
		if !strings.HasSuffix(k, ".json") {
			continue
		}
		body, _, found, err := getSmall(ctx, client, bucket, k)
		if err != nil || !found {
			out.Problems = append(out.Problems, fmt.Sprintf("channel %s: %v", l.URL(k), err))
			continue
		}
		ch, err := release.ParseChannel(body)
		if err != nil {
			out.Problems = append(out.Problems, fmt.Sprintf("channel %s: %v", l.URL(k), err))
			continue
		}
		out.Channels = append(out.Channels, *ch)
	}
	sort.Slice(out.Releases, func(i, j int) bool {
		a, b := out.Releases[i], out.Releases[j]
		if a.Manifest != nil && b.Manifest != nil && !a.Manifest.CreatedAt.Equal(b.Manifest.CreatedAt) {
			return a.Manifest.CreatedAt.After(b.Manifest.CreatedAt)
		}
		return a.Version > b.Version
	})
	for i := range out.Releases {
		byVersion[out.Releases[i].Version] = &out.Releases[i]
	}
	for _, ch := range out.Channels {
		if r := byVersion[ch.Version]; r != nil {
			r.Channels = append(r.Channels, ch.Channel)
		}
	}
	return out, nil
}

// listDirs returns the "subdirectories" directly under prefix.
func listDirs(ctx context.Context, client *s3.Client, bucket, prefix string) ([]string, error) {
	var out []string
	p := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix), Delimiter: aws.String("/")})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list s3://%s/%s: %w", bucket, prefix, err)
		}
		for _, cp := range page.CommonPrefixes {
			out = append(out, strings.TrimSuffix(strings.TrimPrefix(aws.ToString(cp.Prefix), prefix), "/"))
		}
	}
	return out, nil
}

// listKeys returns the keys directly under prefix.
func listKeys(ctx context.Context, client *s3.Client, bucket, prefix string) ([]string, error) {
	var out []string
	p := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix), Delimiter: aws.String("/")})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list s3://%s/%s: %w", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			out = append(out, aws.ToString(o.Key))
		}
	}
	return out, nil
}

// deleteObject removes key; a missing object is fine.
func deleteObject(ctx context.Context, client *s3.Client, bucket, key string) error {
	if _, err := client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); err != nil && !isNotFound(err) {
		return fmt.Errorf("DELETE s3://%s/%s: %w", bucket, key, err)
	}
	return nil
}
