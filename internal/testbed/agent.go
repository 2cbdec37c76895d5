package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/client"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// Agent is a rollback-agent process started from a built binary.
type Agent struct {
	Bin    string
	Config string
	Socket string
	Env    []string
	proc   *process
}

// StartAgent runs the rollback-agent binary with --config and env.
func StartAgent(bin, cfgPath, socket string, env []string) (*Agent, error) {
	a := &Agent{Bin: bin, Config: cfgPath, Socket: socket, Env: env}
	p, err := startProcess("rollback-agent", bin, []string{"--config", cfgPath}, env, "/")
	if err != nil {
		return nil, err
	}
	a.proc = p
	return a, nil
}

// WaitReady waits until GET /v1/status answers 200, or the agent exits.
func (a *Agent) WaitReady(ctx context.Context) error {
	c := client.New(a.Socket)
	defer c.Close()
	exited := false
	err := pollCtx(ctx, func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := c.Status(cctx)
		if err != nil && a.proc.exited() {
			exited = true
			return testutil.Stop(err)
		}
		return err
	})
	switch {
	case err == nil:
		return nil
	case exited:
		return fmt.Errorf("rollback-agent exited before it was ready (%v):\n%s", a.proc.err, a.Output())
	default:
		return fmt.Errorf("rollback-agent not ready: %v\n%s", err, a.Output())
	}
}

// Wait waits for the agent to exit and returns its exit status.
func (a *Agent) Wait(ctx context.Context) (int, error) {
	select {
	case <-a.proc.done:
	case <-ctx.Done():
		return -1, ctx.Err()
	}
	var ee interface{ ExitCode() int }
	if errors.As(a.proc.err, &ee) {
		return ee.ExitCode(), nil
	}
	if a.proc.err != nil {
		return -1, a.proc.err
	}
	return 0, nil
}

// Signal sends sig to the agent process (not its group: hooks the agent
// started must survive, as under systemd's KillMode=process).
func (a *Agent) Signal(sig syscall.Signal) error {
	return a.proc.cmd.Process.Signal(sig)
}

// Stop asks the agent to stop (SIGTERM) and waits; it is killed if it does
// not stop within the bound.
func (a *Agent) Stop() {
	if a.proc.exited() {
		return
	}
	_ = a.Signal(syscall.SIGTERM)
	select {
	case <-a.proc.done:
	case <-time.After(20 * time.Second):
		a.Kill()
	}
}

// Kill SIGKILLs the agent, as a crash would.
func (a *Agent) Kill() {
	if a.proc.exited() {
		return
	}
	_ = a.Signal(syscall.SIGKILL)
	<-a.proc.done
}

// PID is the agent's process id.
func (a *Agent) PID() int { return a.proc.cmd.Process.Pid }

// Output is what the agent wrote to stdout and stderr.
func (a *Agent) Output() string { return a.proc.Output() }

// Exited reports whether the process has ended.
func (a *Agent) Exited() bool { return a.proc.exited() }

// NotifySocket is a real sd_notify datagram socket, as systemd provides,
// recording every message the agent sends.
type NotifySocket struct {
	Path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
	cond chan struct{}
}

// ListenNotify opens a NOTIFY_SOCKET in dir.
func ListenNotify(dir string) (*NotifySocket, error) {
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("testbed: listen %s: %w", path, err)
	}
	n := &NotifySocket{Path: path, conn: conn, cond: make(chan struct{}, 1)}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			k, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
			select {
			case n.cond <- struct{}{}:
			default:
			}
		}
	}()
	return n, nil
}

// Messages returns every datagram received so far.
func (n *NotifySocket) Messages() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// WaitFor waits for a datagram containing substr, returning it.
func (n *NotifySocket) WaitFor(ctx context.Context, substr string) (string, error) {
	for {
		for _, m := range n.Messages() {
			if strings.Contains(m, substr) {
				return m, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no sd_notify message containing %q; got %q", substr, n.Messages())
		case <-n.cond:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close closes the socket and removes it.
func (n *NotifySocket) Close() {
	n.conn.Close()
	os.Remove(n.Path)
}
