package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

func newDeployCmd(g *globals) *cobra.Command {
	var wait, ignoreStop, allowUnsigned bool
	var revision string
	cmd := &cobra.Command{
		Use:   "deploy PATH|DIR|s3://BUCKET/KEY",
		Short: "Deploy a bundle file, a directory, or an S3 object",
		Long: "Deploy a revision: a CodeDeploy-style bundle (zip, tar, tar.gz with an appspec.yml), a directory\n" +
			"(bundled on the fly) or an s3:// object. Paths are as the agent sees them (made absolute here).\n" +
			"With --wait, follow the deployment and exit 0 when it succeeded, 1 when it failed or was rolled back.\n\n" +
			"With trust.require_signature, a file or an S3 object deploys only with a signed manifest beside it, as\n" +
			"agentctl push uploads one: NAME.manifest.json, or manifest.json naming it (\"bundle\": NAME), each with its\n" +
			".minisig (for s3://B/P/revisions/V/bundle.tar.gz that is s3://B/P/revisions/V/manifest.json). Its sha256\n" +
			"pins the bytes the agent then fetches. --allow-unsigned deploys anything else anyway (root only).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src := args[0]
			if !strings.HasPrefix(src, "s3://") {
				abs, err := filepath.Abs(src)
				if err != nil {
					return usageErr("%s: %v", src, err)
				}
				src = abs
			}
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			ref, err := g.client().Deploy(ctx, api.DeployRequest{Source: src, Revision: revision, IgnoreApplicationStopFailures: ignoreStop, AllowUnsigned: allowUnsigned})
			if err != nil {
				return err
			}
			return g.afterSubmit(cmd.Context(), ref, wait)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the deployment to its end; exit 1 unless it succeeded")
	cmd.Flags().StringVar(&revision, "revision", "", "label of the revision (default: from the file or directory name)")
	cmd.Flags().BoolVar(&ignoreStop, "ignore-application-stop-failures", false, "go on when the previous revision's ApplicationStop fails")
	cmd.Flags().BoolVar(&allowUnsigned, "allow-unsigned", false, "deploy it without a valid signature although trust.require_signature is true")
	return cmd
}

func newRollbackCmd(g *globals) *cobra.Command {
	var wait bool
	var to string
	cmd := &cobra.Command{
		Use:   "rollback [--to REVISION|DEPLOYMENT-ID]",
		Short: "Reinstall an earlier revision from this host's releases (no download)",
		Long: "Reinstall an earlier revision kept on this host. Without --to: the newest successful deployment\n" +
			"before the current one. With --wait, exit 0 when the rollback succeeded.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd.Context())
			defer cancel()
			ref, err := g.client().Rollback(ctx, api.RollbackRequest{To: to})
			if err != nil {
				return err
			}
			return g.afterSubmit(cmd.Context(), ref, wait)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the rollback to its end; exit 1 unless it succeeded")
	cmd.Flags().StringVar(&to, "to", "", "revision label or deployment id to go back to")
	return cmd
}

// afterSubmit prints the new deployment and, with wait, follows it. The
// wait has no --timeout: a deployment takes as long as its hooks do.
func (g *globals) afterSubmit(parent context.Context, ref *api.DeploymentRef, wait bool) error {
	if g.json() && !wait {
		return writeJSON(g.stdout, ref)
	}
	if !g.json() {
		fmt.Fprintf(g.stdout, "deployment %s %s\n", ref.ID, ref.Status)
	}
	if !wait {
		return nil
	}
	d, err := g.follow(parent, ref.ID)
	if err != nil {
		return err
	}
	if g.json() {
		if err := writeJSON(g.stdout, d); err != nil {
			return err
		}
	} else {
		printOutcome(g.stdout, d)
	}
	if d.Status != api.StatusSucceeded {
		return failed("deployment %s ended %s", d.ID, d.Status)
	}
	return nil
}

// follow streams the deployment's events until it ends and returns the
// final record. On a terminal the running step is shown live; otherwise
// one line per finished step.
func (g *globals) follow(ctx context.Context, id string) (*api.Deployment, error) {
	live := isTerminal(g.stdout) && !g.json()
	p := &progress{w: g.stdout, live: live, quiet: g.json(), printed: map[string]bool{}}
	stopSpinner := p.startSpinner()
	defer stopSpinner()
	var final *api.Deployment
	err := g.client().Events(ctx, id, func(ev api.Event) bool {
		switch ev.Type {
		case api.EventSnapshot:
			for i := range ev.Deployment.Steps {
				p.step(&ev.Deployment.Steps[i])
			}
			if ev.Status.Terminal() {
				final = ev.Deployment
				return false
			}
		case api.EventStep:
			p.step(ev.Step)
		case api.EventStatus:
			p.status(ev.Status)
			if ev.Status.Terminal() {
				return false
			}
		}
		return true
	})
	stopSpinner()
	if err != nil {
		return nil, err
	}
	if final != nil {
		return final, nil
	}
	// The final record, with every step and the error.
	c, cancel := g.ctx(context.WithoutCancel(ctx))
	defer cancel()
	return g.client().Deployment(c, id)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progress prints step events once each.
type progress struct {
	w       io.Writer
	live    bool
	quiet   bool
	mu      sync.Mutex
	printed map[string]bool
	running *api.Step
	spin    int
}

func stepKey(s *api.Step) string { return s.Name + "|" + string(s.Rung) + "|" + s.StartedAt.String() }

func (p *progress) step(s *api.Step) {
	if p.quiet || s == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.Status == api.StepRunning {
		c := *s
		p.running = &c
		return
	}
	k := stepKey(s)
	if p.printed[k] {
		return
	}
	p.printed[k] = true
	if p.running != nil && stepKey(p.running) == k {
		p.running = nil
	}
	p.clearLine()
	fmt.Fprintln(p.w, stepLine(s))
}

func (p *progress) status(status api.DeploymentStatus) {
	if p.quiet {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLine()
	fmt.Fprintf(p.w, "%s  status: %s\n", time.Now().Format(time.TimeOnly), status)
}

func (p *progress) clearLine() {
	if p.live {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

// startSpinner redraws the running step on a terminal.
func (p *progress) startSpinner() func() {
	if !p.live {
		return func() {}
	}
	done := make(chan struct{})
	var once sync.Once
	go func() {
		frames := []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}
		t := time.NewTicker(150 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				p.mu.Lock()
				if p.running != nil {
					p.spin++
					fmt.Fprintf(p.w, "\r\033[K%s %s%s %s", frames[p.spin%len(frames)], rungPrefix(p.running), p.running.Name,
						time.Since(p.running.StartedAt).Round(time.Second))
				}
				p.mu.Unlock()
			}
		}
	}()
	return func() {
		once.Do(func() {
			close(done)
			p.mu.Lock()
			p.clearLine()
			p.mu.Unlock()
		})
	}
}

func rungPrefix(s *api.Step) string {
	if s.Rung == "" {
		return ""
	}
	return "[rollback: " + string(s.Rung) + "] "
}

func stepLine(s *api.Step) string { return stepLineAt(s, time.Now()) }

// stepLineAt is one line of a step; a step still running shows how long
// it has run by now (its record has no end yet).
func stepLineAt(s *api.Step, now time.Time) string {
	mark := map[api.StepStatus]string{api.StepSucceeded: "ok  ", api.StepFailed: "FAIL", api.StepSkipped: "skip", api.StepRunning: "... "}[s.Status]
	took := s.EndedAt.Sub(s.StartedAt)
	if s.EndedAt.IsZero() {
		took = max(now.Sub(s.StartedAt), 0)
	}
	line := fmt.Sprintf("%s  %s %s%-18s %6s", s.StartedAt.Local().Format(time.TimeOnly), mark, rungPrefix(s), s.Name, took.Round(time.Millisecond))
	if s.Revision != "" && s.Revision != "-" {
		line += "  [" + s.Revision + "]"
	}
	if s.Detail != "" {
		line += "  " + s.Detail
	}
	if s.Error != "" {
		line += "\n      " + strings.ReplaceAll(s.Error, "\n", "\n      ")
	}
	return line
}

func printOutcome(w io.Writer, d *api.Deployment) {
	fmt.Fprintf(w, "deployment %s (%s %s): %s\n", d.ID, d.Kind, d.Revision, strings.ToUpper(string(d.Status)))
	if d.RolledBackTo != "" {
		fmt.Fprintf(w, "rolled back to deployment %s\n", d.RolledBackTo)
	}
	for _, r := range d.Rungs {
		fmt.Fprintf(w, "rollback rung %s: %s %s\n", r.Name, r.Status, firstLine(r.Detail+" "+r.Error))
	}
	if d.Error != "" {
		fmt.Fprintf(w, "error: %s\n", d.Error)
	}
	for _, warn := range d.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
