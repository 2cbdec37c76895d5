package client

import (
	"context"
	"net/http"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// Doctor runs the agent's checks (GET /v1/doctor).
func (c *Client) Doctor(ctx context.Context) (*api.DoctorReport, error) {
	var rep api.DoctorReport
	if err := c.Do(ctx, http.MethodGet, api.PathDoctor, nil, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}
