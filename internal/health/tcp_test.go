package health

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/config"
)

func tcpCfg(addr string, timeout time.Duration) config.Check {
	return config.Check{Name: "port", TCP: &config.TCPCheck{Address: addr, Timeout: timeout}}
}

func TestTCPListenerIsHealthy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	res, _ := checkOne(t, tcpCfg(ln.Addr().String(), time.Second), Deps{})
	if !res.Healthy {
		t.Fatalf("Healthy = false: %q", res.Output)
	}
	if res.Kind != KindTCP {
		t.Errorf("Kind = %q, want tcp", res.Kind)
	}
	wantContains(t, "Output", res.Output, "connected to "+ln.Addr().String())
}

func TestTCPClosedPortIsUnhealthy(t *testing.T) {
	addr := closedAddr(t)
	res, took := checkOne(t, tcpCfg(addr, time.Second), Deps{})
	if res.Healthy {
		t.Fatal("Healthy = true with nothing listening")
	}
	if took > 500*time.Millisecond {
		t.Errorf("a refused connection took %v, want it to fail at once", took)
	}
	wantContains(t, "Output", res.Output, "connecting to "+addr, "connection refused")
}

// TestTCPUnansweredConnectFailsAtTimeout needs an address that swallows
// SYNs. TEST-NET-1 (192.0.2.1) is no good everywhere: on some hosts, this
// one included, it is the gateway and answers with a reset. A loopback
// listener whose accept queue is full is: Linux drops SYNs for it, and the
// helper checks that it does before the test relies on it.
func TestTCPUnansweredConnectFailsAtTimeout(t *testing.T) {
	addr := fullBacklogListener(t)
	const timeout = 300 * time.Millisecond
	res, took := checkOne(t, tcpCfg(addr, timeout), Deps{})
	if res.Healthy {
		t.Fatal("Healthy = true for an address that never answers")
	}
	wantDuration(t, "check of an unanswered connect", took, timeout-probeSlack(timeout)-5*time.Millisecond, timeout+margin)
	wantContains(t, "Output", res.Output, "timed out after 300ms", "connecting to "+addr)
}

// fullBacklogListener listens with a backlog of 0 and fills its accept
// queue, so that further connects get no answer at all.
func fullBacklogListener(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatalf("listen: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return addr // the queue is full: SYNs are dropped now
			}
			t.Fatalf("filling the accept queue of %s: %v", addr, err)
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("connects to %s with a full accept queue still succeed; cannot build an unanswering address", addr)
	return ""
}
