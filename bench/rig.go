package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

// rig is one agent on one instance of the test bed, as in production:
// the real binaries, the AWS proxy, the IMDS mock.
type rig struct {
	b      *bench
	inst   *testbed.Instance
	dir    string
	socket string
	config string
	agent  *testbed.Agent
}

// newRig starts an agent with extra config on a fresh instance.
func (b *bench) newRig(ctx context.Context, extra string) (*rig, error) {
	inst, err := b.bed.NewInstance(ctx, testbed.InstanceOptions{DataPlane: true})
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(b.dir, "rig-")
	if err != nil {
		return nil, err
	}
	r := &rig{b: b, inst: inst, dir: dir, socket: filepath.Join(dir, "agent.sock"), config: filepath.Join(dir, "agent.yaml")}
	if err := r.writeConfig(extra); err != nil {
		return nil, err
	}
	if err := r.start(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *rig) writeConfig(extra string) error {
	cfg := fmt.Sprintf("application: bench\nstate_dir: %s\nsocket: %s\nsocket_group: root\ndevices: {by_id_dir: %s}\nlog_level: warn\n%s",
		filepath.Join(r.dir, "state"), r.socket, r.inst.ByIDDir, extra)
	return os.WriteFile(r.config, []byte(cfg), 0o644)
}

func (r *rig) start(ctx context.Context) error {
	a, err := testbed.StartAgent(filepath.Join(r.b.bin, "rollback-agent"), r.config, r.socket, r.inst.Env())
	if err != nil {
		return err
	}
	r.agent = a
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return a.WaitReady(wctx)
}

func (r *rig) close() {
	if r.agent != nil {
		r.agent.Stop()
	}
	r.inst.Close()
	os.RemoveAll(r.dir)
}

// ctl runs agentctl and returns stdout; a non-zero exit is an error.
func (r *rig) ctl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(r.b.bin, "agentctl"), append([]string{"--socket", r.socket}, args...)...)
	cmd.Env = r.inst.Env()
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return string(out), fmt.Errorf("agentctl %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return string(out), nil
}

// deploy deploys src and returns the finished record.
func (r *rig) deploy(ctx context.Context, args ...string) (*api.Deployment, error) {
	out, err := r.ctl(ctx, append([]string{"deploy"}, args...)...)
	if err != nil {
		return nil, err
	}
	return r.record(ctx, strings.Fields(out)[1])
}

// run runs agentctl for an operation with --wait and returns its record.
func (r *rig) run(ctx context.Context, args ...string) (*api.Deployment, error) {
	out, err := r.ctl(ctx, append(args, "--wait", "-o", "json")...)
	if err != nil {
		return nil, err
	}
	var d api.Deployment
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		return nil, fmt.Errorf("decode %s: %w", out, err)
	}
	if d.Status != api.StatusSucceeded {
		return &d, fmt.Errorf("%s ended %s: %s", d.ID, d.Status, d.Error)
	}
	return &d, nil
}

func (r *rig) record(ctx context.Context, id string) (*api.Deployment, error) {
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		out, err := r.ctl(ctx, "show", id, "-o", "json")
		if err != nil {
			return nil, err
		}
		var b api.DeploymentBody
		if err := json.Unmarshal([]byte(out), &b); err != nil {
			return nil, err
		}
		if b.Deployment.Status.Terminal() {
			if b.Deployment.Status != api.StatusSucceeded {
				return &b.Deployment, fmt.Errorf("%s ended %s: %s", id, b.Deployment.Status, b.Deployment.Error)
			}
			return &b.Deployment, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("deployment %s did not end", id)
}

// startTrace runs the bench's -trace command against the agent; the
// returned function stops it (SIGINT, as a user's ^C) and waits for it to
// write its report.
func (r *rig) startTrace() (func(), error) {
	if r.b.trace == "" {
		return func() {}, nil
	}
	args := append(strings.Fields(r.b.trace), strconv.Itoa(r.agent.PID()))
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("trace %s: %w", r.b.trace, err)
	}
	time.Sleep(time.Second) // attached before the first operation
	var once sync.Once
	return func() {
		once.Do(func() {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		})
	}, nil
}

// took is the time a deployment ran, from the agent's own record.
func took(d *api.Deployment) time.Duration { return d.EndedAt.Sub(d.StartedAt) }

// stepTime sums the durations of the deployment's own steps with names.
func stepTime(d *api.Deployment, names ...string) time.Duration {
	var t time.Duration
	for _, s := range d.Steps {
		for _, n := range names {
			if s.Name == n && s.Rung == "" {
				t += s.EndedAt.Sub(s.StartedAt)
			}
		}
	}
	return t
}

// procStatus reads one "Key: value kB" field of /proc/pid/status, in bytes.
func procStatus(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key+":") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				return v * 1024
			}
		}
	}
	return -1
}

// cpuTime is the user+system CPU time of a process so far.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// stats is a set of measurements.
type stats []time.Duration

func (s stats) sorted() stats {
	c := append(stats(nil), s...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	return c
}

func (s stats) median() time.Duration {
	c := s.sorted()
	if len(c) == 0 {
		return 0
	}
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

// String is "median (min–max, n=N)".
func (s stats) String() string {
	c := s.sorted()
	if len(c) == 0 {
		return "-"
	}
	return fmt.Sprintf("%s (%s–%s, n=%d)", round(s.median()), round(c[0]), round(c[len(c)-1]), len(c))
}

func round(d time.Duration) time.Duration {
	switch {
	case d > 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d > time.Second:
		return d.Round(10 * time.Millisecond)
	case d > time.Millisecond:
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
