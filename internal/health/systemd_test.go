package health

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/rollback-agent/rollback-agent/internal/config"
)

func systemdCfg(unit string) config.Check {
	return config.Check{Name: "unit", Systemd: &config.SystemdCheck{Unit: unit}}
}

// TestSystemdRealConnection runs the check against the machine's own
// systemd. Without systemd as PID 1 (as on this machine) it must fail at
// once with a message that says what is missing; with systemd, a unit that
// does not exist must be reported as such.
func TestSystemdRealConnection(t *testing.T) {
	const unit = "rollback-agent-health-test-no-such-unit.service"
	res, took := checkOne(t, systemdCfg(unit), Deps{})
	if res.Healthy {
		t.Fatalf("Healthy = true for %s: %q", unit, res.Output)
	}
	if res.Kind != KindSystemd {
		t.Errorf("Kind = %q, want systemd", res.Kind)
	}
	if took > 2*time.Second {
		t.Errorf("check took %v, want a quick answer", took)
	}
	t.Logf("output: %s", res.Output)
	comm, err := os.ReadFile("/proc/1/comm")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(comm)) == "systemd" {
		wantContains(t, "Output", res.Output, unit+" is inactive (want active)", "LoadState is not-found")
		return
	}
	wantContains(t, "Output", res.Output,
		"systemd check "+unit+": cannot reach systemd over D-Bus (is systemd running as PID 1?): ")
}

// fakeSystemd answers property reads from a map, like systemd would.
type fakeSystemd struct {
	mu     sync.Mutex
	props  map[string]any // property -> value
	err    error          // returned for every read when set
	asked  []string       // "unit property"
	closed int
}

func (f *fakeSystemd) GetUnitPropertyContext(ctx context.Context, unit, property string) (*sddbus.Property, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, unit+" "+property)
	if f.err != nil {
		return nil, f.err
	}
	v, ok := f.props[property]
	if !ok {
		return nil, errors.New("org.freedesktop.DBus.Error.UnknownProperty: " + property)
	}
	return &sddbus.Property{Name: property, Value: dbus.MakeVariant(v)}, nil
}

func (f *fakeSystemd) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed++
}

func (f *fakeSystemd) deps() Deps {
	return Deps{SystemdConn: func(context.Context) (SystemdAPI, error) { return f, nil }}
}

func TestSystemdFakeActiveIsHealthy(t *testing.T) {
	f := &fakeSystemd{props: map[string]any{"ActiveState": "active", "SubState": "running", "LoadState": "loaded"}}
	res, _ := checkOne(t, systemdCfg("myapp"), f.deps())
	if !res.Healthy || res.Output != "myapp.service is active" {
		t.Fatalf("Healthy = %v, Output = %q; want healthy, \"myapp.service is active\"", res.Healthy, res.Output)
	}
	if len(f.asked) != 1 || f.asked[0] != "myapp.service ActiveState" {
		t.Errorf("asked %v, want [myapp.service ActiveState] (a bare name means .service)", f.asked)
	}
	if f.closed != 1 {
		t.Errorf("connection closed %d times, want 1", f.closed)
	}
}

func TestSystemdFakeFailedIsUnhealthy(t *testing.T) {
	f := &fakeSystemd{props: map[string]any{"ActiveState": "failed", "SubState": "failed", "LoadState": "loaded"}}
	res, _ := checkOne(t, systemdCfg("myapp.service"), f.deps())
	if res.Healthy {
		t.Fatal("Healthy = true for a failed unit")
	}
	if res.Output != "myapp.service is failed (want active)" {
		t.Errorf("Output = %q", res.Output)
	}

	f = &fakeSystemd{props: map[string]any{"ActiveState": "inactive", "SubState": "dead", "LoadState": "not-found"}}
	res, _ = checkOne(t, systemdCfg("web.socket"), f.deps())
	if res.Healthy || res.Output != "web.socket is inactive (want active); LoadState is not-found; SubState is dead" {
		t.Errorf("Healthy = %v, Output = %q", res.Healthy, res.Output)
	}
}

func TestSystemdFakeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		deps Deps
		want string
	}{
		{"dial fails", Deps{SystemdConn: func(context.Context) (SystemdAPI, error) {
			return nil, errors.New("dial unix /run/systemd/private: no such file")
		}}, "systemd check myapp.service: cannot reach systemd over D-Bus (is systemd running as PID 1?): dial unix"},
		{"read fails", (&fakeSystemd{err: errors.New("access denied")}).deps(),
			"systemd check myapp.service: reading ActiveState: access denied"},
		{"not a string", (&fakeSystemd{props: map[string]any{"ActiveState": uint32(1)}}).deps(),
			"reading ActiveState: systemd returned u, not a string"},
		{"no connection", Deps{SystemdConn: func(context.Context) (SystemdAPI, error) { return nil, nil }},
			"the connection factory returned no connection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := checkOne(t, systemdCfg("myapp"), tc.deps)
			if res.Healthy {
				t.Fatal("Healthy = true")
			}
			wantContains(t, "Output", res.Output, tc.want)
		})
	}
}

// TestSystemdHangingConnectionReturnsAtTimeout: a D-Bus peer that accepts
// and never answers, with a library that ignores the context, must still
// give a result at the check's timeout. The 5s default is shortened for
// the test.
func TestSystemdHangingConnectionReturnsAtTimeout(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	deps := Deps{SystemdConn: func(context.Context) (SystemdAPI, error) {
		<-release // ignores ctx on purpose
		return nil, errors.New("released")
	}}
	cs := mustNew(t, []config.Check{systemdCfg("myapp")}, deps)
	const timeout = 200 * time.Millisecond
	cs[0].(*checker).timeout = timeout
	start := time.Now()
	res := cs[0].Check(context.Background())
	wantDuration(t, "check with a hanging D-Bus peer", time.Since(start), timeout-5*time.Millisecond, timeout+margin)
	if res.Healthy || res.Output != "timed out after 200ms: asking systemd about myapp.service did not finish" {
		t.Errorf("Healthy = %v, Output = %q", res.Healthy, res.Output)
	}
}

func TestSystemdDefaultTimeout(t *testing.T) {
	cs := mustNew(t, []config.Check{systemdCfg("myapp")}, Deps{})
	if got := cs[0].(*checker).timeout; got != 5*time.Second {
		t.Errorf("timeout = %v, want 5s", got)
	}
}
