// Package docs generates the parts of the documentation that must not
// drift from the code: the README's config, CLI and IAM references, the
// per-command pages under docs/cli (cobra's generator) and the commented
// default agent.yaml the packages ship. `make docs` writes them; the tests
// regenerate them and fail on any difference.
package docs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// README is the file whose marked sections are generated.
const README = "README.md"

// RepoRoot finds the repository root above dir: the directory of the
// go.mod that declares this module.
func RepoRoot(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("docs: %w", err)
	}
	for d := abs; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/rollback-agent/rollback-agent\n")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("docs: no go.mod of github.com/rollback-agent/rollback-agent above %s", abs)
		}
	}
}

// Generate renders every generated file: path relative to root to its
// content. The README's text outside the markers is taken from root.
func Generate(root string) (map[string][]byte, error) {
	out := map[string][]byte{}
	pages, err := CLIPages()
	if err != nil {
		return nil, err
	}
	for name, content := range pages {
		out[filepath.ToSlash(filepath.Join(CLIDir, name))] = []byte(content)
	}
	cfg, err := DefaultConfig()
	if err != nil {
		return nil, err
	}
	out[DefaultConfigPath] = []byte(cfg)
	configRef, err := ConfigReference()
	if err != nil {
		return nil, err
	}
	iamRef, err := IAMReference(root)
	if err != nil {
		return nil, err
	}
	readme, err := os.ReadFile(filepath.Join(root, README))
	if err != nil {
		return nil, fmt.Errorf("docs: %w", err)
	}
	spliced, err := splice(string(readme), map[string]string{
		"config-reference": configRef,
		"cli-reference":    CLIReference(),
		"iam-reference":    iamRef,
	})
	if err != nil {
		return nil, err
	}
	out[README] = []byte(spliced)
	return out, nil
}

// splice replaces the text between each pair of markers
//
//	<!-- BEGIN GENERATED: name (make docs) -->
//	<!-- END GENERATED: name -->
//
// with the section's content. Every section must have its markers.
func splice(doc string, sections map[string]string) (string, error) {
	names := make([]string, 0, len(sections))
	for n := range sections {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		begin := "<!-- BEGIN GENERATED: " + name + " (make docs) -->\n"
		end := "<!-- END GENERATED: " + name + " -->"
		i := strings.Index(doc, begin)
		j := strings.Index(doc, end)
		if i < 0 || j < i {
			return "", fmt.Errorf("docs: %s lacks the markers %q ... %q", README, strings.TrimSpace(begin), end)
		}
		doc = doc[:i+len(begin)] + strings.TrimSuffix(sections[name], "\n") + "\n" + doc[j:]
	}
	return doc, nil
}

// Drift lists the generated files that differ from the tree, and the
// pages under CLIDir that no command generates any more.
func Drift(root string) ([]string, error) {
	want, err := Generate(root)
	if err != nil {
		return nil, err
	}
	var drift []string
	for p, content := range want {
		have, err := os.ReadFile(filepath.Join(root, p))
		if err != nil || !bytes.Equal(have, content) {
			drift = append(drift, p)
		}
	}
	stale, err := stalePages(root, want)
	if err != nil {
		return nil, err
	}
	drift = append(drift, stale...)
	sort.Strings(drift)
	return drift, nil
}

// Write writes the generated files and removes stale pages.
func Write(root string) error {
	files, err := Generate(root)
	if err != nil {
		return err
	}
	var errs []error
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.WriteFile(full, content, 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	stale, err := stalePages(root, files)
	if err != nil {
		return err
	}
	for _, p := range stale {
		if err := os.Remove(filepath.Join(root, p)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("docs: %w", err)
	}
	return nil
}

func stalePages(root string, want map[string][]byte) ([]string, error) {
	have, err := filepath.Glob(filepath.Join(root, CLIDir, "*.md"))
	if err != nil {
		return nil, fmt.Errorf("docs: %w", err)
	}
	var stale []string
	for _, f := range have {
		p := filepath.ToSlash(filepath.Join(CLIDir, filepath.Base(f)))
		if _, ok := want[p]; !ok {
			stale = append(stale, p)
		}
	}
	return stale, nil
}
