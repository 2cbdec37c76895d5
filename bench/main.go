// Command bench measures the agent against baselines measured in the same
// run on the same machine, each scenario repeated, and prints a markdown
// table (also written to bench/results/latest.md). `make bench` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/bundle"
	"github.com/rollback-agent/rollback-agent/internal/testbed"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding rollback-agent and agentctl")
	out := flag.String("out", "bench/results/latest.md", "where the table is written")
	only := flag.String("only", "", "comma-separated scenario ids to run (default: all)")
	runs := flag.Int("runs", 5, "repetitions of each measurement")
	trace := flag.String("trace", "", "a command (split on spaces) run with the agent's pid appended while B2's rollbacks run, then sent SIGINT: e.g. 'strace -c -f -o /tmp/b2.strace -p' or 'perf record -g -o /tmp/b2.perf -p'")
	flag.Parse()
	if err := run(context.Background(), *bin, *out, *only, *trace, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// bench holds what every scenario shares.
type bench struct {
	bed  *testbed.Bed
	bin  string
	dir  string
	runs int
	// trace is run against the agent around the measured operation.
	trace string
}

// row is one line of the result table.
type row struct {
	id, what, baseline, measured, bar, verdict string
}

type scenario struct {
	id string
	fn func(context.Context) (row, error)
}

func run(ctx context.Context, bin, out, only, trace string, runs int) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "rollback-agent-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	load0 := loadavg()
	bed, err := testbed.Start(ctx)
	if err != nil {
		return err
	}
	defer bed.Close()
	b := &bench{bed: bed, bin: bin, dir: dir, runs: runs, trace: trace}
	all := []scenario{{"B1", b.b1}, {"B2", b.b2}, {"B3", b.b3}, {"B4", b.b4}, {"B5", b.b5}, {"B6", b.b6}, {"B7", b.b7}, {"B8", b.b8}}
	var rows []row
	start := time.Now()
	for _, s := range all {
		if only != "" && !strings.Contains(","+only+",", ","+s.id+",") {
			continue
		}
		t0 := time.Now()
		fmt.Fprintf(os.Stderr, "bench: %s...\n", s.id)
		r, err := s.fn(ctx)
		if err != nil {
			r = row{id: s.id, verdict: "error: " + strings.ReplaceAll(err.Error(), "\n", " ")}
		}
		fmt.Fprintf(os.Stderr, "bench: %s done in %s: %s\n", s.id, time.Since(t0).Round(time.Second), r.verdict)
		rows = append(rows, r)
	}
	return report(rows, out, time.Since(start), load0)
}

// loadavg is the machine's 1, 5 and 15 minute load: a shared machine's
// other work shows in every wall-clock figure.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// verdict says whether a bar is met, and by how much it is missed.
func verdict(ok bool, missed string) string {
	if ok {
		return "meets"
	}
	return "misses: " + missed
}

func report(rows []row, out string, took time.Duration, load0 string) error {
	var b strings.Builder
	mem := "unknown"
	if m, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.TrimSpace(strings.TrimPrefix(strings.SplitN(string(m), "\n", 2)[0], "MemTotal:"))
	}
	fmt.Fprintf(&b, "# rollback-agent benchmarks\n\n%s UTC, nproc %d, memory %s, %s, %s/%s; whole run %s; load average (1, 5, 15 min) %s at the start, %s at the end.\n"+
		"Each figure is the median of the runs with (min–max, n); baselines ran in the same run on the same machine.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04"), runtime.NumCPU(), mem, runtime.Version(), runtime.GOOS, runtime.GOARCH, took.Round(time.Second), load0, loadavg())
	b.WriteString("| id | what | baseline (same run) | measured | bar | verdict |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.id, r.what, r.baseline, r.measured, r.bar, r.verdict)
	}
	fmt.Print(b.String())
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(out, []byte(b.String()), 0o644)
}

// genTree writes n files of size bytes (incompressible, deterministic
// from seed) under dir/app, plus an appspec installing app/ to dest.
// Files whose index is in changed get other content (seed+1).
func genTree(dir, dest string, n, size int, seed uint64, changed map[int]bool) error {
	app := filepath.Join(dir, "app")
	buf := make([]byte, size)
	mtime := time.Unix(1764000000, 0)
	for i := range n {
		sub := filepath.Join(app, fmt.Sprintf("d%03d", i%100))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		s := seed
		if changed[i] {
			s = seed + 1
		}
		rng := rand.NewChaCha8(seedBytes(s, uint64(i)))
		rng.Read(buf)
		p := filepath.Join(sub, fmt.Sprintf("f%05d.bin", i))
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			return err
		}
		// The same content gets the same mtime in both revisions, as a
		// reproducible build would give it.
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			return err
		}
	}
	spec := fmt.Sprintf("version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: %s\nhooks:\n  ApplicationStart:\n    - location: noop.sh\n", dest)
	if err := os.WriteFile(filepath.Join(dir, "noop.sh"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "appspec.yml"), []byte(spec), 0o644)
}

func seedBytes(a, b uint64) [32]byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(a >> (8 * i))
		s[8+i] = byte(b >> (8 * i))
	}
	return s
}

// tgz bundles dir into path.
func tgz(ctx context.Context, dir, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := bundle.WriteTarGz(ctx, dir, f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
