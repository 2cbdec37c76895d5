// Package daemon wires the agent together: config, logger, journal,
// identity, the socket API, sd_notify and the watchdog, and signals. The
// start and stop order is fixed here, containerd style: nothing answers
// before the journal is locked, nothing is READY before the identity is
// known, and on stop the API closes before the journal.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	sdd "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/awsconf"
	"github.com/rollback-agent/rollback-agent/internal/config"
	"github.com/rollback-agent/rollback-agent/internal/health"
	"github.com/rollback-agent/rollback-agent/internal/identity"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/securepath"
	"github.com/rollback-agent/rollback-agent/internal/server"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
	"github.com/rollback-agent/rollback-agent/internal/version"
)

// ExitConfig is EX_CONFIG from sysexits.h; the unit lists it in
// RestartPreventExitStatus so a bad config does not restart-loop.
const ExitConfig = 78

// Bounds of start and stop.
const (
	identityWait    = 10 * time.Second
	shutdownTimeout = 10 * time.Second
	journalLockWait = time.Second
)

// ExitError carries the process exit status.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Run is the whole daemon: cmd/agent's main calls it.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rollback-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "path of agent.yaml")
	showVersion := fs.Bool("version", false, "print the version and exit")
	checkOnly := fs.Bool("check-config", false, "validate the config, print every problem, and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &ExitError{Code: 2, Err: err}
	}
	if *showVersion {
		fmt.Fprintf(stdout, "rollback-agent %s\n", version.Get())
		return nil
	}
	cfg, warnings, err := config.Load(*cfgPath)
	for _, w := range warnings {
		fmt.Fprintln(stderr, w)
	}
	if err != nil {
		return &ExitError{Code: ExitConfig, Err: err}
	}
	keys, err := release.NewKeyring(cfg.Trust.PublicKeys, cfg.Trust.RequireSignature)
	if err != nil {
		return &ExitError{Code: ExitConfig, Err: fmt.Errorf("%s: %w", *cfgPath, err)}
	}
	if *checkOnly {
		if err := checkPaths(*cfgPath, cfg); err != nil {
			return &ExitError{Code: ExitConfig, Err: err}
		}
		fmt.Fprintf(stdout, "%s: OK\n", *cfgPath)
		return nil
	}
	log, level := newLogger(stderr, cfg.LogLevel)
	defer log.Sync() //nolint:errcheck // stderr sync errors are not actionable
	d := &Daemon{cfgPath: *cfgPath, log: log, level: level, notify: notifier{log: log}, loop: newLoop(), started: time.Now(), sourceErrs: map[string]string{}, sources: map[string]api.SourceState{}, keys: keys}
	d.healthRuns = shared[*api.HealthReport]{fresh: healthFresh, bound: sharedBound}
	d.catalogue = shared[*api.CheckpointList]{fresh: catalogueFresh, bound: sharedBound}
	d.doctorRuns = shared[api.DoctorReport]{fresh: doctorFresh, bound: sharedBound}
	d.cfg.Store(cfg)
	d.cfgLoadedAt = time.Now()
	return d.run(ctx)
}

// Daemon is the running agent.
type Daemon struct {
	cfgPath string
	cfg     atomic.Pointer[config.Config]
	log     *zap.Logger
	level   zap.AtomicLevel
	notify  notifier
	loop    *loop
	journal *journal.Journal
	srv     *server.Server
	svc     *services
	deps    health.Deps
	started time.Time
	// keys are trust.*: one Keyring shared by the fetcher, the inbox and
	// the channel, whose contents a reload replaces.
	keys *release.Keyring

	mu          sync.Mutex
	state       api.AgentState
	phase       string
	ident       api.Identity
	bootID      string
	newBoot     bool
	lastHealth  *api.HealthSummary
	cfgLoadedAt time.Time
	reloadErr   string
	sourceErrs  map[string]string
	// sources is the last state each source reported (status "sources").
	sources map[string]api.SourceState

	// Reads anyone in the socket group may repeat, shared (shared.go).
	healthRuns shared[*api.HealthReport]
	catalogue  shared[*api.CheckpointList]
	doctorRuns shared[api.DoctorReport]
}

