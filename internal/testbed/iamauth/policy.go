// Package iamauth evaluates IAM identity policies the way AWS documents
// it, for the test bed's IAM enforcement: moto checks only the action of
// an EC2 call (it authorises every EC2 request against the resource "*"),
// ignores conditions, and checks CloudWatch under the wrong prefix
// (monitoring: instead of cloudwatch:), so the bed evaluates those calls
// itself with the resources and condition keys the request carries.
//
// Sources: IAM User Guide, "Policy evaluation logic" (an explicit Deny
// wins; otherwise an Allow is needed), "IAM JSON policy elements:
// Condition operators" (operators, ...IfExists, Null), "Single-valued vs.
// multivalued context keys" (ForAllValues, ForAnyValue), "IAM policy
// elements: Variables and tags" (variables in Resource and in condition
// values; a variable without a value matches nothing).
//
// It evaluates identity-based policies only (no resource policies,
// permission boundaries, SCPs or session policies), and refuses, with an
// error, a policy element or condition operator it does not implement,
// so a test never passes on a guess.
package iamauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Document is a policy document.
type Document struct {
	Version   string
	Statement []Statement
}

// Statement is one statement. Condition maps operator → key → values.
type Statement struct {
	Sid         string
	Effect      string
	Principal   map[string][]string // trust policies only: "Service", "AWS", or "*"
	Action      []string
	NotAction   []string
	Resource    []string
	NotResource []string
	Condition   map[string]map[string][]string
}

// Parse reads a policy document: a string or a list where IAM allows
// either, and conditions whose values are strings, booleans, numbers or
// lists of them.
func Parse(doc string) (*Document, error) {
	var raw struct {
		Version   string
		Statement json.RawMessage
	}
	if err := json.Unmarshal([]byte(doc), &raw); err != nil {
		return nil, fmt.Errorf("iamauth: policy: %w", err)
	}
	var stmts []json.RawMessage
	if err := json.Unmarshal(raw.Statement, &stmts); err != nil {
		stmts = []json.RawMessage{raw.Statement}
	}
	d := &Document{Version: raw.Version}
	for i, r := range stmts {
		s, err := parseStatement(r)
		if err != nil {
			return nil, fmt.Errorf("iamauth: statement %d: %w", i, err)
		}
		d.Statement = append(d.Statement, s)
	}
	return d, nil
}

func parseStatement(r json.RawMessage) (Statement, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(r, &m); err != nil {
		return Statement{}, err
	}
	var s Statement
	for k, v := range m {
		var err error
		switch k {
		case "Sid":
			err = json.Unmarshal(v, &s.Sid)
		case "Effect":
			err = json.Unmarshal(v, &s.Effect)
		case "Action":
			s.Action, err = strings1(v)
		case "NotAction":
			s.NotAction, err = strings1(v)
		case "Resource":
			s.Resource, err = strings1(v)
		case "NotResource":
			s.NotResource, err = strings1(v)
		case "Principal":
			s.Principal, err = principal(v)
		case "Condition":
			s.Condition, err = conditionBlock(v)
		default:
			err = fmt.Errorf("element %s is not implemented by the test bed", k)
		}
		if err != nil {
			return Statement{}, fmt.Errorf("%s: %w", k, err)
		}
	}
	if s.Effect != "Allow" && s.Effect != "Deny" {
		return Statement{}, fmt.Errorf("effect %q: want Allow or Deny", s.Effect)
	}
	return s, nil
}

// strings1 is "a string or a list of strings".
func strings1(v json.RawMessage) ([]string, error) {
	var one string
	if err := json.Unmarshal(v, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(v, &many); err != nil {
		return nil, errors.New("want a string or a list of strings")
	}
	return many, nil
}

// scalars is a condition value: a scalar or a list of them, as strings.
func scalars(v json.RawMessage) ([]string, error) {
	var list []any
	if err := json.Unmarshal(v, &list); err != nil {
		var one any
		if err := json.Unmarshal(v, &one); err != nil {
			return nil, err
		}
		list = []any{one}
	}
	out := make([]string, len(list))
	for i, x := range list {
		switch x := x.(type) {
		case string:
			out[i] = x
		case bool, float64:
			out[i] = fmt.Sprint(x)
		default:
			return nil, fmt.Errorf("condition value %v: want strings, numbers or booleans", x)
		}
	}
	return out, nil
}

func conditionBlock(v json.RawMessage) (map[string]map[string][]string, error) {
	var raw map[string]map[string]json.RawMessage
	if err := json.Unmarshal(v, &raw); err != nil {
		return nil, err
	}
	out := map[string]map[string][]string{}
	for op, kv := range raw {
		out[op] = map[string][]string{}
		for k, vals := range kv {
			s, err := scalars(vals)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", op, k, err)
			}
			out[op][k] = s
		}
	}
	return out, nil
}

