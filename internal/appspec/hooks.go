package appspec

import (
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"

	"github.com/rollback-agent/rollback-agent/internal/yamlx"
)

var digitsRe = regexp.MustCompile(`^[0-9]+$`)

// MaxEventTime is what the CodeDeploy service allows the scripts of one
// lifecycle event to take together before it fails the event; the engine
// holds each event to it at run time too (scripts without a timeout count
// 3600 s each here, so two of them could not fit).
const MaxEventTime = DefaultTimeout

const maxEventSeconds = int64(MaxEventTime / time.Second)

// maxTimeoutSeconds keeps a timeout representable as a time.Duration.
const maxTimeoutSeconds = math.MaxInt64 / int64(time.Second)

func (ps *parser) hooks(e yamlx.Entry) map[string][]Script {
	out := map[string][]Script{}
	if yamlx.IsNull(e.Value) {
		return out
	}
	entries, ok := ps.mapping(e.Value, "hooks")
	if !ok {
		return out
	}
	events := Events()
	for _, he := range entries {
		path := "hooks." + he.Key
		if !isEvent(he.Key, events) {
			// A misspelt event would silently never run. CodeDeploy fails
			// the deployment on it when the service lists the possible
			// events (command_executor.rb: "The deployment failed because
			// the AppSpec file contains unknown lifecycle events"), and so
			// does this agent, always.
			ps.probs.ErrorAt(he.KeyPos, "hooks: unknown lifecycle event %q%s would never run; CodeDeploy fails a deployment whose appspec names unknown lifecycle events (events: %s)",
				he.Key, closest(he.Key, events), strings.Join(events, ", "))
			continue
		}
		if yamlx.IsNull(he.Value) {
			continue
		}
		items, ok := yamlx.Sequence(he.Value)
		if !ok {
			ps.probs.ErrorAt(he.ValuePos, "%s: want a list of scripts (- location: ...), got %s", path, article(he.Value))
			continue
		}
		var scripts []Script
		var explicit int64
		for i, it := range items {
			s, secs := ps.script(it, fmt.Sprintf("%s[%d]", path, i))
			scripts = append(scripts, s)
			explicit = min(explicit+secs, maxTimeoutSeconds)
		}
		// Only timeouts written in the file count: the CodeDeploy docs
		// themselves list several scripts without timeout in one event,
		// which the 3600s default would otherwise push over the limit.
		// CodeDeploy's agent accepts such an appspec and the service fails
		// the event when it runs past 3600s; this agent holds the event to
		// the same budget at run time, so this is a warning, as there.
		if explicit > maxEventSeconds {
			ps.probs.Warnf(he.KeyNode, "%s: the scripts' timeouts add up to %ds; a lifecycle event may take %ds in total (CodeDeploy's limit): scripts still running then fail the event",
				path, explicit, maxEventSeconds)
		}
		if len(scripts) > 0 {
			out[he.Key] = scripts
		}
	}
	return out
}

func isEvent(name string, events []string) bool {
	for _, ev := range events {
		if ev == name {
			return true
		}
	}
	return false
}

// script parses one hook script and returns it with the timeout written in
// the file, in seconds (0 when the default applies).
func (ps *parser) script(n ast.Node, path string) (Script, int64) {
	s := Script{Timeout: DefaultTimeout, Line: yamlx.PosOf(n).Line}
	entries, ok := ps.mapping(n, path)
	if !ok {
		return s, 0
	}
	var secs int64
	hasLocation := false
	for _, e := range entries {
		switch e.Key {
		case "location":
			hasLocation = true
			s.Location = ps.location(e, path+".location")
		case "timeout":
			secs = ps.timeout(e, path+".timeout")
			if secs > 0 {
				s.Timeout = time.Duration(secs) * time.Second
			}
		case "runas":
			s.RunAs = ps.runAs(e, path+".runas")
		case "sudo":
			s.Sudo = ps.boolean(e, path+".sudo")
		default:
			ps.unknownKey(e, path, []string{"location", "timeout", "runas", "sudo"})
		}
	}
	if !hasLocation {
		ps.probs.ErrorAt(yamlx.PosOf(n), "%s.location: missing; give the script's path in the revision", path)
	}
	return s, secs
}