// How long a shared read's answer is given again, and how long one run
// may take. A health round is fresh for a second (it is what is true
// now); the catalogue and the doctor cost AWS calls and change rarely,
// and every change the agent makes to checkpoints drops the cached list.
const (
	healthFresh    = time.Second
	catalogueFresh = 10 * time.Second
	doctorFresh    = 10 * time.Second
	sharedBound    = 3 * time.Minute
)

func (d *Daemon) run(parent context.Context) (err error) {
	cfg := d.cfg.Load()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	// A stop signal during start-up (say, while IMDS is retried) cancels it.
	startDone := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			d.log.Info("signal during start-up; stopping", zap.Stringer("signal", s))
			cancel()
		case <-startDone:
		}
	}()

	d.setPhase(api.StateStarting, "opening the journal")
	// The state dir holds what the agent executes and its record of what
	// it did: no user but root may be able to change or redirect it.
	if err := checkStateDir(cfg.StateDir); err != nil {
		close(startDone)
		return err
	}
	j, err := journal.Open(cfg.StateDir, journalLockWait)
	if errors.Is(err, journal.ErrCorrupt) {
		// Restarting cannot mend it, and a crash loop would leave nobody
		// to say what is wrong: the agent runs on a scratch journal,
		// answers status and doctor, and takes no work (startDamaged).
		d.log.Error("the journal is damaged: the agent takes no work until an operator recovers it (agentctl status says how)", zap.Error(err))
		j, err = journal.OpenDamaged(cfg.StateDir, err)
	}
	if err != nil {
		close(startDone)
		return err
	}
	d.journal = j
	defer func() {
		if cerr := j.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()

	loopCtx, stopLoop := context.WithCancel(context.Background())
	go d.loop.run(loopCtx)
	defer stopLoop()

	if err := d.startServer(cfg); err != nil {
		close(startDone)
		return unsafeIsConfig(err)
	}
	defer d.stopServer()

	awsCfg, err := d.discover(ctx, cfg)
	if err != nil {
		close(startDone)
		if ctx.Err() != nil && parent.Err() == nil {
			d.beginStop("signal during start-up")
			return nil
		}
		d.notify.stopping("Stopping: " + err.Error())
		return err
	}
	close(startDone)
	if ctx.Err() != nil {
		return nil
	}
	svcCtx, stopServices := context.WithCancel(context.Background())
	defer d.stopServices(stopServices)
	if j.Damaged() {
		d.startDamaged(svcCtx, awsCfg)
	} else if err := d.startServices(svcCtx, cfg, awsCfg); err != nil {
		d.notify.stopping("Stopping: " + err.Error())
		return err
	}
	d.setPhase(api.StateIdle, "")
	d.srv.SetReady(true, "")
	summary := d.summary()
	d.notify.ready(summary)
	d.log.Info("ready", zap.String("status", summary), zap.String("instance", d.ident.InstanceID),
		zap.String("version", version.Get().Version))

	if interval, werr := sdd.SdWatchdogEnabled(false); werr == nil && interval > 0 {
		w := &watchdog{interval: interval, probe: d.heartbeat, notify: d.notify, log: d.log}
		go w.run(ctx)
	}
	for {
		select {
		case <-parent.Done():
			d.beginStop("context ended")
			return nil
		case s := <-sigs:
			if s == syscall.SIGHUP {
				if err := d.loop.Do(ctx, d.reload); err != nil {
					d.log.Error("config reload not run", zap.Error(err))
				}
				continue
			}
			d.beginStop(s.String())
			return nil
		}
	}
}

func (d *Daemon) beginStop(why string) {
	d.setPhase(api.StateStopping, "stopping")
	d.log.Info("stopping", zap.String("why", why))
	d.notify.stopping("Stopping (" + why + ").")
}

func (d *Daemon) startServer(cfg *config.Config) error {
	grp, err := server.LookupGroup(cfg.SocketGroup)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	d.srv = server.New(server.Options{SocketPath: cfg.Socket, Group: grp, Version: version.Get().Version, Log: d.log}, d)
	if err := d.srv.Listen(); err != nil {
		return err
	}
	go func() {
		if err := d.srv.Serve(); err != nil {
			d.log.Error("socket API stopped", zap.Error(err))
		}
	}()
	return nil
}

