// Package client is the typed client of the local socket API. It turns the
// ways a call can fail into typed errors: the daemon is not running, the
// caller is denied, the daemon is not ready, or the API said no.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// DefaultSocket is the daemon's socket unless configured otherwise.
const DefaultSocket = "/run/rollback-agent/agent.sock"

// NotRunningError means nothing answers on the socket.
type NotRunningError struct {
	Socket string
	Err    error
}

func (e *NotRunningError) Error() string {
	return fmt.Sprintf("the agent is not running (nothing answers on %s: %v)", e.Socket, e.Err)
}

func (e *NotRunningError) Unwrap() error { return e.Err }

// DeniedError means the caller may not do what it asked.
type DeniedError struct {
	Socket  string
	Message string
}

func (e *DeniedError) Error() string { return "denied: " + e.Message }

// NotReadyError means the daemon answers but is still starting.
type NotReadyError struct{ Message string }

func (e *NotReadyError) Error() string { return e.Message }

// APIError is any other error answer.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string { return e.Message }

// Client talks to one daemon socket.
type Client struct {
	socket string
	http   *http.Client
	// ServerVersion is the Server-Version header of the last answer.
	ServerVersion string
}

// New returns a client of the socket at path. It talks only to a socket
// owned by, and a process running as, root, the caller's own user, or one
// of owners (an agent deliberately run as another user): see
// UntrustedSocketError.
func New(path string, owners ...int) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			if err := checkSocketOwner(path, owners); err != nil {
				return nil, err
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", path)
			if err != nil {
				return nil, err
			}
			if err := checkPeer(c, path, owners); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		},
		DisableCompression: true,
	}
	return &Client{socket: path, http: &http.Client{Transport: tr}}
}

// Close closes idle connections to the daemon.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Socket is the path this client talks to.
func (c *Client) Socket() string { return c.socket }

// Status returns GET /v1/status.
func (c *Client) Status(ctx context.Context) (*api.Status, error) {
	var st api.Status
	if err := c.Do(ctx, http.MethodGet, api.PathStatus, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Do sends a request with an optional JSON body and decodes a JSON answer
// into out (when out is non-nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.Raw(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer to %s %s: %w", method, path, err)
	}
	return nil
}

// Raw sends a request and returns a 2xx response for the caller to read
// (streams such as /v1/events); non-2xx answers become typed errors.
func (c *Client) Raw(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode request %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.connError(err)
	}
	c.ServerVersion = resp.Header.Get(api.HeaderServerVersion)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	var eb api.ErrorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
		eb.Error = fmt.Sprintf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	switch {
	case resp.StatusCode == http.StatusForbidden:
		return nil, &DeniedError{Socket: c.socket, Message: eb.Error}
	case resp.StatusCode == http.StatusServiceUnavailable && eb.Code == api.CodeStarting:
		return nil, &NotReadyError{Message: eb.Error}
	}
	return nil, &APIError{Status: resp.StatusCode, Code: eb.Code, Message: eb.Error}
}

func (c *Client) connError(err error) error {
	var ue *UntrustedSocketError
	if errors.As(err, &ue) {
		return ue
	}
	switch {
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return &DeniedError{Socket: c.socket, Message: fmt.Sprintf("cannot open %s: permission denied (root, or a member of the agent's socket group, may connect)", c.socket)}
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return &NotRunningError{Socket: c.socket, Err: unwrapOp(err)}
	}
	return fmt.Errorf("talk to the agent on %s: %w", c.socket, err)
}

func unwrapOp(err error) error {
	var se *net.OpError
	if errors.As(err, &se) && se.Err != nil {
		return se.Err
	}
	return err
}
