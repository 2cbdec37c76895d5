package lint

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
)

// A hook that starts a process in the background without redirecting its
// output leaves it holding the script's stdout and stderr: CodeDeploy's
// agent then waits for them until the script's timeout and fails it
// ("failed to close STDOUT", hook_executor.rb), the classic `./server &`.
// This agent goes on (and warns at run time); lint finds the usual cases
// in the scripts' text: a command line ending in a single "&" without a
// redirection of stdout, or of stderr. It is a heuristic over shell text,
// so it speaks of likelihood.

var (
	// background matches a line whose command ends in "&" (not "&&").
	background = regexp.MustCompile(`(^|[^&])&\s*$`)
	// stdoutRedir: >, 1>, >>, &> or >& followed by a target, not "2>".
	stdoutRedir = regexp.MustCompile(`(^|[^0-9&])(1?>>?|&>>?|>&)\s*[^&\s]`)
	// stderrFile: 2> or 2>> to a file (not 2>&1); both: &> or &>>.
	stderrFile = regexp.MustCompile(`2>>?\s*[^&\s]`)
	both       = regexp.MustCompile(`&>>?`)
)

// maxScriptScan bounds how much of one script is read.
const maxScriptScan = 1 << 20

// backgroundOutputs scans every hook script of spec.
func backgroundOutputs(spec *appspec.AppSpec, rev string) []string {
	var out []string
	seen := map[string]bool{}
	events := make([]string, 0, len(spec.Hooks))
	for ev := range spec.Hooks {
		events = append(events, ev)
	}
	sort.Strings(events)
	for _, ev := range events {
		for _, s := range spec.Hooks[ev] {
			if seen[s.Location] {
				continue
			}
			seen[s.Location] = true
			out = append(out, scanScript(filepath.Join(rev, s.Location), s.Location)...)
		}
	}
	return out
}

func scanScript(path, location string) []string {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxScriptScan)
	n := 0
	for sc.Scan() {
		n++
		line := stripComment(sc.Text())
		if !background.MatchString(line) {
			continue
		}
		cmd := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(line), "&"))
		var held []string
		hasOut := stdoutRedir.MatchString(cmd)
		if !hasOut {
			held = append(held, "STDOUT")
		}
		// 2>&1 sends stderr where stdout goes: redirected only when
		// stdout is.
		if !(stderrFile.MatchString(cmd) || both.MatchString(cmd) || hasOut && strings.Contains(cmd, "2>&1")) {
			held = append(held, "STDERR")
		}
		if len(held) == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("%s:%d: `%s &` likely leaves a background process holding the script's %s: CodeDeploy's agent waits for it until the script's timeout and then fails the script (\"failed to close %s\", error code 6); redirect it, e.g. `%s > /var/log/app.log 2>&1 &`",
			location, n, cmd, strings.Join(held, " and "), held[0], cmd))
	}
	return out
}

// stripComment drops a shell comment (a "#" at the start of a word,
// outside quotes).
func stripComment(line string) string {
	var q byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case q != 0:
			if c == q {
				q = 0
			}
		case c == '\'' || c == '"':
			q = c
		case c == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return line[:i]
		}
	}
	return line
}