// location returns the script path relative to the revision root. CodeDeploy
// trims it and joins it to the archive directory, so a leading "/" is the
// archive root; unlike CodeDeploy v1, a ".." that escapes is refused, since
// it would run a script the revision does not contain.
func (ps *parser) location(e yamlx.Entry, path string) string {
	raw, ok := ps.nonEmpty(e, path)
	if !ok {
		return ""
	}
	raw = strings.TrimSpace(raw)
	rel := filepath.Clean(strings.TrimLeft(raw, "/"))
	switch {
	case rel == ".":
		ps.probs.ErrorAt(e.ValuePos, "%s: %q is the revision root, not a script", path, raw)
		return ""
	case escapes(rel):
		ps.probs.ErrorAt(e.ValuePos, "%s: %q leaves the revision through ..; scripts must be inside the revision", path, raw)
		return rel
	}
	if ps.revision != "" {
		ps.checkScript(e.ValuePos, path, raw, rel)
	}
	return rel
}

// timeout reads a number of seconds as CodeDeploy's agent does, with
// Ruby's to_i (script_info.rb): "300" and 300 are 300, and so are "300s"
// and 300.9, the rest of the value being ignored; those are accepted with
// a warning that says what was read ("5m" is 5 seconds there too). A value
// to_i reads as 0 or less is refused, as there. It returns 0 when absent
// or bad.
func (ps *parser) timeout(e yamlx.Entry, path string) int64 {
	if yamlx.IsNull(e.Value) {
		return 0
	}
	var secs int64
	switch v := e.Value.(type) {
	case *ast.IntegerNode:
		switch i := v.Value.(type) {
		case int64:
			secs = i
		case uint64:
			// goccy stores non-negative integers as uint64.
			secs = maxTimeoutSeconds + 1
			if i <= uint64(maxTimeoutSeconds) {
				secs = int64(i)
			}
		}
	case *ast.FloatNode:
		raw := rawText(e)
		secs, _ = rubyToI(raw, maxTimeoutSeconds)
		if secs > 0 && secs <= maxTimeoutSeconds {
			ps.probs.Warnf(e.Value, "%s: %s is read as %d seconds (CodeDeploy's agent drops the fraction too); write timeout: %d", path, raw, secs, secs)
		}
	case *ast.StringNode:
		var rest string
		secs, rest = rubyToI(v.Value, maxTimeoutSeconds)
		if secs <= 0 && !digitsRe.MatchString(strings.TrimSpace(v.Value)) {
			ps.probs.ErrorAt(e.ValuePos, "%s: %q is not a number of seconds (CodeDeploy's agent reads it as %d and fails too)", path, v.Value, secs)
			return 0
		}
		if rest != "" && secs > 0 && secs <= maxTimeoutSeconds {
			ps.probs.Warnf(e.Value, "%s: %q is read as %d seconds, as CodeDeploy's agent reads it (Ruby's to_i ignores %q); write timeout: %d",
				path, v.Value, secs, rest, secs)
		}
	default:
		ps.probs.ErrorAt(e.ValuePos, "%s: %s is not a number of seconds", path, describe(e.Value))
		return 0
	}
	switch {
	case secs <= 0:
		ps.probs.ErrorAt(e.ValuePos, "%s: %d is not a positive number of seconds", path, secs)
		return 0
	case secs > maxTimeoutSeconds:
		ps.probs.ErrorAt(e.ValuePos, "%s: %s seconds is far too long (a lifecycle event may take %ds)", path, rawText(e), maxEventSeconds)
		return 0
	}
	return secs
}

func rawText(e yamlx.Entry) string {
	s, _ := yamlx.Scalar(e.Value)
	return s
}

// runAs returns the trimmed user name, as CodeDeploy strips it before
// building `su <user> -c <script>`.
func (ps *parser) runAs(e yamlx.Entry, path string) string {
	if yamlx.IsNull(e.Value) {
		return ""
	}
	name, ok := ps.nonEmpty(e, path)
	if !ok {
		return ""
	}
	name = strings.TrimSpace(name)
	ps.userExists(e.ValuePos, path, name)
	return name
}

// boolean accepts YAML booleans, and the YAML 1.1 words yes/no/on/off that
// CodeDeploy's v1 agent (Psych) reads as booleans too.
func (ps *parser) boolean(e yamlx.Entry, path string) bool {
	if yamlx.IsNull(e.Value) {
		return false
	}
	if b, ok := e.Value.(*ast.BoolNode); ok {
		return b.Value
	}
	if s, ok := e.Value.(*ast.StringNode); ok {
		switch strings.ToLower(s.Value) {
		case "yes", "on":
			return true
		case "no", "off":
			return false
		}
	}
	ps.probs.ErrorAt(e.ValuePos, "%s: want true or false, got %s", path, describe(e.Value))
	return false
}
