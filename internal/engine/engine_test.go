package engine_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/clock"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/health"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/releases"
	"github.com/rollback-agent/rollback-agent/internal/source"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// agent is an engine over a real journal, real releases and real hooks,
// in a temp dir; dest is where revisions install, out a place hooks write to.
type agent struct {
	t      *testing.T
	e      *engine.Engine
	j      *journal.Journal
	cfg    *config.Config
	dir    string
	dest   string
	out    string
	cancel context.CancelFunc
	done   chan struct{}
	// maxEvent, when set before start, shortens the per-event budget.
	maxEvent time.Duration
	// cps, when set before start, takes and restores checkpoints.
	cps engine.Checkpoints
	// clock, when set before start, times the engine's long waits.
	clock clock.Clock
	// killAt, when set before start, says where the engine dies: the
	// worker stops there for good, as under SIGKILL (crash_test.go).
	killAt func(d *api.Deployment, s api.Step, at engine.StepPoint) bool
	killed chan struct{}
	// transitions are every status change, as "id from→to".
	mu          sync.Mutex
	transitions []string
}

func newAgent(t *testing.T, mutate func(*config.Config)) *agent {
	t.Helper()
	return newAgentYAML(t, func(string) string { return "" }, mutate)
}

// newAgentYAML is newAgent with more agent.yaml, written by extra from
// the agent's temp dir (health checks name files in it).
func newAgentYAML(t *testing.T, extra func(dir string) string, mutate func(*config.Config)) *agent {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	cfg, _, err := config.Parse("test.yaml", []byte("application: shop\nstate_dir: "+filepath.Join(dir, "state")+"\n"+extra(dir)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Limits.HookKillGrace = 500 * time.Millisecond
	if mutate != nil {
		mutate(cfg)
	}
	a := &agent{t: t, cfg: cfg, dir: dir, dest: filepath.Join(dir, "opt", "shop"), out: filepath.Join(dir, "out")}
	os.MkdirAll(a.out, 0o777)
	os.Chmod(a.out, 0o777)
	a.start()
	return a
}

func (a *agent) start() {
	a.t.Helper()
	j, err := journal.Open(a.cfg.StateDir, time.Second)
	if err != nil {
		a.t.Fatal(err)
	}
	rel, err := releases.Open(a.cfg.StateDir)
	if err != nil {
		a.t.Fatal(err)
	}
	e, err := engine.New(engine.Options{
		Config: func() *config.Config { return a.cfg }, Journal: j, Releases: rel, StateDir: a.cfg.StateDir,
		Log: zaptest.NewLogger(a.t, zaptest.Level(zap.WarnLevel)), Fetcher: &source.Fetcher{}, GroupID: "group-uuid", MaxEventTime: a.maxEvent,
		Health: func() ([]health.Checker, health.Policy, error) {
			c, err := health.New(a.cfg.Health.Checks, health.Deps{})
			return c, health.PolicyFrom(a.cfg.Health), err
		},
		Checkpoints: a.cps, OnStep: a.onStep(), OnTransition: a.onTransition, Clock: a.clock,
	})
	if err != nil {
		a.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.e, a.j, a.cancel, a.done = e, j, cancel, make(chan struct{})
	go func() {
		defer close(a.done)
		e.Run(ctx)
	}()
	a.t.Cleanup(a.stop)
}

func (a *agent) stop() {
	if a.cancel == nil {
		return
	}
	a.cancel()
	<-a.done
	a.j.Close()
	a.cancel = nil
}

// bundle writes r as a tgz and returns its path.
func (a *agent) bundle(name string, r revision.Revision) string {
	a.t.Helper()
	if r.Dest == "" && r.AppSpec == "" {
		r.Dest = a.dest
	}
	p := filepath.Join(a.dir, name+".tgz")
	if err := r.TarGz(p); err != nil {
		a.t.Fatal(err)
	}
	return p
}

func (a *agent) request(path string) engine.Request {
	a.t.Helper()
	src, err := source.Parse(path)
	if err != nil {
		a.t.Fatal(err)
	}
	return engine.Request{Source: src, Trigger: "test"}
}

// deploy submits a bundle and waits for the deployment to end.
func (a *agent) deploy(path string) *api.Deployment {
	a.t.Helper()
	d, err := a.e.Submit(a.request(path))
	if err != nil {
		a.t.Fatal(err)
	}
	return a.wait(d.ID)
}

// wait waits for deployment id to end, from its journal record.
func (a *agent) wait(id string) *api.Deployment {
	a.t.Helper()
	var d *api.Deployment
	testutil.WaitFor(a.t, time.Minute, "deployment "+id+" to end", func() error {
		var err error
		if d, err = a.j.Deployment(id); err != nil {
			return testutil.Stop(err)
		}
		if !d.Status.Terminal() {
			return fmt.Errorf("it is %s: %+v", d.Status, d)
		}
		return nil
	})
	return d
}

func (a *agent) read(name string) string {
	b, _ := os.ReadFile(filepath.Join(a.out, name))
	return string(b)
}

func (a *agent) destFile(rel string) string {
	b, err := os.ReadFile(filepath.Join(a.dest, rel))
	if err != nil {
		return "<missing>"
	}
	return string(b)
}

func stepNames(d *api.Deployment) []string {
	var out []string
	for _, s := range d.Steps {
		n := s.Name
		if s.Rung != "" {
			n = string(s.Rung) + ":" + n
		}
		out = append(out, n+"="+string(s.Status))
	}
	return out
}

func mustStatus(t *testing.T, d *api.Deployment, want api.DeploymentStatus) *api.Deployment {
	t.Helper()
	if d.Status != want {
		t.Fatalf("deployment %s: status %s, want %s; error %q\nsteps %v", d.ID, d.Status, want, d.Error, strings.Join(stepNames(d), " "))
	}
	return d
}

// recordHooks is a set of hooks that append "<event> <revision>" to
// out/order, so a test can read the lifecycle as it happened.
func recordHooks(out string, extra map[string]string) map[string]string {
	h := map[string]string{}
	for _, ev := range []string{"ApplicationStop", "BeforeInstall", "AfterInstall", "ApplicationStart", "ValidateService"} {
		h[ev] = `echo "$LIFECYCLE_EVENT $ROLLBACK_AGENT_REVISION" >> ` + filepath.Join(out, "order")
	}
	for k, v := range extra {
		h[k] += "\n" + v
	}
	return h
}
