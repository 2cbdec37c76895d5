package client

import (
	"context"
	"net/http"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// CodeDeployBegin tells the agent a CodeDeploy deployment's BeforeInstall
// runs; it answers once the checkpoint is taken.
func (c *Client) CodeDeployBegin(ctx context.Context, req api.CodeDeployRequest) (*api.Deployment, error) {
	var b api.DeploymentBody
	if err := c.Do(ctx, http.MethodPost, api.PathCodeDeployBegin, req, &b); err != nil {
		return nil, err
	}
	return &b.Deployment, nil
}

// CodeDeployGate is the deployment's ValidateService: the agent assesses
// health and answers the ended record.
func (c *Client) CodeDeployGate(ctx context.Context, req api.CodeDeployRequest) (*api.Deployment, error) {
	var b api.DeploymentBody
	if err := c.Do(ctx, http.MethodPost, api.PathCodeDeployGate, req, &b); err != nil {
		return nil, err
	}
	return &b.Deployment, nil
}
