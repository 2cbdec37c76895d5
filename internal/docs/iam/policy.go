package iam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
)

// Policy is an IAM policy document, as much of it as the checks read.
type Policy struct {
	Version   string      `json:"Version"`
	Statement []Statement `json:"Statement"`
}

// Statement is one statement of a policy.
type Statement struct {
	Sid       string                    `json:"Sid"`
	Effect    string                    `json:"Effect"`
	Action    strList                   `json:"Action"`
	Resource  strList                   `json:"Resource"`
	Condition map[string]map[string]any `json:"Condition,omitempty"`
}

// strList is IAM's "a string or a list of strings".
type strList []string

func (s *strList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = strList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want a string or a list of strings: %w", err)
	}
	*s = many
	return nil
}

// LoadPolicy reads a policy file strictly: unknown fields (NotAction,
// NotResource, a misspelt key) are errors, so the checks below see the
// whole policy.
func LoadPolicy(file string) (*Policy, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("iam: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("iam: %s: %w", file, err)
	}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("iam: %s: %w", file, err)
	}
	return &p, nil
}

func (p *Policy) validate() error {
	var errs []error
	if p.Version != "2012-10-17" {
		errs = append(errs, fmt.Errorf("the policy's Version %q: want 2012-10-17 (policy variables need it)", p.Version))
	}
	sids := map[string]bool{}
	for i, s := range p.Statement {
		where := fmt.Sprintf("statement %d (%s)", i, s.Sid)
		if s.Sid == "" || sids[s.Sid] {
			errs = append(errs, fmt.Errorf("%s: every statement needs a unique Sid: it is the README's name for it", where))
		}
		sids[s.Sid] = true
		if s.Effect != "Allow" {
			errs = append(errs, fmt.Errorf("%s: Effect %q: these policies only allow", where, s.Effect))
		}
		if len(s.Action) == 0 || len(s.Resource) == 0 {
			errs = append(errs, fmt.Errorf("%s: needs Action and Resource", where))
		}
		for _, a := range s.Action {
			if a == "*" || strings.HasSuffix(a, ":*") {
				errs = append(errs, fmt.Errorf("%s: action %q grants a whole service", where, a))
			}
		}
	}
	return errors.Join(errs...)
}

// Actions lists the policy's action patterns, sorted and unique.
func (p *Policy) Actions() []string {
	set := map[string]bool{}
	for _, s := range p.Statement {
		for _, a := range s.Action {
			set[a] = true
		}
	}
	out := make([]string, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// Allows reports whether some statement allows the action (on some
// resource: resource scoping is the statements' business, see README).
func (p *Policy) Allows(action string) bool {
	for _, s := range p.Statement {
		for _, pat := range s.Action {
			if actionMatch(pat, action) {
				return true
			}
		}
	}
	return false
}

// actionMatch matches IAM action patterns: case-insensitive, * and ?.
func actionMatch(pattern, action string) bool {
	ok, err := path.Match(strings.ToLower(pattern), strings.ToLower(action))
	return err == nil && ok
}

// AllowsOn reports whether some statement allows the action on the
// resource. Conditions are not evaluated: a conditional grant counts (the
// test bed's IAM enforcement evaluates them, see internal/testbed/iamauth).
func (p *Policy) AllowsOn(action, resource string) bool {
	for _, s := range p.Statement {
		if !slices.ContainsFunc(s.Action, func(pat string) bool { return actionMatch(pat, action) }) {
			continue
		}
		if slices.ContainsFunc(s.Resource, func(pat string) bool { return resourceMatch(pat, resource) }) {
			return true
		}
	}
	return false
}

// resourceMatch matches an IAM Resource pattern against an ARN: * is any
// run of characters (slashes and colons too) and ? any one; ARNs are
// case-sensitive. A policy variable (${...}) takes its value in the
// example request (exampleVariables); one without a value there matches
// nothing, as IAM treats a variable missing from the request.
func resourceMatch(pattern, arn string) bool {
	for strings.Contains(pattern, "${") {
		i := strings.Index(pattern, "${")
		j := strings.Index(pattern[i:], "}")
		if j < 0 {
			return false
		}
		v, ok := exampleVariables()[pattern[i+2:i+j]]
		if !ok {
			return false
		}
		pattern = pattern[:i] + v + pattern[i+j+1:]
	}
	if pattern == "" {
		return arn == ""
	}
	switch pattern[0] {
	case '*':
		for i := 0; i <= len(arn); i++ {
			if resourceMatch(pattern[1:], arn[i:]) {
				return true
			}
		}
		return false
	case '?':
		return arn != "" && resourceMatch(pattern[1:], arn[1:])
	}
	return arn != "" && pattern[0] == arn[0] && resourceMatch(pattern[1:], arn[1:])
}

// ResourceGap is an action the policy allows, but not on a resource the
// code's request carries.
type ResourceGap struct {
	Need     Need
	Resource Resource
}

// Report is the outcome of checking a policy against what the code needs.
type Report struct {
	Missing         []Need        // needed and not allowed
	MissingResource []ResourceGap // allowed, but not on a resource the request carries
	Unused          []string      // allowed action patterns that nothing needs
}

// Check compares needs with a policy: every action allowed on every
// resource its request carries. pending lists actions the policy grants
// ahead of the code (a command being built): they are not unused.
func Check(p *Policy, needs []Need, pending []string) Report {
	var r Report
	for _, n := range needs {
		if !p.Allows(n.Action) {
			r.Missing = append(r.Missing, n)
			continue
		}
		for _, res := range n.Resources {
			if !p.AllowsOn(n.Action, res.ARN) {
				r.MissingResource = append(r.MissingResource, ResourceGap{Need: n, Resource: res})
			}
		}
	}
	for _, pat := range p.Actions() {
		used := false
		for _, n := range needs {
			if actionMatch(pat, n.Action) {
				used = true
				break
			}
		}
		for _, a := range pending {
			if actionMatch(pat, a) {
				used = true
			}
		}
		if !used {
			r.Unused = append(r.Unused, pat)
		}
	}
	return r
}

// String explains the report, one line per problem.
func (r Report) String() string {
	var b strings.Builder
	for _, m := range r.Missing {
		why := ""
		if m.Why != "" {
			why = " (" + m.Why + ")"
		}
		fmt.Fprintf(&b, "missing %s for %s%s\n", m.Action, m.Call, why)
	}
	for _, g := range r.MissingResource {
		fmt.Fprintf(&b, "missing %s on its %s resource (%s) for %s: no statement that grants %s names a resource matching it\n",
			g.Need.Action, g.Resource.Type, g.Resource.ARN, g.Need.Call, g.Need.Action)
	}
	for _, u := range r.Unused {
		fmt.Fprintf(&b, "unused %s: no code path needs it (least privilege: remove it)\n", u)
	}
	return b.String()
}

// OK reports whether the policy allows exactly what is needed.
func (r Report) OK() bool {
	return len(r.Missing) == 0 && len(r.MissingResource) == 0 && len(r.Unused) == 0
}
