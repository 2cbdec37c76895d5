// Package yamlx is the shared YAML front end of the config loader and the
// appspec parser: it parses with goccy/go-yaml, keeps every node's line and
// column, and collects problems so that a file reports all of its errors at
// once instead of the first one.
package yamlx

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Pos is a 1-based line and column in a YAML file.
type Pos struct {
	Line int `json:"line"`
	Col  int `json:"col"`
}

func (p Pos) String() string {
	if p.Line == 0 {
		return ""
	}
	return fmt.Sprintf("%d:%d", p.Line, p.Col)
}

// Problem is one finding in a file.
type Problem struct {
	Pos     Pos    `json:"pos"`
	Msg     string `json:"message"`
	Warning bool   `json:"warning,omitempty"`
}

// Problems collects the findings for one file.
type Problems struct {
	File string
	List []Problem
}

// Errorf records an error at the position of n (n may be nil).
func (p *Problems) Errorf(n ast.Node, format string, args ...any) {
	p.List = append(p.List, Problem{Pos: PosOf(n), Msg: fmt.Sprintf(format, args...)})
}

// ErrorAt records an error at an explicit position.
func (p *Problems) ErrorAt(pos Pos, format string, args ...any) {
	p.List = append(p.List, Problem{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// Warnf records a warning: it is reported but does not fail the load.
func (p *Problems) Warnf(n ast.Node, format string, args ...any) {
	p.List = append(p.List, Problem{Pos: PosOf(n), Msg: fmt.Sprintf(format, args...), Warning: true})
}

// Warnings returns the warnings formatted one per line.
func (p *Problems) Warnings() []string {
	var out []string
	for _, pr := range p.sorted() {
		if pr.Warning {
			out = append(out, formatProblem(p.File, pr))
		}
	}
	return out
}

// Err returns an *Error holding every problem when at least one is an error.
func (p *Problems) Err() error {
	for _, pr := range p.List {
		if !pr.Warning {
			return &Error{File: p.File, Problems: p.sorted()}
		}
	}
	return nil
}

func (p *Problems) sorted() []Problem {
	out := append([]Problem(nil), p.List...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Pos.Line != out[j].Pos.Line {
			return out[i].Pos.Line < out[j].Pos.Line
		}
		return out[i].Pos.Col < out[j].Pos.Col
	})
	return out
}

// Error is a file with one or more problems. Its message lists every
// problem as "file:line:col: message", one per line.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	n := 0
	for _, p := range e.Problems {
		if !p.Warning {
			n++
		}
	}
	fmt.Fprintf(&b, "%s: %d problem(s)", e.File, n)
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(formatProblem(e.File, p))
	}
	return b.String()
}

func formatProblem(file string, p Problem) string {
	prefix := file
	if s := p.Pos.String(); s != "" {
		prefix += ":" + s
	}
	if p.Warning {
		return prefix + ": warning: " + p.Msg
	}
	return prefix + ": " + p.Msg
}

// PosOf returns the position of a node, or the zero Pos for nil.
func PosOf(n ast.Node) Pos {
	if n == nil {
		return Pos{}
	}
	// A block mapping's own token is the first ':'; point at its first key.
	switch m := n.(type) {
	case *ast.MappingNode:
		if len(m.Values) > 0 && !m.IsFlowStyle {
			return PosOf(m.Values[0].Key)
		}
	case *ast.MappingValueNode:
		return PosOf(m.Key)
	case *ast.DocumentNode:
		// GetToken dereferences the body, which an empty document lacks.
		if m == nil {
			return Pos{}
		}
		if m.Start != nil && m.Start.Position != nil {
			return Pos{Line: m.Start.Position.Line, Col: m.Start.Position.Column}
		}
		if m.Body == nil {
			return Pos{}
		}
		return PosOf(m.Body)
	}
	tk := n.GetToken()
	if tk == nil || tk.Position == nil {
		return Pos{}
	}
	return Pos{Line: tk.Position.Line, Col: tk.Position.Column}
}

