package health

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/rollback-agent/rollback-agent/internal/config"
)

type tcpCheck struct {
	address string
	dialer  *net.Dialer
}

func newTCPCheck(name string, c config.TCPCheck) (Checker, error) {
	if _, port, err := net.SplitHostPort(c.Address); err != nil || port == "" {
		return nil, fmt.Errorf("tcp.address %q: want host:port", c.Address)
	}
	timeout := orDefault(c.Timeout, defaultTCPTimeout)
	t := &tcpCheck{address: c.Address, dialer: &net.Dialer{Timeout: timeout}}
	return &checker{name: name, kind: KindTCP, what: "connecting to " + c.Address, timeout: timeout, probe: plain(t.probe)}, nil
}

func (t *tcpCheck) probe(ctx context.Context) (bool, string) {
	conn, err := t.dialer.DialContext(ctx, "tcp", t.address)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Err != nil {
			// OpError repeats "dial tcp <addr>"; keep the cause only.
			err = oe.Err
		}
		return false, fmt.Sprintf("connecting to %s: %v", t.address, err)
	}
	remote := conn.RemoteAddr().String()
	if err := conn.Close(); err != nil {
		// Connected is what the check asks; a failed close is only noted.
		return true, fmt.Sprintf("connected to %s (%s); closing: %v", t.address, remote, err)
	}
	return true, fmt.Sprintf("connected to %s (%s)", t.address, remote)
}