func (d *Daemon) stopServer() {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := d.srv.Shutdown(ctx); err != nil {
		d.log.Warn("socket API shutdown", zap.Error(err))
	}
}

// stopServices ends the engine and the sources. A hook running now is
// stopped (SIGTERM, then SIGKILL after the grace); its deployment stays in
// flight in the journal and is recovered at the next start.
func (d *Daemon) stopServices(cancel context.CancelFunc) {
	cancel()
	if d.svc == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		d.svc.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(shutdownTimeout):
		d.log.Warn("deployment engine did not stop in time; the journal will recover it at next start")
	}
}

// discover learns the instance identity and its volumes.
func (d *Daemon) discover(ctx context.Context, cfg *config.Config) (aws.Config, error) {
	if cfg.InstanceID == "" {
		d.setPhase(api.StateStarting, "reading the instance identity from IMDSv2 at "+identity.IMDSEndpoint())
	} else {
		d.setPhase(api.StateStarting, "using instance "+cfg.InstanceID+" from the config")
	}
	d.notify.status(d.summary())
	doc, err := identity.Discover(ctx, cfg.InstanceID, cfg.Region, identityWait)
	if err != nil {
		return aws.Config{}, err
	}
	awsCfg, err := awsconf.Load(ctx, doc.Region)
	if err != nil {
		return aws.Config{}, err
	}
	d.setPhase(api.StateStarting, "describing instance "+doc.InstanceID+" and its volumes")
	d.notify.status(d.summary())
	id, err := identity.Describe(ctx, ec2.NewFromConfig(awsCfg), doc, cfg.Devices.ByIDDir, identityWait)
	if err != nil {
		return aws.Config{}, err
	}
	boot := readBootID(cfg.Boot.IDFile)
	prev, jerr := d.journal.GetMeta("boot_id")
	newBoot := jerr == nil && prev != boot
	if newBoot {
		if err := d.journal.SetMeta("boot_id", boot); err != nil {
			return aws.Config{}, err
		}
	}
	d.mu.Lock()
	d.ident = id
	d.bootID = boot
	// The first start ever (no boot id yet) is not a reboot to assess.
	d.newBoot = newBoot && prev != ""
	d.mu.Unlock()
	return awsCfg, nil
}

// checkPaths is --check-config's look at where the agent would keep its
// state and socket: what exists of those paths must be root's alone
// (the rest the agent creates at start).
func checkPaths(cfgPath string, cfg *config.Config) error {
	var errs []error
	check := func(key, dir string) {
		if dir == "" {
			return
		}
		if err := securepath.CheckExisting(dir); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", cfgPath, key, err))
		}
	}
	check("state_dir", cfg.StateDir)
	check("socket", filepath.Dir(cfg.Socket))
	if cfg.Sources.Inbox != "" {
		check("sources.inbox", filepath.Dir(cfg.Sources.Inbox))
	}
	return errors.Join(errs...)
}

// checkStateDir creates the state dir when missing and refuses one that
// a user other than root could change (securepath).
func checkStateDir(dir string) error {
	f, err := securepath.Open(dir, 0o755)
	if err != nil {
		return unsafeIsConfig(fmt.Errorf("state_dir: %w", err))
	}
	return f.Close()
}

// unsafeIsConfig makes an unsafe path exit 78, as a bad config does: the
// agent refuses to start and systemd does not restart it into the same
// refusal; the message says which directory to fix.
func unsafeIsConfig(err error) error {
	var ue *securepath.UnsafeError
	if errors.As(err, &ue) {
		return &ExitError{Code: ExitConfig, Err: fmt.Errorf("%w (refusing to start)", err)}
	}
	return err
}

// readBootID reads boot.id_file, at most a line of it: the setting may
// name any file, and a boot id is 36 bytes.
func readBootID(path string) string {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 256))
	return strings.TrimSpace(string(b))
}

func (d *Daemon) setPhase(state api.AgentState, phase string) {
	d.mu.Lock()
	d.state, d.phase = state, phase
	d.mu.Unlock()
	if d.srv != nil && state == api.StateStarting {
		d.srv.SetReady(false, phase)
	}
}