// Parse parses data as a single YAML document and returns its body, with
// tags and anchors stripped. An empty document returns a nil node. Syntax
// errors come back as *Error with the position of the offending token.
func Parse(file string, data []byte) (ast.Node, error) {
	if p := checkLimits(data); p != nil {
		return nil, &Error{File: file, Problems: []Problem{*p}}
	}
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		var ye yaml.Error
		if errors.As(err, &ye) {
			pos := Pos{}
			if tk := ye.GetToken(); tk != nil && tk.Position != nil {
				pos = Pos{Line: tk.Position.Line, Col: tk.Position.Column}
			}
			return nil, &Error{File: file, Problems: []Problem{{Pos: pos, Msg: "YAML syntax: " + ye.GetMessage()}}}
		}
		return nil, &Error{File: file, Problems: []Problem{{Msg: "YAML syntax: " + err.Error()}}}
	}
	if len(f.Docs) == 0 {
		return nil, nil
	}
	if len(f.Docs) > 1 {
		// A trailing "---" makes a second document with no body; it is
		// still a second document, reported at its marker.
		return nil, &Error{File: file, Problems: []Problem{{Pos: PosOf(f.Docs[1]), Msg: "more than one YAML document in the file"}}}
	}
	if f.Docs[0] == nil || f.Docs[0].Body == nil {
		return nil, nil
	}
	return Unwrap(f.Docs[0].Body), nil
}

// Unwrap strips tag and anchor wrappers so callers see the value node.
func Unwrap(n ast.Node) ast.Node {
	for {
		switch v := n.(type) {
		case *ast.TagNode:
			n = v.Value
		case *ast.AnchorNode:
			n = v.Value
		default:
			return n
		}
	}
}

// IsNull reports whether n is absent or an explicit YAML null.
func IsNull(n ast.Node) bool {
	n = Unwrap(n)
	if n == nil {
		return true
	}
	_, ok := n.(*ast.NullNode)
	return ok
}

// Scalar returns the raw text of a scalar node as written in the file
// (so `0644` stays "0644") and whether n is a scalar at all.
func Scalar(n ast.Node) (string, bool) {
	switch v := Unwrap(n).(type) {
	case *ast.StringNode:
		return v.Value, true
	case *ast.LiteralNode:
		return v.Value.Value, true
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		return v.GetToken().Value, true
	default:
		return "", false
	}
}

// KindOf names a node's kind for error messages.
func KindOf(n ast.Node) string {
	switch Unwrap(n).(type) {
	case nil, *ast.NullNode:
		return "null"
	case *ast.MappingNode, *ast.MappingValueNode:
		return "mapping"
	case *ast.SequenceNode:
		return "list"
	case *ast.StringNode, *ast.LiteralNode:
		return "string"
	case *ast.IntegerNode:
		return "integer"
	case *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
		return "number"
	case *ast.BoolNode:
		return "boolean"
	case *ast.AliasNode:
		return "alias"
	default:
		return "value"
	}
}

// Entry is one key/value pair of a mapping.
type Entry struct {
	Key      string
	KeyNode  ast.Node
	Value    ast.Node
	KeyPos   Pos
	ValuePos Pos
}

// Mapping returns the entries of a mapping node in file order, reporting
// duplicate and non-scalar keys. ok is false when n is not a mapping.
func Mapping(n ast.Node, p *Problems) (entries []Entry, ok bool) {
	var values []*ast.MappingValueNode
	switch v := Unwrap(n).(type) {
	case *ast.MappingNode:
		values = v.Values
	case *ast.MappingValueNode:
		values = []*ast.MappingValueNode{v}
	default:
		return nil, false
	}
	seen := map[string]Pos{}
	for _, mv := range values {
		if _, merge := mv.Key.(*ast.MergeKeyNode); merge {
			p.Errorf(mv.Key, "merge keys (<<) are not supported")
			continue
		}
		key, isScalar := Scalar(mv.Key)
		if !isScalar {
			p.Errorf(mv.Key, "a key must be a plain name, not a %s", KindOf(mv.Key))
			continue
		}
		kp := PosOf(mv.Key)
		if prev, dup := seen[key]; dup {
			p.ErrorAt(kp, "duplicate key %q (first at line %d)", key, prev.Line)
			continue
		}
		seen[key] = kp
		val := Unwrap(mv.Value)
		vp := PosOf(val)
		if vp.Line == 0 {
			vp = kp
		}
		entries = append(entries, Entry{Key: key, KeyNode: mv.Key, Value: val, KeyPos: kp, ValuePos: vp})
	}
	return entries, true
}

// Sequence returns the items of a list node. ok is false when n is not a list.
func Sequence(n ast.Node) ([]ast.Node, bool) {
	s, ok := Unwrap(n).(*ast.SequenceNode)
	if !ok {
		return nil, false
	}
	out := make([]ast.Node, len(s.Values))
	for i, v := range s.Values {
		out[i] = Unwrap(v)
	}
	return out, true
}
