package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// Deploy asks for a deployment.
func (c *Client) Deploy(ctx context.Context, req api.DeployRequest) (*api.DeploymentRef, error) {
	var ref api.DeploymentRef
	if err := c.Do(ctx, http.MethodPost, api.PathDeployments, req, &ref); err != nil {
		return nil, err
	}
	return &ref, nil
}

// Acknowledge tells the agent an operator saw the trouble it reports,
// and returns the status after.
func (c *Client) Acknowledge(ctx context.Context, trouble string) (*api.Status, error) {
	var st api.Status
	if err := c.Do(ctx, http.MethodPost, api.PathAcknowledge, api.AcknowledgeRequest{Trouble: trouble}, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Rollback asks for a rollback.
func (c *Client) Rollback(ctx context.Context, req api.RollbackRequest) (*api.DeploymentRef, error) {
	var ref api.DeploymentRef
	if err := c.Do(ctx, http.MethodPost, api.PathRollback, req, &ref); err != nil {
		return nil, err
	}
	return &ref, nil
}

// Deployments lists up to limit deployments, newest first.
func (c *Client) Deployments(ctx context.Context, limit int) ([]api.Deployment, error) {
	var l api.DeploymentList
	if err := c.Do(ctx, http.MethodGet, api.PathDeployments+"?limit="+strconv.Itoa(limit), nil, &l); err != nil {
		return nil, err
	}
	return l.Deployments, nil
}

// Deployment returns one deployment.
func (c *Client) Deployment(ctx context.Context, id string) (*api.Deployment, error) {
	var b api.DeploymentBody
	if err := c.Do(ctx, http.MethodGet, api.PathDeployments+"/"+url.PathEscape(id), nil, &b); err != nil {
		return nil, err
	}
	return &b.Deployment, nil
}

// Log opens a deployment's hook output (one event's when event is set);
// with follow the stream stays open until the deployment ends.
func (c *Client) Log(ctx context.Context, id, event string, follow bool) (io.ReadCloser, error) {
	q := url.Values{}
	if event != "" {
		q.Set("event", event)
	}
	if follow {
		q.Set("follow", "1")
	}
	resp, err := c.Raw(ctx, http.MethodGet, api.PathDeployments+"/"+url.PathEscape(id)+"/log?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Events calls fn for every event of deployment id (all events for "")
// until the stream ends, fn returns false, or ctx ends.
func (c *Client) Events(ctx context.Context, id string, fn func(api.Event) bool) error {
	path := api.PathEvents
	if id != "" {
		path += "?deployment=" + url.QueryEscape(id)
	}
	resp, err := c.Raw(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var ev api.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("events: decode: %w", err)
		}
		if !fn(ev) {
			return nil
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("events: %w", err)
	}
	return ctx.Err()
}
