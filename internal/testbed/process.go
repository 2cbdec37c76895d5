// Package testbed starts the real peers the agent is tested against: moto
// server for AWS, AWS's ec2-metadata-mock for IMDS, and the project's AWS
// proxy in front of them for faults and for what moto lacks. Tests, the
// benchmarks and `make demo` all use it. It is never linked into the
// product binaries.
package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// process is a peer running as a child process in its own process group,
// killed with its group when stopped or when this process dies.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   sync.Mutex
	done chan struct{}
	err  error
}

type lockedBuffer struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (l lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Keep the tail only: peers can be chatty over a long test.
	if l.buf.Len() > 1<<20 {
		tail := append([]byte(nil), l.buf.Bytes()[l.buf.Len()-512<<10:]...)
		l.buf.Reset()
		l.buf.Write(tail)
	}
	return l.buf.Write(p)
}

func startProcess(name string, path string, args []string, env []string, dir string) (*process, error) {
	p := &process{name: name, log: &bytes.Buffer{}, done: make(chan struct{})}
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Dir = dir
	w := lockedBuffer{mu: &p.mu, buf: p.log}
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.cmd = cmd
	// Pdeathsig fires when the *thread* that forked the child ends, not
	// the process (prctl(2), PR_SET_PDEATHSIG), and Go ends a thread when
	// a goroutine exits while locked to it (runtime.LockOSThread). Forked
	// from any thread, a peer could be SIGKILLed mid-run by an unrelated
	// test's locked goroutine (moto died so once, in CI). The peer is
	// forked from a thread of its own, locked and held until it exits.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the peer
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("testbed: start %s (%s): %w", name, path, err)
	}
	return p, nil
}

// Output returns what the process printed (its tail).
func (p *process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the group, then SIGKILL after a grace.
func (p *process) stop() {
	if p == nil || p.cmd == nil || p.exited() {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitHTTP polls until check returns nil, the process exits, or ctx ends.
func waitHTTP(ctx context.Context, p *process, check func(*http.Client) error) error {
	hc := &http.Client{Timeout: time.Second}
	exited := false
	err := pollCtx(ctx, func() error {
		err := check(hc)
		if err != nil && p.exited() {
			exited = true
			return testutil.Stop(err)
		}
		return err
	})
	switch {
	case err == nil:
		return nil
	case exited:
		return fmt.Errorf("testbed: %s exited before it answered: %v\n%s", p.name, p.err, p.Output())
	default:
		return fmt.Errorf("testbed: %s did not answer in time (%v)\n%s", p.name, err, p.Output())
	}
}

// pollCtx is testutil.Poll bounded by ctx instead of a duration: it
// returns try's last error once ctx ends.
func pollCtx(ctx context.Context, try func() error) error {
	maxWait := time.Duration(math.MaxInt64)
	if dl, ok := ctx.Deadline(); ok {
		maxWait = time.Until(dl)
	}
	var last error
	return testutil.Poll(maxWait, func() error {
		if ctx.Err() != nil && last != nil {
			return testutil.Stop(last)
		}
		last = try()
		return last
	})
}

// RepoRoot finds the module root from the working directory (tests run in
// their package directory).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testbed: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// findTool looks for a peer binary: an explicit environment override, the
// repo's ./bin (where `make tools` puts pinned versions), then PATH.
func findTool(name, envVar, installHint string) (string, error) {
	if v := os.Getenv(envVar); v != "" {
		return v, nil
	}
	if root, err := RepoRoot(); err == nil {
		p := filepath.Join(root, "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("testbed: %s not found in ./bin or PATH (or $%s): %s", name, envVar, installHint)
}

func itoa(i int) string { return strconv.Itoa(i) }
