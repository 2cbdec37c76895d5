package hostile

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// runBundle deploys the case's bundle through the real agent with
// agentctl deploy --wait, and checks: exit 1, the failing step and its
// error, nothing changed outside staging (the sentinel root, the files
// the corpus aims at, the host's own directory), staging left clean, and
// the daemon still answering.
func runBundle(t *testing.T, h *host, c *hostileCase) result {
	r := result{name: c.name, expected: c.expected()}
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
		r.ok = false
	}
	r.ok = true
	resetSentinel(t, c)
	input := c.inputPath(t, t.TempDir())
	roots := append([]string{sentinelRoot, h.config}, c.Watch...)
	before, err := snapshot(roots...)
	if err != nil {
		t.Fatal(err)
	}
	hostBefore := listDir(h.dir)
	if err := h.resetPeak(); err != nil {
		t.Fatal(err)
	}
	baseRSS, _ := h.peakRSS()
	start := time.Now()
	res := h.ctl("deploy", input, "--wait", "-o", "json")
	took := time.Since(start)

	var d api.Deployment
	text := res.stderr
	if err := json.Unmarshal([]byte(res.stdout), &d); err == nil {
		text = d.Error
		failed := failedSteps(&d)
		for _, s := range failed {
			if s.Error != d.Error {
				text += "\n" + s.Error
			}
		}
		stepNames := names(failed)
		r.got = fmt.Sprintf("exit %d, %s, %s failed: %s", res.code, d.Status, stepNames, firstLine(d.Error))
		if c.Expect.Step != "" && !strings.Contains(" "+stepNames+" ", " "+c.Expect.Step+" ") {
			fail("%s: failed step(s) %q, want %s", c.name, stepNames, c.Expect.Step)
		}
		switch {
		case c.Expect.Accepted && d.Status != api.StatusSucceeded:
			fail("%s: want the bundle deployed, got %s: %s", c.name, d.Status, d.Error)
		case c.Expect.Accepted:
			r.got = fmt.Sprintf("exit %d, %s, %d warning(s)", res.code, d.Status, len(d.Warnings))
			text = strings.Join(d.Warnings, "\n")
			for _, w := range c.Expect.Warnings {
				if !strings.Contains(text, w) {
					fail("%s: warnings lack %q:\n%s", c.name, w, text)
				}
			}
		case d.Status == api.StatusSucceeded:
			fail("%s: the hostile bundle deployed", c.name)
		}
		// Releases.Unpack promises that a failed unpack leaves nothing of
		// the release on disk.
		if c.Expect.Step == "Unpack" && d.ID != "" {
			if _, err := os.Lstat(filepath.Join(h.stateDir, "releases", d.ID)); err == nil {
				fail("%s: the failed unpack left releases/%s behind", c.name, d.ID)
			}
		}
	} else {
		r.got = fmt.Sprintf("exit %d: %s", res.code, firstLine(res.stderr))
		if c.Expect.Step != "" {
			fail("%s: no deployment record (%v): %s%s", c.name, err, res.stdout, res.stderr)
		}
	}
	wantCode := 1
	if c.Expect.Accepted {
		wantCode = 0
	}
	if res.code != wantCode {
		fail("%s: agentctl deploy --wait exit %d, want %d\n%s%s", c.name, res.code, wantCode, res.stdout, res.stderr)
	}
	for _, m := range c.Expect.checkText(text, "appspec.yml") {
		fail("%s: error %s:\n%s", c.name, m, text)
	}

	after, err := snapshot(roots...)
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(outsideDest(before, c), outsideDest(after, c)); len(d) > 0 {
		fail("%s: WROTE OUTSIDE STAGING:\n  %s", c.name, strings.Join(d, "\n  "))
		r.got += " | wrote outside staging: " + d[0]
	}
	for p, want := range c.Expect.Installed {
		if got := installed(filepath.Join(sentinelRoot, p)); got != want {
			fail("%s: %s is %q, want %q", c.name, p, got, want)
		}
	}
	if got := listDir(h.dir); got != hostBefore {
		fail("%s: the host directory changed: %s -> %s", c.name, hostBefore, got)
	}
	if left := unpackLeftovers(h.stateDir); len(left) > 0 {
		fail("%s: a failed unpack left %v in staging", c.name, left)
	}
	checkBounds(t, c, &r, took, func() (int64, error) {
		peak, err := h.peakRSS()
		return peak - baseRSS, err
	})
	if err := h.alive(); err != nil {
		fail("%s: daemon down after the case: %v", c.name, err)
		r.got += " | DAEMON DOWN"
	}
	return r
}

// outsideDest drops, for an accepted bundle, the paths under its own
// destination (dest/NAME), where it was allowed to install.
func outsideDest(snap map[string]string, c *hostileCase) map[string]string {
	if !c.Expect.Accepted {
		return snap
	}
	dest := filepath.Join(sentinelRoot, "dest", filepath.Base(c.dir))
	out := map[string]string{}
	for p, v := range snap {
		if p != dest && !strings.HasPrefix(p, dest+"/") {
			out[p] = v
		}
	}
	return out
}

// installed describes a path for expect.installed.
func installed(p string) string {
	fi, err := os.Lstat(p)
	switch {
	case err != nil:
		return "absent"
	case fi.Mode()&os.ModeSymlink != 0:
		t, _ := os.Readlink(p)
		return "-> " + t
	case fi.IsDir():
		return "dir"
	}
	b, _ := os.ReadFile(p)
	return string(b)
}

func failedSteps(d *api.Deployment) []api.Step {
	var out []api.Step
	for _, s := range d.Steps {
		if s.Status == api.StepFailed {
			out = append(out, s)
		}
	}
	return out
}

func names(steps []api.Step) string {
	var n []string
	for _, s := range steps {
		n = append(n, s.Name)
	}
	if len(n) == 0 {
		return "no step"
	}
	return strings.Join(n, " ")
}

// listDir names the entries of the host directory besides staging (the
// state directory and the socket's): nothing may appear next to them.
func listDir(dir string) string {
	ents, _ := os.ReadDir(dir)
	var n []string
	for _, e := range ents {
		if e.Name() != "state" && e.Name() != "run" {
			n = append(n, e.Name())
		}
	}
	return strings.Join(n, ",")
}

// unpackLeftovers finds the unpacker's temporary directories in the
// releases (UnpackFile promises to remove them when it fails) and
// downloads the engine did not remove.
func unpackLeftovers(stateDir string) []string {
	var out []string
	for _, pattern := range []string{"releases/.*.unpacking-*", "releases/*/.*.unpacking-*", "downloads/*"} {
		m, _ := filepath.Glob(filepath.Join(stateDir, pattern))
		out = append(out, m...)
	}
	return out
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
