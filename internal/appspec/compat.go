package appspec

import (
	"fmt"
	"sort"
	"strings"

	"github.com/goccy/go-yaml/ast"

	"github.com/rollback-agent/rollback-agent/internal/yamlx"
)

// finding is a point where CodeDeploy's own agent (aws-codedeploy-agent,
// the reference: see docs/codedeploy/compatibility.md) would refuse the
// revision or do something else than this agent. They are kept apart from
// the other warnings so that `agentctl lint` can list them as such, and
// they reach the deployment's warnings like any other.
type finding struct {
	pos yamlx.Pos
	msg string
}

// differ records a CodeDeploy difference at n.
func (ps *parser) differ(n ast.Node, format string, args ...any) {
	ps.differAt(yamlx.PosOf(n), format, args...)
}

func (ps *parser) differAt(pos yamlx.Pos, format string, args ...any) {
	ps.diffs = append(ps.diffs, finding{pos: pos, msg: fmt.Sprintf(format, args...)})
}

// differences formats the findings as "file:line:col: codedeploy: msg",
// in file order.
func (ps *parser) differences(file string) []string {
	sort.SliceStable(ps.diffs, func(i, j int) bool {
		a, b := ps.diffs[i].pos, ps.diffs[j].pos
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	var out []string
	for _, d := range ps.diffs {
		prefix := file
		if s := d.pos.String(); s != "" {
			prefix += ":" + s
		}
		out = append(out, prefix+": codedeploy: "+d.msg)
	}
	return out
}

// rubyToI is Ruby's String#to_i, which CodeDeploy's agent applies to a
// script's timeout (script_info.rb): leading whitespace, an optional sign
// and the longest run of digits (single underscores allowed between them);
// the rest is ignored, and no digits at all is 0. It returns the value,
// capped at limit+1 in magnitude, and the text it ignored.
func rubyToI(s string, limit int64) (n int64, rest string) {
	t := strings.TrimLeft(s, " \t\n\v\f\r")
	j := 0
	neg := false
	if j < len(t) && (t[j] == '+' || t[j] == '-') {
		neg = t[j] == '-'
		j++
	}
	start := j
scan:
	for ; j < len(t); j++ {
		c := t[j]
		switch {
		case isDigit(c):
			if n <= limit {
				n = n*10 + int64(c-'0')
			}
		case c == '_' && j > start && j+1 < len(t) && isDigit(t[j+1]):
		default:
			break scan
		}
	}
	if j == start {
		return 0, strings.TrimSpace(t)
	}
	n = min(n, limit+1)
	if neg {
		n = -n
	}
	return n, strings.TrimSpace(t[j:])
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// closest returns ` (did you mean "x"?)` for the known name nearest to
// key when it is a likely slip: a case or '-'/'_' difference, or an edit
// distance of at most 2 (AfterInstal, ApplicationStrat).
func closest(key string, known []string) string {
	if s := suggest(key, known); s != "" {
		return s
	}
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(strings.ToLower(key), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Damerau-Levenshtein distance (with adjacent
// transpositions), on bytes: event names are ASCII.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
