// Command demo tells the whole story against the local test bed: it starts
// moto, the IMDS mock and the AWS proxy, creates an instance, runs the real
// rollback-agent "on" it and drives it with the real agentctl. `make demo`
// runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding rollback-agent and agentctl")
	keep := flag.Bool("keep", false, "leave the agent and test bed running until Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type demo struct {
	app    testbed.WebApp
	bin    string
	dir    string
	socket string
	env    []string
	bed    *testbed.Bed
	inst   *testbed.Instance
	agent  *testbed.Agent
	// secretKey and publicKey sign releases and let the agent trust them.
	secretKey, publicKey string
}

func step(format string, args ...any) {
	fmt.Printf("\n\033[1m==> %s\033[0m\n", fmt.Sprintf(format, args...))
}

func run(ctx context.Context, bin string, keep bool) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	for _, b := range []string{"rollback-agent", "agentctl"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return fmt.Errorf("%s not built in %s (run `make build`): %w", b, bin, err)
		}
	}
	d := &demo{bin: bin}
	d.dir, err = os.MkdirTemp("", "rollback-agent-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(d.dir)

	step("Starting the test bed: moto (AWS), AWS's ec2-metadata-mock (IMDSv2 only), the AWS proxy")
	d.bed, err = testbed.Start(ctx)
	if err != nil {
		return err
	}
	defer d.bed.Close()
	defer func() {
		if d.inst != nil {
			d.inst.Close()
		}
	}()
	fmt.Printf("moto at %s, AWS proxy at %s\n", d.bed.Moto.URL, d.bed.AWS.URL)

	step("Creating an EC2 instance with a root and a data volume in moto (each volume a loop device here)")
	d.inst, err = d.bed.NewInstance(ctx, testbed.InstanceOptions{DataPlane: true})
	if err != nil {
		return err
	}
	fmt.Printf("instance %s in %s, root %s, data %s; IMDS mock at %s\n", d.inst.Doc.InstanceID,
		d.inst.Doc.AvailabilityZone, d.inst.RootVolumeID, d.inst.DataVolumeID, d.inst.IMDS.URL)
	d.env = d.inst.Env()
	port, err := testbed.FreePort()
	if err != nil {
		return err
	}
	d.app = testbed.WebApp{Dir: filepath.Join(d.dir, "srv", "web"), Run: filepath.Join(d.dir, "run-app"), Port: port}

	if err := d.setUpReleases(ctx); err != nil {
		return err
	}
	if err := d.startAgent(ctx); err != nil {
		return err
	}
	defer d.agent.Stop()
	defer d.app.Stop()

	step("agentctl status: who the agent is (from IMDSv2 and EC2)")
	if err := d.ctl(ctx, "status"); err != nil {
		return err
	}
	if err := d.deployStory(ctx); err != nil {
		return err
	}
	if keep {
		step("Running; try: %s --socket %s status   (Ctrl-C to stop)", filepath.Join(bin, "agentctl"), d.socket)
		<-ctx.Done()
	}
	step("Stopping the agent (SIGTERM: graceful)")
	return nil
}

func (d *demo) startAgent(ctx context.Context) error {
	step("Starting rollback-agent on that instance")
	state := filepath.Join(d.dir, "state")
	d.socket = filepath.Join(d.dir, "run", "agent.sock")
	cfg := fmt.Sprintf(`application: demo
state_dir: %s
socket: %s
socket_group: root
devices: {by_id_dir: %s}
sources: {channel: %s, poll_interval: 1s}
trust: {public_keys: [%s], require_signature: true}
health:
  checks:
    - {name: web, http: {url: "%s", body_contains: v, timeout: 1s}}
  interval: 500ms
  grace: 500ms
  successes_needed: 2
  failures_allowed: 3
  assess_timeout: 20s
  watch_window: 20s
`, state, d.socket, d.inst.ByIDDir, d.channelURL(), d.publicKey, d.app.URL())
	cfgPath := filepath.Join(d.dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	fmt.Printf("config %s:\n%s", cfgPath, indent(cfg))
	a, err := testbed.StartAgent(filepath.Join(d.bin, "rollback-agent"), cfgPath, d.socket, d.env)
	if err != nil {
		return err
	}
	d.agent = a
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := a.WaitReady(wctx); err != nil {
		return err
	}
	fmt.Printf("agent pid %d is ready\n", a.PID())
	return nil
}

// ctl runs agentctl with its output on the terminal; a non-zero exit is
// an error.
func (d *demo) ctl(ctx context.Context, args ...string) error {
	code, err := d.ctlCode(ctx, args...)
	if err == nil && code != 0 {
		err = fmt.Errorf("agentctl %s: exit %d", strings.Join(args, " "), code)
	}
	return err
}

// ctlCode runs agentctl and returns its exit status.
func (d *demo) ctlCode(ctx context.Context, args ...string) (int, error) {
	all := append([]string{"--socket", d.socket}, args...)
	fmt.Printf("$ agentctl %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, "agentctl"), all...)
	cmd.Env = d.env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		fmt.Printf("(exit status %d)\n", ee.ExitCode())
		return ee.ExitCode(), nil
	}
	return 0, err
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}
