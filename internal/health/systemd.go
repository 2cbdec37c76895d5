package health

import (
	"context"
	"errors"
	"fmt"
	"strings"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/rollback-agent/rollback-agent/internal/config"
)

type systemdCheck struct {
	name string
	unit string
	dial func(ctx context.Context) (SystemdAPI, error)
}

func newSystemdCheck(name string, c config.SystemdCheck, dial func(ctx context.Context) (SystemdAPI, error)) (Checker, error) {
	if c.Unit == "" {
		return nil, errors.New("systemd.unit must name a unit")
	}
	if dial == nil {
		dial = dialSystemd
	}
	s := &systemdCheck{name: name, unit: unitName(c.Unit), dial: dial}
	return &checker{name: name, kind: KindSystemd, what: "asking systemd about " + s.unit,
		timeout: defaultSystemdTimeout, probe: plain(s.probe)}, nil
}

// dialSystemd connects to the system bus, or as root to systemd's private
// socket when there is no bus.
func dialSystemd(ctx context.Context) (SystemdAPI, error) {
	conn, err := sddbus.NewWithContext(ctx)
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// unitName adds ".service" to a name without a unit type suffix, as
// systemctl does, so that "myapp" means myapp.service.
func unitName(u string) string {
	for _, s := range []string{".service", ".socket", ".device", ".mount", ".automount", ".swap",
		".target", ".path", ".timer", ".slice", ".scope"} {
		if strings.HasSuffix(u, s) {
			return u
		}
	}
	return u + ".service"
}

// probe opens a connection per check rather than keeping one: a check runs
// every few seconds at most, and a fresh connection survives systemd
// re-executing itself (daemon-reexec) without any reconnect logic.
func (s *systemdCheck) probe(ctx context.Context) (bool, string) {
	conn, err := s.dial(ctx)
	if err != nil {
		return false, fmt.Sprintf("systemd check %s: cannot reach systemd over D-Bus (is systemd running as PID 1?): %v", s.unit, err)
	}
	if conn == nil {
		return false, fmt.Sprintf("systemd check %s: cannot reach systemd over D-Bus: the connection factory returned no connection", s.unit)
	}
	defer conn.Close()

	active, err := unitProperty(ctx, conn, s.unit, "ActiveState")
	if err != nil {
		return false, fmt.Sprintf("systemd check %s: reading ActiveState: %v", s.unit, err)
	}
	if active == "active" {
		return true, s.unit + " is active"
	}
	msg := fmt.Sprintf("%s is %s (want active)", s.unit, active)
	// LoadState tells "not-found" (a typo in the config) apart from a unit
	// that exists but is down; it is a hint only, so errors are ignored.
	if load, err := unitProperty(ctx, conn, s.unit, "LoadState"); err == nil && load != "" && load != "loaded" {
		msg += fmt.Sprintf("; LoadState is %s", load)
	}
	if sub, err := unitProperty(ctx, conn, s.unit, "SubState"); err == nil && sub != "" && sub != active {
		msg += fmt.Sprintf("; SubState is %s", sub)
	}
	return false, msg
}

// unitProperty reads one string property of org.freedesktop.systemd1.Unit.
func unitProperty(ctx context.Context, conn SystemdAPI, unit, property string) (string, error) {
	p, err := conn.GetUnitPropertyContext(ctx, unit, property)
	if err != nil {
		return "", err
	}
	if p == nil {
		return "", errors.New("systemd returned no value")
	}
	v, ok := p.Value.Value().(string)
	if !ok {
		return "", fmt.Errorf("systemd returned %s, not a string", p.Value.Signature())
	}
	return v, nil
}
