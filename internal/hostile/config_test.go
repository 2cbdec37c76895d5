package hostile

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"
)

// exitConfig is EX_CONFIG, what the unit's RestartPreventExitStatus names.
const exitConfig = 78

// runConfig runs the real rollback-agent --check-config on the case's
// file: a refused file must exit 78 and print each expected problem as
// FILE:LINE:COL, an accepted one exit 0; bombs are bounded in time and
// in the peak RSS of the process.
func runConfig(t *testing.T, agentBin string, c *hostileCase) result {
	r := result{name: c.name, expected: c.expected(), ok: true}
	path := c.inputPath(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, agentBin, "--check-config", "--config", path)
	cmd.Env = append(os.Environ(), noRaceExitSleep)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: start %s: %v", c.name, agentBin, err)
	}
	peak := watchPeak(cmd.Process.Pid)
	err := cmd.Wait()
	took := time.Since(start)
	peakRSS := peak()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: run %s: %v", c.name, agentBin, err)
	}
	text := out.String()
	r.got = fmt.Sprintf("exit %d: %s", code, secondLine(text))
	want := exitConfig
	if c.Expect.Accepted {
		want = 0
	}
	if code != want {
		r.ok = false
		t.Errorf("%s: exit %d, want %d\n%s", c.name, code, want, tail(text, 3000))
	}
	for _, m := range c.Expect.checkText(text, path) {
		r.ok = false
		t.Errorf("%s: output %s:\n%s", c.name, m, tail(text, 3000))
	}
	checkBounds(t, c, &r, took, func() (int64, error) { return peakRSS, nil })
	return r
}

// watchPeak samples the VmHWM of a running process until the returned
// function is called, which returns the highest seen. The rusage of the
// child cannot be used: os/exec starts it with vfork, so its ru_maxrss
// includes this test process's own peak.
func watchPeak(pid int) func() int64 {
	var peak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if n, err := vmHWM(pid); err == nil {
				peak.Store(max(peak.Load(), n))
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return func() int64 {
		close(stop)
		<-done
		return peak.Load()
	}
}
