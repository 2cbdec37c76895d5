package hostile

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/yamlx"
)

// runAppspec parses the case's appspec in-process, with the real user
// and group database: Load on the case directory when it plays an
// unpacked revision (sources and scripts checked on disk), Parse
// otherwise. Every expected problem must come back at its line, as one
// *yamlx.Error; time and allocations are bounded for the bombs.
func runAppspec(t *testing.T, c *hostileCase) result {
	r := result{name: c.name, expected: c.expected(), ok: true}
	path := c.inputPath(t, t.TempDir())
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	allocBefore := ms.TotalAlloc
	start := time.Now()
	var spec *appspec.AppSpec
	var err error
	if c.Revision {
		spec, err = appspec.Load(c.dir, appspec.Options{})
	} else {
		data, rerr := os.ReadFile(path)
		if rerr != nil {
			t.Fatal(rerr)
		}
		spec, err = appspec.Parse("appspec.yml", data, appspec.Options{})
	}
	took := time.Since(start)
	runtime.ReadMemStats(&ms)
	allocated := int64(ms.TotalAlloc - allocBefore)

	switch {
	case c.Expect.Accepted && err != nil:
		r.ok, r.got = false, "refused: "+firstLine(err.Error())
		t.Errorf("%s: want accepted, got %v", c.name, err)
	case c.Expect.Accepted:
		r.got = fmt.Sprintf("accepted: %d files, %d hooks", len(spec.Files), len(spec.Hooks))
	case err == nil:
		r.ok, r.got = false, "accepted"
		t.Errorf("%s: the hostile appspec was accepted", c.name)
	default:
		r.got = fmt.Sprintf("%d problem(s): %s", problemCount(err), secondLine(err.Error()))
		var ye *yamlx.Error
		if !errors.As(err, &ye) {
			r.ok = false
			t.Errorf("%s: error is %T, want *yamlx.Error with positions: %v", c.name, err, err)
		}
		for _, m := range c.Expect.checkText(err.Error(), "appspec.yml") {
			r.ok = false
			t.Errorf("%s: error %s:\n%v", c.name, m, err)
		}
	}
	checkBounds(t, c, &r, took, func() (int64, error) { return allocated, nil })
	return r
}

func problemCount(err error) int {
	var ye *yamlx.Error
	if errors.As(err, &ye) {
		return len(ye.Problems)
	}
	return 0
}

// secondLine is the first problem of a yamlx error ("file: N problem(s)"
// comes first).
func secondLine(s string) string {
	if lines := strings.Split(s, "\n"); len(lines) > 1 {
		return strings.TrimSpace(lines[1])
	}
	return firstLine(s)
}
