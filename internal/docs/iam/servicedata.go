package iam

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
)

// ServiceData is AWS's Service Authorization Reference as cfn-lint ships
// it (cfnlint/data/AdditionalSpecs/Policies.json): per service prefix, the
// actions with the resource types each is authorised on, and each
// resource type's ARN formats. Nobody here wrote it, so checking the
// project's tables against it catches a made-up resource type, an ARN of
// the wrong shape and a misspelt action.
type ServiceData struct {
	services map[string]serviceEntry
}

type serviceEntry struct {
	// Actions are keyed by the lower-cased action name.
	Actions map[string]struct {
		Resources []string `json:"Resources"`
	} `json:"Actions"`
	Resources map[string]struct {
		ARNFormats []string `json:"ARNFormats"`
	} `json:"Resources"`
}

// LoadServiceData reads Policies.json.
func LoadServiceData(file string) (*ServiceData, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("iam: service data: %w", err)
	}
	d := &ServiceData{}
	if err := json.Unmarshal(b, &d.services); err != nil {
		return nil, fmt.Errorf("iam: service data %s: %w", file, err)
	}
	if len(d.services["ec2"].Actions) == 0 {
		return nil, fmt.Errorf("iam: service data %s has no ec2 actions: not cfn-lint's Policies.json?", file)
	}
	return d, nil
}

// resourceTypes returns the resource types of an action and whether the
// action exists.
func (d *ServiceData) resourceTypes(action string) ([]string, bool) {
	svc, name, ok := strings.Cut(action, ":")
	if !ok {
		return nil, false
	}
	a, ok := d.services[svc].Actions[strings.ToLower(name)]
	return a.Resources, ok
}

// arnMatches reports whether arn has one of the ARN formats of a
// resource type; the formats are regular expressions over ${Partition},
// ${Region} and ${Account}, and the policies' placeholders are plain
// characters.
func (d *ServiceData) arnMatches(service, typ, arn string) (bool, error) {
	r, ok := d.services[service].Resources[typ]
	if !ok {
		return false, fmt.Errorf("no resource type %s:%s", service, typ)
	}
	for _, f := range r.ARNFormats {
		f = strings.NewReplacer("${Partition}", "aws", "${Region}", `[a-z0-9-]+`, "${Account}", `\d{12}`).Replace(f)
		re, err := regexp.Compile("^" + f + "$")
		if err != nil {
			return false, fmt.Errorf("ARN format %q of %s:%s: %w", f, service, typ, err)
		}
		if re.MatchString(arn) {
			return true, nil
		}
	}
	return false, nil
}

// CheckNeeds checks the project's table of resources (resourcesOf)
// against AWS's data: every action exists; every resource type given for
// it is one AWS lists for it, and the example ARN has that type's format;
// "*" only for an action that supports no resource-level permissions.
func (d *ServiceData) CheckNeeds(needs []Need) error {
	var errs []error
	seen := map[string]bool{}
	for _, n := range needs {
		for _, r := range n.Resources {
			key := n.Action + " " + r.Type + " " + r.ARN
			if seen[key] {
				continue
			}
			seen[key] = true
			types, ok := d.resourceTypes(n.Action)
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("%s (for %s) is not an action in AWS's service data", n.Action, n.Call))
			case r.Type == "*" && len(types) > 0:
				errs = append(errs, fmt.Errorf("%s supports resource types %v: resourcesOf must say which the code's request carries", n.Action, types))
			case r.Type != "*" && !slices.Contains(types, r.Type):
				errs = append(errs, fmt.Errorf("%s is not authorised on resource type %q (AWS lists %v)", n.Action, r.Type, types))
			case r.Type != "*":
				svc, _, _ := strings.Cut(n.Action, ":")
				ok, err := d.arnMatches(svc, r.Type, r.ARN)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", n.Action, err))
				} else if !ok {
					errs = append(errs, fmt.Errorf("%s: example ARN %s does not have the ARN format of %s:%s", n.Action, r.ARN, svc, r.Type))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// CheckActions checks that every action pattern of a policy names at
// least one action AWS has: a misspelt action is a grant of nothing.
func (d *ServiceData) CheckActions(p *Policy) error {
	var errs []error
	for _, pat := range p.Actions() {
		svc, _, ok := strings.Cut(pat, ":")
		entry, known := d.services[svc]
		if !ok || !known {
			errs = append(errs, fmt.Errorf("action %s: unknown service prefix %q", pat, svc))
			continue
		}
		found := false
		for name := range entry.Actions {
			if actionMatch(pat, svc+":"+name) {
				found = true
				break
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("action %s is not an action in AWS's service data", pat))
		}
	}
	return errors.Join(errs...)
}
