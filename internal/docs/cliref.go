package docs

import (
	"bytes"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/rollback-agent/rollback-agent/internal/cli/workstation"
)

// CLIDir holds one generated page per agentctl command.
const CLIDir = "docs/cli"

// documented lists the commands that get a page, depth first: the ones
// cobra would list in help (hidden and help topics are left out).
func documented(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	children := c.Commands()
	sort.Slice(children, func(i, j int) bool { return children[i].Name() < children[j].Name() })
	for _, ch := range children {
		if !ch.IsAvailableCommand() || ch.IsAdditionalHelpTopicCommand() {
			continue
		}
		out = append(out, documented(ch)...)
	}
	return out
}

func pageName(c *cobra.Command) string {
	return strings.ReplaceAll(c.CommandPath(), " ", "_") + ".md"
}

// CLIPages renders the pages with cobra's markdown generator: file name
// (under CLIDir) to content.
func CLIPages() (map[string]string, error) {
	pages := map[string]string{}
	for _, c := range documented(workstation.Command()) {
		var buf bytes.Buffer
		if err := doc.GenMarkdownCustom(c, &buf, func(s string) string { return s }); err != nil {
			return nil, fmt.Errorf("docs: %s: %w", c.CommandPath(), err)
		}
		pages[pageName(c)] = buf.String()
	}
	return pages, nil
}

// CLIReference is the README's index of the pages.
func CLIReference() string {
	var b strings.Builder
	b.WriteString("| command | what it does |\n|---|---|\n")
	for _, c := range documented(workstation.Command()) {
		if !c.HasParent() {
			continue
		}
		fmt.Fprintf(&b, "| [`%s`](%s) | %s |\n", c.CommandPath(), path.Join(CLIDir, pageName(c)), cell(c.Short))
	}
	fmt.Fprintf(&b, "\nGlobal flags (every command): see [`agentctl`](%s).\n", path.Join(CLIDir, "agentctl.md"))
	return b.String()
}