func principal(v json.RawMessage) (map[string][]string, error) {
	var star string
	if err := json.Unmarshal(v, &star); err == nil {
		if star != "*" {
			return nil, fmt.Errorf("principal %q", star)
		}
		return map[string][]string{"*": {"*"}}, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(v, &raw); err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for k, x := range raw {
		s, err := strings1(x)
		if err != nil {
			return nil, err
		}
		out[k] = s
	}
	return out, nil
}

// Request is one authorisation: an action on one resource, with the
// request context. Context keys are compared case-insensitively, as IAM
// does; a key's values are a list (one value for a single-valued key).
type Request struct {
	Principal string // the caller's ARN, for messages
	Action    string
	Resource  string
	Context   map[string][]string
}

// value returns the values of a context key, looked up case-insensitively.
func (r Request) value(key string) ([]string, bool) {
	for k, v := range r.Context {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}

// Decision is the outcome of an evaluation.
type Decision int

// Decisions.
const (
	ImplicitDeny Decision = iota
	Allow
	ExplicitDeny
)

func (d Decision) String() string {
	return [...]string{"implicit deny", "allow", "explicit deny"}[d]
}

// Evaluate decides one request against identity policies: an explicit
// Deny wins, otherwise an Allow is needed. The statement that decided is
// returned (nil for an implicit deny). An error means a policy uses
// something this package does not implement.
func Evaluate(policies []*Document, r Request) (Decision, *Statement, error) {
	var allowed *Statement
	for _, p := range policies {
		for i := range p.Statement {
			s := &p.Statement[i]
			ok, err := s.applies(r)
			if err != nil {
				return ImplicitDeny, nil, fmt.Errorf("iamauth: statement %q: %w", s.Sid, err)
			}
			if !ok {
				continue
			}
			if s.Effect == "Deny" {
				return ExplicitDeny, s, nil
			}
			if allowed == nil {
				allowed = s
			}
		}
	}
	if allowed != nil {
		return Allow, allowed, nil
	}
	return ImplicitDeny, nil, nil
}

// applies reports whether the statement matches the request: action,
// resource and every condition.
func (s *Statement) applies(r Request) (bool, error) {
	if len(s.Action) > 0 && !anyMatch(s.Action, r.Action, true) {
		return false, nil
	}
	if len(s.NotAction) > 0 && anyMatch(s.NotAction, r.Action, true) {
		return false, nil
	}
	if len(s.Resource) > 0 || len(s.NotResource) > 0 {
		res := s.Resource
		if len(res) == 0 {
			res = s.NotResource
		}
		hit := false
		for _, pat := range res {
			if !variablesInResourcePart(pat) {
				continue
			}
			p, ok := substitute(pat, r)
			if ok && wildcard(p, r.Resource, false) {
				hit = true
				break
			}
		}
		if hit == (len(s.Resource) == 0) {
			return false, nil
		}
	}
	ops := make([]string, 0, len(s.Condition))
	for op := range s.Condition {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	for _, op := range ops {
		for key, vals := range s.Condition[op] {
			ok, err := condition(op, key, vals, r)
			if err != nil || !ok {
				return false, err
			}
		}
	}
	return true, nil
}

// AssumableBy reports whether a trust policy lets the service principal
// (ec2.amazonaws.com) assume the role: a statement allowing
// sts:AssumeRole to that service, with no condition the bed cannot check.
func (d *Document) AssumableBy(service string) bool {
	for _, s := range d.Statement {
		if s.Effect != "Allow" || len(s.Condition) > 0 || !anyMatch(s.Action, "sts:AssumeRole", true) {
			continue
		}
		for _, p := range append(s.Principal["Service"], s.Principal["*"]...) {
			if p == service || p == "*" {
				return true
			}
		}
	}
	return false
}

// variablesInResourcePart reports whether a Resource pattern's variables
// all sit after the fifth colon, in the resource part of the ARN: IAM
// accepts a variable nowhere else (IAM User Guide, "IAM policy elements:
// Variables and tags", where you can use policy variables), so a pattern
// like "${ec2:SourceInstanceARN}" grants nothing.
func variablesInResourcePart(pattern string) bool {
	i := strings.Index(pattern, "${")
	if i < 0 {
		return true
	}
	return strings.Count(pattern[:i], ":") >= 5
}

func anyMatch(patterns []string, s string, fold bool) bool {
	for _, p := range patterns {
		if wildcard(p, s, fold) {
			return true
		}
	}
	return false
}

// wildcard matches IAM's * (any run) and ? (one character).
func wildcard(pattern, s string, fold bool) bool {
	if fold {
		pattern, s = strings.ToLower(pattern), strings.ToLower(s)
	}
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*':
			for i := len(s); i >= 0; i-- {
				if wildcard(pattern[1:], s[i:], false) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != pattern[0] {
				return false
			}
		}
		pattern, s = pattern[1:], s[1:]
	}
	return s == ""
}

// substitute replaces the policy variables of a Resource or condition
// value from the request context: ${key}, ${key, 'default'}, and the
// escapes ${*}, ${?} and ${$}. ok is false when a variable has no value
// (single-valued) and no default: the pattern then matches nothing.
func substitute(pattern string, r Request) (string, bool) {
	var b strings.Builder
	for {
		i := strings.Index(pattern, "${")
		if i < 0 {
			b.WriteString(pattern)
			return b.String(), true
		}
		j := strings.IndexByte(pattern[i:], '}')
		if j < 0 {
			b.WriteString(pattern)
			return b.String(), true
		}
		b.WriteString(pattern[:i])
		name := strings.TrimSpace(pattern[i+2 : i+j])
		pattern = pattern[i+j+1:]
		switch name {
		case "*", "?", "$":
			b.WriteString(name)
			continue
		}
		def, hasDef := "", false
		if k, d, ok := strings.Cut(name, ","); ok {
			name, def, hasDef = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(d), "'"), true
		}
		vals, ok := r.value(name)
		switch {
		case ok && len(vals) == 1:
			b.WriteString(vals[0])
		case hasDef:
			b.WriteString(def)
		default:
			return "", false
		}
	}
}
