package daemon

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// Metrics implements server.Backend: the Prometheus text exposition
// format, written by hand (a few gauges do not need a client library).
func (d *Daemon) Metrics(ctx context.Context) string {
	st := d.Status(ctx)
	var b strings.Builder
	gauge := func(name, help string, value float64, labels ...string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
		fmt.Fprintf(&b, "%s%s %g\n", name, labelSet(labels), value)
	}
	gauge("rollback_agent_info", "The agent's version and identity.", 1,
		"version", st.Agent.Version, "commit", st.Agent.Commit, "instance", st.Identity.InstanceID, "application", st.Application)
	gauge("rollback_agent_uptime_seconds", "Seconds since the agent started.", time.Since(st.Agent.StartedAt).Seconds())
	gauge("rollback_agent_operation_in_progress", "1 while a deployment, rollback, restore or guard runs.", boolf(st.Operation != nil))
	gauge("rollback_agent_needs_operator", "1 when the agent stopped and needs a person.", boolf(st.State == api.StateNeedsOperator))
	gauge("rollback_agent_watch_window_open", "1 while a deployment's health watch window is open.", boolf(st.Watch != nil))
	if h := st.Health; h != nil {
		gauge("rollback_agent_healthy", "The last health assessment (1 healthy).", boolf(h.Healthy))
		fmt.Fprintf(&b, "# HELP rollback_agent_check_healthy Each check's last result.\n# TYPE rollback_agent_check_healthy gauge\n")
		for _, c := range h.Checks {
			fmt.Fprintf(&b, "rollback_agent_check_healthy%s %g\n", labelSet([]string{"check", c.Name, "kind", c.Kind}), boolf(c.Healthy))
		}
	}
	fmt.Fprintf(&b, "# HELP rollback_agent_checkpoints Checkpoints in the cache, by state.\n# TYPE rollback_agent_checkpoints gauge\n")
	fmt.Fprintf(&b, "rollback_agent_checkpoints%s %d\n", labelSet([]string{"state", "pending"}), st.Checkpoints.Pending)
	fmt.Fprintf(&b, "rollback_agent_checkpoints%s %d\n", labelSet([]string{"state", "all"}), st.Checkpoints.Total)
	if deps, err := d.journal.Deployments(0); err == nil {
		byStatus := map[string]int{}
		for _, dep := range deps {
			byStatus[string(dep.Status)]++
		}
		keys := make([]string, 0, len(byStatus))
		for k := range byStatus {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(&b, "# HELP rollback_agent_deployments Deployment records kept, by status.\n# TYPE rollback_agent_deployments gauge\n")
		for _, k := range keys {
			fmt.Fprintf(&b, "rollback_agent_deployments%s %d\n", labelSet([]string{"status", k}), byStatus[k])
		}
	}
	if d.svc != nil && d.svc.obs != nil {
		d.svc.obs.counters.Write(&b)
	}
	gauge("go_goroutines", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		gauge("process_open_fds", "Number of open file descriptors.", float64(len(fds)))
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gauge("go_memstats_heap_inuse_bytes", "Heap bytes in use.", float64(ms.HeapInuse))
	return b.String()
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// labelSet renders label pairs, escaping values as the format requires.
func labelSet(kv []string) string {
	if len(kv) == 0 {
		return ""
	}
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		v := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(kv[i+1])
		parts = append(parts, fmt.Sprintf(`%s="%s"`, kv[i], v))
	}
	return "{" + strings.Join(parts, ",") + "}"
}
