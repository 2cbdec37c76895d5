// Command bench measures the agent against baselines in the same run on the
// same machine and prints a markdown table (also written to
// bench/results/latest.md). `make bench` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding rollback-agent and agentctl")
	out := flag.String("out", "bench/results/latest.md", "where the table is written")
	flag.Parse()
	if err := run(context.Background(), *bin, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type row struct {
	id, what, baseline, measured, bar, verdict string
}

func run(ctx context.Context, bin, out string) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	bed, err := testbed.Start(ctx)
	if err != nil {
		return err
	}
	defer bed.Close()
	inst, err := bed.NewInstance(ctx, testbed.InstanceOptions{})
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "rollback-agent-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "agent.sock")
	cfg := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("application: bench\nstate_dir: %s\nsocket: %s\nsocket_group: root\n", filepath.Join(dir, "state"), socket)), 0o644)
	agent, err := testbed.StartAgent(filepath.Join(bin, "rollback-agent"), cfg, socket, inst.Env())
	if err != nil {
		return err
	}
	defer agent.Stop()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := agent.WaitReady(wctx); err != nil {
		return err
	}

	rows := []row{benchStatus(ctx, filepath.Join(bin, "agentctl"), socket, inst.Env())}
	return report(rows, out)
}

// benchStatus is B5: latency of `agentctl status` over 1000 calls, as a
// user sees it (process start included).
func benchStatus(ctx context.Context, ctl, socket string, env []string) row {
	const n = 1000
	lat := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		cmd := exec.CommandContext(ctx, ctl, "--socket", socket, "status", "-o", "json")
		cmd.Env = env
		if err := cmd.Run(); err != nil {
			return row{id: "B5", what: "`agentctl status` latency, 1000 calls", verdict: "error: " + err.Error()}
		}
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) time.Duration { return lat[int(q*float64(n-1))] }
	verdict := "meets"
	if p(0.99) > 10*time.Millisecond {
		verdict = fmt.Sprintf("misses by %s", (p(0.99) - 10*time.Millisecond).Round(100*time.Microsecond))
	}
	return row{
		id: "B5", what: "`agentctl status` latency, 1000 calls (process start included)", baseline: "—",
		measured: fmt.Sprintf("p50 %s, p99 %s, max %s", p(0.5).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond), lat[n-1].Round(10*time.Microsecond)),
		bar:      "p99 ≤ 10 ms", verdict: verdict,
	}
}

func report(rows []row, out string) error {
	var b strings.Builder
	mem := "unknown"
	if m, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.TrimSpace(strings.TrimPrefix(strings.SplitN(string(m), "\n", 2)[0], "MemTotal:"))
	}
	fmt.Fprintf(&b, "# rollback-agent benchmarks\n\n%s, nproc %d, memory %s, %s\n\n", time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), mem, runtime.Version())
	b.WriteString("| id | what | baseline | measured | bar | verdict |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.id, r.what, r.baseline, r.measured, r.bar, r.verdict)
	}
	fmt.Print(b.String())
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(out, []byte(b.String()), 0o644)
}
