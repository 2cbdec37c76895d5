package testbed

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

// Moto is a running moto_server.
type Moto struct {
	URL  string
	proc *process
}

// StartMoto starts moto_server on a free loopback port. moto comes from the
// machine image; when it is missing the error says so (tests fail, never
// skip).
func StartMoto(ctx context.Context) (*Moto, error) { return StartMotoWith(ctx, nil) }

// StartMotoWith starts moto_server with extra environment (moto's
// settings, INITIAL_NO_AUTH_ACTION_COUNT say).
func StartMotoWith(ctx context.Context, extraEnv []string) (*Moto, error) {
	bin, err := findTool("moto_server", "MOTO_SERVER",
		"moto 5.x must be installed in the machine's Python (it provides the moto_server command)")
	if err != nil {
		return nil, err
	}
	var lastErr error
	// A free port can be taken between asking and binding; try a few.
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		env := append(append(os.Environ(), "MOTO_ALLOW_NONEXISTENT_REGION=false", "PYTHONUNBUFFERED=1"), extraEnv...)
		p, err := startProcess("moto_server", bin, []string{"-H", "127.0.0.1", "-p", itoa(port)}, env, "")
		if err != nil {
			return nil, err
		}
		m := &Moto{URL: fmt.Sprintf("http://127.0.0.1:%d", port), proc: p}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		lastErr = waitHTTP(wctx, p, func(hc *http.Client) error {
			resp, err := hc.Get(m.URL + "/moto-api/")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("moto-api answered %d", resp.StatusCode)
			}
			return nil
		})
		cancel()
		if lastErr == nil {
			return m, nil
		}
		p.stop()
	}
	return nil, lastErr
}

// Reset wipes all of moto's state.
func (m *Moto) Reset(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, m.URL+"/moto-api/reset", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("testbed: reset moto: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("testbed: reset moto: HTTP %d", resp.StatusCode)
	}
	return nil
}

// setAuth sets moto's count of requests let through before IAM is
// enforced, and restarts the count ("0": enforce from now on; "inf": let
// everything through). POST /moto-api/reset-auth is moto's own switch for
// this (moto.core.set_initial_no_auth_action_count uses it in server mode).
func (m *Moto) setAuth(ctx context.Context, count string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, m.URL+"/moto-api/reset-auth", strings.NewReader(count))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("testbed: moto reset-auth %s: %w", count, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("testbed: moto reset-auth %s: HTTP %d", count, resp.StatusCode)
	}
	return nil
}

// Output is what moto printed.
func (m *Moto) Output() string { return m.proc.Output() }

// Stop ends moto.
func (m *Moto) Stop() { m.proc.stop() }
