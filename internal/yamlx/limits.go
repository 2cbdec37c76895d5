package yamlx

import "fmt"

// Bounds on what Parse hands to goccy/go-yaml. Its parser spends memory
// quadratic in the nesting depth (30000 unclosed "[" in a 30 KB file
// costs more than a gigabyte), so depth is measured by a cheap scan
// before parsing. Real configs and appspecs are a few levels deep and a
// few kilobytes long; the limits are far beyond them.
const (
	// MaxFileSize is the largest YAML file Parse accepts.
	MaxFileSize = 1 << 20
	// MaxFlowDepth bounds nested flow collections ("[[[" or "{{{").
	MaxFlowDepth = 100
	// MaxBlockColumn bounds where a block line's content may start:
	// indentation plus "- " and "? " indicators ("- - - - x").
	MaxBlockColumn = 400
)

// checkLimits returns a positioned problem when data is too large or
// nested too deeply to be parsed safely, or nil.
func checkLimits(data []byte) *Problem {
	if len(data) > MaxFileSize {
		// ReadFile stops one byte past the limit: the true size is unknown.
		return &Problem{Msg: fmt.Sprintf("YAML file is larger than the %d-byte limit (reading stopped there)", MaxFileSize)}
	}
	s := depthScanner{line: 1, col: 1, atLineStart: true}
	for i := 0; i < len(data); i++ {
		if p := s.step(data[i]); p != nil {
			return p
		}
	}
	return nil
}

// depthScanner tracks just enough YAML lexing to count flow nesting:
// quotes (inside flow collections, where brackets in strings must not
// count), comments and line starts. Outside flow collections quotes are
// ignored because an apostrophe in a plain scalar ("don't") is text; a
// bracket in plain text can only raise the count, and only a hundred
// unclosed ones would trip it.
type depthScanner struct {
	line, col   int
	flow        int
	quote       byte // '"' or '\'' while inside a quoted scalar in flow context
	escaped     bool
	comment     bool
	atLineStart bool // still in the line's indentation and indicators
	prev        byte
}

func (s *depthScanner) step(c byte) *Problem {
	defer func() {
		s.prev = c
		if c == '\n' {
			s.line, s.col, s.atLineStart, s.comment = s.line+1, 1, true, false
		} else {
			s.col++
		}
	}()
	if s.comment || c == '\n' {
		return nil
	}
	if s.quote != 0 {
		switch {
		case s.escaped:
			s.escaped = false
		case s.quote == '"' && c == '\\':
			s.escaped = true
		case c == s.quote:
			s.quote = 0
		}
		return nil
	}
	if c == '#' && (s.prev == ' ' || s.prev == '\t' || s.prev == '\n' || s.prev == 0) {
		s.comment = true
		return nil
	}
	if s.atLineStart {
		// "- " and "? " open a nested block node; so does indentation.
		if c == ' ' || ((c == '-' || c == '?') && s.flow == 0 && s.prev != '-' && s.prev != '?') {
			if s.col > MaxBlockColumn {
				return &Problem{Pos: Pos{Line: s.line, Col: s.col},
					Msg: fmt.Sprintf("YAML syntax: nested more than %d columns deep", MaxBlockColumn)}
			}
			return nil
		}
		s.atLineStart = false
	}
	switch c {
	case '[', '{':
		s.flow++
		if s.flow > MaxFlowDepth {
			return &Problem{Pos: Pos{Line: s.line, Col: s.col},
				Msg: fmt.Sprintf("YAML syntax: flow collections nested more than %d deep", MaxFlowDepth)}
		}
	case ']', '}':
		if s.flow > 0 {
			s.flow--
		}
	case '"', '\'':
		if s.flow > 0 {
			s.quote = c
		}
	}
	return nil
}
