package iamauth

import (
	"fmt"
	"strings"
)

// matcher compares one request value with one policy value.
type matcher func(policy, request string) bool

// operators are the condition operators the bed implements, by base
// name; negated ones are true when no policy value matches.
var operators = map[string]struct {
	match   matcher
	negated bool
}{
	"StringEquals":              {func(p, v string) bool { return p == v }, false},
	"StringNotEquals":           {func(p, v string) bool { return p == v }, true},
	"StringEqualsIgnoreCase":    {strings.EqualFold, false},
	"StringNotEqualsIgnoreCase": {strings.EqualFold, true},
	"StringLike":                {func(p, v string) bool { return wildcard(p, v, false) }, false},
	"StringNotLike":             {func(p, v string) bool { return wildcard(p, v, false) }, true},
	// ArnEquals and ArnLike behave alike: wildcards per ARN segment,
	// which a whole-string match gives for the patterns used here.
	"ArnEquals":    {func(p, v string) bool { return wildcard(p, v, false) }, false},
	"ArnLike":      {func(p, v string) bool { return wildcard(p, v, false) }, false},
	"ArnNotEquals": {func(p, v string) bool { return wildcard(p, v, false) }, true},
	"ArnNotLike":   {func(p, v string) bool { return wildcard(p, v, false) }, true},
	"Bool":         {strings.EqualFold, false},
}

// condition evaluates one operator on one key.
func condition(op, key string, policyVals []string, r Request) (bool, error) {
	set, base := "", op
	if s, rest, ok := strings.Cut(op, ":"); ok {
		set, base = s, rest
	}
	ifExists := false
	if b, ok := strings.CutSuffix(base, "IfExists"); ok {
		base, ifExists = b, true
	}
	vals, present := r.value(key)
	if len(vals) == 0 {
		present = false
	}
	if base == "Null" {
		if set != "" || ifExists || len(policyVals) != 1 {
			return false, fmt.Errorf("condition %s on %s: not implemented by the test bed", op, key)
		}
		// Null true: the key is absent; false: it is present.
		return strings.EqualFold(policyVals[0], "true") != present, nil
	}
	o, ok := operators[base]
	if !ok || (set != "" && set != "ForAllValues" && set != "ForAnyValue") {
		return false, fmt.Errorf("condition operator %s is not implemented by the test bed", op)
	}
	if !present {
		switch {
		case ifExists:
			return true, nil
		case set == "ForAllValues":
			// Every one of no values matches: true, which is why
			// policies pair it with a Null check.
			return true, nil
		case o.negated && set == "":
			return true, nil
		}
		return false, nil
	}
	// Policy values may hold variables; one without a value matches
	// nothing.
	var pvals []string
	for _, p := range policyVals {
		if s, ok := substitute(p, r); ok {
			pvals = append(pvals, s)
		}
	}
	hit := func(v string) bool {
		for _, p := range pvals {
			if o.match(p, v) {
				return true
			}
		}
		return false
	}
	switch set {
	case "ForAllValues":
		for _, v := range vals {
			if hit(v) == o.negated {
				return false, nil
			}
		}
		return true, nil
	case "ForAnyValue":
		for _, v := range vals {
			if hit(v) != o.negated {
				return true, nil
			}
		}
		return false, nil
	}
	if len(vals) > 1 {
		return false, fmt.Errorf("condition %s on multivalued key %s needs ForAllValues or ForAnyValue", op, key)
	}
	return hit(vals[0]) != o.negated, nil
}
