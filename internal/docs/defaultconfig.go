package docs

import (
	"fmt"
	"strconv"
	"strings"
)

// DefaultConfigPath is the commented agent.yaml the packages install as
// /etc/rollback-agent/agent.yaml (a config file: kept on upgrade).
const DefaultConfigPath = "packaging/config/agent.yaml"

const defaultConfigHeader = `# /etc/rollback-agent/agent.yaml: the rollback-agent configuration.
#
# Generated from the schema by 'make docs'; the README's "Config reference"
# explains every key. Every key is shown commented out with its default:
# uncomment what you change. Until 'application' is set the agent refuses to
# start (exit 78, which the unit does not restart); scripts/install.sh writes
# this file from its arguments.
#
# Rollback points before apt and dnf transactions (the hooks the package
# ships) take one line, under checkpoint:
#     package_managers: true
`

const checkExamples = `# Examples, one kind per check:
#   checks:
#     - {name: web, http: {url: "http://127.0.0.1:8080/health", expect_status: 200-299, timeout: 2s}}
#     - {name: port, tcp: {address: "127.0.0.1:8080", timeout: 1s}}
#     - {name: script, command: {argv: [/usr/local/bin/check], timeout: 10s}}
#     - {name: unit, systemd: {unit: myapp.service}}
#     - {name: errors, cloudwatch_alarm: {alarm_names: [myapp-5xx]}}
`

// DefaultConfig renders the commented default agent.yaml. Key lines are
// "#key: value" (no space after the hash) and prose is "# text", so
// removing the hash from key lines gives a valid file of the defaults
// (the test does exactly that).
func DefaultConfig() (string, error) {
	keys, err := configKeys()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(defaultConfigHeader)
	inList := ""
	for _, k := range keys {
		if inList != "" && strings.HasPrefix(k.Path, inList) {
			continue // the fields of list elements are in the examples
		}
		inList = ""
		ind := strings.Repeat("  ", k.Depth)
		if k.Depth == 0 {
			b.WriteString("\n")
		}
		if k.Doc != "" {
			fmt.Fprintf(&b, "%s# %s\n", ind, k.Doc)
		}
		switch {
		case k.Section:
			fmt.Fprintf(&b, "%s#%s:\n", ind, k.Name)
		case strings.HasPrefix(k.Type, "list of ") && k.Type != "list of strings":
			inList = k.Path + "[]."
			for _, line := range strings.SplitAfter(strings.TrimSuffix(checkExamples, "\n"), "\n") {
				b.WriteString(ind + strings.TrimSuffix(line, "\n") + "\n")
			}
			fmt.Fprintf(&b, "%s#%s: %s\n", ind, k.Name, yamlScalar(k.Default))
		default:
			fmt.Fprintf(&b, "%s#%s: %s\n", ind, k.Name, yamlScalar(k.Default))
		}
	}
	return b.String(), nil
}

// yamlScalar quotes a default where YAML would read it otherwise.
func yamlScalar(s string) string {
	if s == "" {
		return `""`
	}
	if s == `""` || strings.HasPrefix(s, "[") {
		return s
	}
	if strings.ContainsAny(s[:1], "{&*#?|-<>=!%@`'\"") || strings.Contains(s, ": ") || strings.Contains(s, " #") {
		return strconv.Quote(s)
	}
	return s
}
