package docs

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rollback-agent/rollback-agent/internal/docs/iam"
)

// IAMReference summarises the shipped policies, statement by statement,
// from the JSON files themselves.
func IAMReference(root string) (string, error) {
	var b strings.Builder
	for _, role := range iam.Roles() {
		p, err := iam.LoadPolicy(filepath.Join(root, role.Policy))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "**%s** ([`%s`](%s), for `%s`):\n\n", role.Name, role.Policy, role.Policy, repoPath(role.Main))
		b.WriteString("| statement | actions | resources | condition |\n|---|---|---|---|\n")
		for _, s := range p.Statement {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", s.Sid, codeList(s.Action), codeList(s.Resource), conditions(s.Condition))
		}
		if len(role.Pending) > 0 {
			fmt.Fprintf(&b, "\nGranted for `agentctl push` and its release commands even where the scan does not need them yet: %s.\n",
				strings.ReplaceAll(codeList(role.Pending), "<br>", ", "))
		}
		b.WriteString("\n")
	}
	for _, o := range iam.OptionalPolicies() {
		p, err := iam.LoadPolicy(filepath.Join(root, o.Policy))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "**%s**, optional ([`%s`](%s)): only for %s.\n\n", o.Name, o.Policy, o.Policy, o.When)
		b.WriteString("| statement | actions | resources | condition |\n|---|---|---|---|\n")
		for _, s := range p.Statement {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", s.Sid, codeList(s.Action), codeList(s.Resource), conditions(s.Condition))
		}
		b.WriteString("\n")
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// repoPath shortens a main package's import path to the repository path.
func repoPath(importPath string) string {
	return strings.TrimPrefix(importPath, iam.Module+"/")
}

func codeList(items []string) string {
	out := make([]string, len(items))
	for i, s := range items {
		out[i] = "`" + cell(s) + "`"
	}
	return strings.Join(out, "<br>")
}

// conditions prints {"StringEquals": {"k": "v"}} as `k` = `v`.
func conditions(c map[string]map[string]any) string {
	if len(c) == 0 {
		return "-"
	}
	var parts []string
	for op, kv := range c {
		for k, v := range kv {
			val := fmt.Sprint(v)
			if list, ok := v.([]any); ok {
				var s []string
				for _, x := range list {
					s = append(s, fmt.Sprint(x))
				}
				val = strings.Join(s, ", ")
			}
			parts = append(parts, fmt.Sprintf("%s `%s` `%s`", op, cell(k), cell(val)))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "<br>")
}
