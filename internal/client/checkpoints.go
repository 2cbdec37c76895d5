package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// Checkpoints lists checkpoints (a fresh catalogue from AWS).
func (c *Client) Checkpoints(ctx context.Context) (*api.CheckpointList, error) {
	var l api.CheckpointList
	if err := c.Do(ctx, http.MethodGet, api.PathCheckpoints, nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// CreateCheckpoint takes a checkpoint now.
func (c *Client) CreateCheckpoint(ctx context.Context, req api.CheckpointRequest) (*api.Checkpoint, error) {
	var b api.CheckpointBody
	if err := c.Do(ctx, http.MethodPost, api.PathCheckpoints, req, &b); err != nil {
		return nil, err
	}
	return &b.Checkpoint, nil
}

// Checkpoint returns one checkpoint.
func (c *Client) Checkpoint(ctx context.Context, id string) (*api.Checkpoint, error) {
	var b api.CheckpointBody
	if err := c.Do(ctx, http.MethodGet, api.PathCheckpoints+"/"+url.PathEscape(id), nil, &b); err != nil {
		return nil, err
	}
	return &b.Checkpoint, nil
}

// PinCheckpoint pins (or unpins) a checkpoint.
func (c *Client) PinCheckpoint(ctx context.Context, id string, pin bool) (*api.Checkpoint, error) {
	verb := "/unpin"
	if pin {
		verb = "/pin"
	}
	var b api.CheckpointBody
	if err := c.Do(ctx, http.MethodPost, api.PathCheckpoints+"/"+url.PathEscape(id)+verb, struct{}{}, &b); err != nil {
		return nil, err
	}
	return &b.Checkpoint, nil
}

// DeleteCheckpoint deletes a checkpoint.
func (c *Client) DeleteCheckpoint(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, api.PathCheckpoints+"/"+url.PathEscape(id), nil, nil)
}

// PruneCheckpoints applies retention (or, with dryRun, says what it would do).
func (c *Client) PruneCheckpoints(ctx context.Context, dryRun bool) (*api.PruneReport, error) {
	var rep api.PruneReport
	if err := c.Do(ctx, http.MethodPost, api.PathCheckpoints+"/prune", api.PruneRequest{DryRun: dryRun}, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// RestoreCheckpoint queues a restore of a checkpoint.
func (c *Client) RestoreCheckpoint(ctx context.Context, id string, req api.RestoreRequest) (*api.DeploymentRef, error) {
	var ref api.DeploymentRef
	if err := c.Do(ctx, http.MethodPost, api.PathCheckpoints+"/"+url.PathEscape(id)+"/restore", req, &ref); err != nil {
		return nil, err
	}
	return &ref, nil
}

// Health runs every health check once, now.
func (c *Client) Health(ctx context.Context) (*api.HealthReport, error) {
	var rep api.HealthReport
	if err := c.Do(ctx, http.MethodGet, api.PathHealth, nil, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// Guard takes the checkpoint of a guarded change.
func (c *Client) Guard(ctx context.Context, req api.GuardRequest) (*api.GuardStarted, error) {
	var g api.GuardStarted
	if err := c.Do(ctx, http.MethodPost, api.PathGuards, req, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// GuardDone reports the guarded command's exit code.
func (c *Client) GuardDone(ctx context.Context, id string, code int) error {
	return c.Do(ctx, http.MethodPost, api.PathGuards+"/"+url.PathEscape(id)+"/done", api.GuardDone{ExitCode: code}, nil)
}
