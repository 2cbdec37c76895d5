package hostile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
)

// The kinds of hostile input, each with its own runner.
const (
	kindBundle   = "bundle"
	kindAppspec  = "appspec"
	kindConfig   = "config"
	kindManifest = "manifest"
	kindRequest  = "request"
	kindJournal  = "journal"
	kindInbox    = "inbox"
)

var kinds = []string{kindBundle, kindAppspec, kindConfig, kindManifest, kindRequest, kindJournal, kindInbox}

// hostileCase is one case.yaml: an input, how it was made, and what the
// product must answer. Its name is its directory under testdata/hostile.
type hostileCase struct {
	Kind string `yaml:"kind"`
	// Why says what the input attacks, for whoever reads a failure.
	Why string `yaml:"why"`
	// Input is the file of the case directory that is fed to the product;
	// each kind has a default (bundle.*, appspec.yml, agent.yaml, ...).
	Input string `yaml:"input"`
	// Build says how Input was made; TestCorpusIsReproducible rebuilds it
	// and compares, so the committed bytes and the spec never drift apart.
	Build *buildSpec `yaml:"build"`
	// Generate makes a large input at run time instead (never committed).
	Generate *generateSpec `yaml:"generate"`
	// Setup creates files before a bundle case (an existing file in the
	// destination, for file_exists_behavior), relative to the sentinel root.
	Setup map[string]string `yaml:"setup"`
	// Watch lists files outside the sentinel root that the case aims at
	// (/etc/passwd for the hard links): they must not change either. Only
	// the cases that name them watch them, so that something else on the
	// machine editing /etc/group cannot fail an unrelated case.
	Watch []string `yaml:"watch"`
	// Reload also feeds a config case to the running daemon with SIGHUP
	// (runReload): it must keep running on its previous config.
	Reload bool `yaml:"reload"`
	// Revision makes an appspec case load the case directory as an unpacked
	// revision (appspec.Load), so sources and scripts are checked on disk.
	Revision bool `yaml:"revision"`
	// Version and SignChannel shape the channel document of a manifest case.
	Version     string `yaml:"version"`
	SignChannel *bool  `yaml:"sign_channel"`
	// Damage is what happens to a journal case's state dir while its
	// agent is stopped (journal_test.go).
	Damage *journalDamage `yaml:"damage"`
	// Drop says how an inbox case's input arrives in the inbox.
	Drop   *inboxDrop `yaml:"drop"`
	Expect expect     `yaml:"expect"`

	name string // kind/dir
	dir  string
}

// expect is what the product must do with the input.
type expect struct {
	// Error must appear in the error the product reports: the deployment's
	// error, --check-config's output, the parse error, the channel's
	// refusal, or the JSON error of a response.
	Error string `yaml:"error"`
	// Contains are further substrings of that same text.
	Contains []string `yaml:"contains"`
	// Problems are file:line:col findings (config, appspec, and bundles
	// whose appspec is refused): each must be reported at its position.
	Problems []problem `yaml:"problems"`
	// Step is the deployment step that must fail (bundle).
	Step string `yaml:"step"`
	// Status and Code are the HTTP status and JSON error code (request).
	Status int    `yaml:"status"`
	Code   string `yaml:"code"`
	// BodyExcludes must not appear anywhere in a response (request).
	BodyExcludes []string `yaml:"body_excludes"`
	// Accepted is a positive control: the input must be accepted. A bundle
	// must then deploy, writing only under its dest/NAME.
	Accepted bool `yaml:"accepted"`
	// Stays: the dropped file must be left in the inbox, neither taken
	// nor refused (a name the inbox ignores, a copy still short of its
	// manifest).
	Stays bool `yaml:"stays"`
	// Warnings are substrings that must each appear in the warnings of an
	// accepted bundle's deployment.
	Warnings []string `yaml:"warnings"`
	// Installed maps paths under the sentinel root to what an accepted
	// bundle must leave there: "-> target" for a symlink, "dir", or a
	// file's content.
	Installed map[string]string `yaml:"installed"`
	// MaxSeconds and MaxMemory bound the time and memory the product may
	// spend refusing the input (bombs): memory is the peak RSS growth of
	// the daemon, the peak RSS of --check-config, or the bytes allocated
	// in-process.
	MaxSeconds float64 `yaml:"max_seconds"`
	MaxMemory  string  `yaml:"max_memory"`
	// Trouble is the needs_operator trouble a journal case's agent must
	// report (journal-damaged, journal-lost); with Error and no Trouble,
	// needs_operator for another reason (the engine stopped).
	Trouble string `yaml:"trouble"`
}

// problem is one expected finding at a position, "line:col" or "line".
type problem struct {
	At  string `yaml:"at"`
	Msg string `yaml:"msg"`
}

// result is one row of the final table.
type result struct {
	name, expected, got string
	ok                  bool
}

// repoRoot walks up from the working directory to go.mod: the corpus is
// at the root of the repository, shared by every kind.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

func corpusDir(t testing.TB) string { return filepath.Join(repoRoot(t), "testdata", "hostile") }

// loadCorpus reads every case.yaml under testdata/hostile/KIND/NAME/,
// strictly: a misspelt key in a case would otherwise silently weaken it.
func loadCorpus(t testing.TB) []*hostileCase {
	t.Helper()
	root := corpusDir(t)
	var cases []*hostileCase
	for _, kind := range kinds {
		ents, err := os.ReadDir(filepath.Join(root, kind))
		if err != nil {
			t.Fatalf("corpus: %v", err)
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			dir := filepath.Join(root, kind, e.Name())
			c, err := readCase(dir)
			if err != nil {
				t.Fatalf("corpus %s/%s: %v", kind, e.Name(), err)
			}
			if c.Kind != kind {
				t.Fatalf("corpus %s/%s: kind %q in a %s directory", kind, e.Name(), c.Kind, kind)
			}
			c.name, c.dir = kind+"/"+e.Name(), dir
			cases = append(cases, c)
		}
	}
	sort.Slice(cases, func(i, j int) bool { return cases[i].name < cases[j].name })
	return cases
}

func readCase(dir string) (*hostileCase, error) {
	b, err := os.ReadFile(filepath.Join(dir, "case.yaml"))
	if err != nil {
		return nil, err
	}
	var c hostileCase
	if err := yaml.UnmarshalWithOptions(b, &c, yaml.Strict()); err != nil {
		return nil, fmt.Errorf("case.yaml: %w", err)
	}
	if c.Why == "" {
		return nil, errors.New("case.yaml: why is empty: say what the input attacks")
	}
	if c.Expect.Error == "" && !c.Expect.Accepted && !c.Expect.Stays && c.Expect.Status == 0 && len(c.Expect.Problems) == 0 {
		return nil, errors.New("case.yaml: expect says nothing")
	}
	if c.Input == "" {
		c.Input = defaultInput(c.Kind)
	}
	if c.Input == "" {
		return nil, fmt.Errorf("case.yaml: unknown kind %q", c.Kind)
	}
	return &c, nil
}

func defaultInput(kind string) string {
	switch kind {
	case kindBundle:
		return "bundle"
	case kindAppspec:
		return "appspec.yml"
	case kindConfig:
		return "agent.yaml"
	case kindManifest:
		return "manifest.json"
	case kindRequest:
		return "request.http"
	case kindJournal:
		return "journal.db"
	case kindInbox:
		return "bundle.tgz"
	}
	return ""
}

// inputPath returns the file to feed the product: the committed input,
// or one generated into tmp.
func (c *hostileCase) inputPath(t testing.TB, tmp string) string {
	t.Helper()
	if c.Generate == nil {
		return filepath.Join(c.dir, c.Input)
	}
	b, err := c.Generate.bytes()
	if err != nil {
		t.Fatalf("%s: generate: %v", c.name, err)
	}
	p := filepath.Join(tmp, c.Input)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// expected is the table's summary of what the case wants.
func (c *hostileCase) expected() string {
	var parts []string
	if c.Expect.Status != 0 {
		parts = append(parts, strconv.Itoa(c.Expect.Status)+" "+c.Expect.Code)
	}
	if c.Expect.Step != "" {
		parts = append(parts, c.Expect.Step+" fails")
	}
	if c.Expect.Trouble != "" {
		parts = append(parts, "needs_operator "+c.Expect.Trouble)
	}
	if c.Expect.Accepted {
		parts = append(parts, "accepted")
	}
	if c.Expect.Stays {
		parts = append(parts, "left in the inbox")
	}
	if c.Expect.Error != "" {
		parts = append(parts, strconv.Quote(c.Expect.Error))
	}
	for _, p := range c.Expect.Problems {
		parts = append(parts, "@"+p.At)
	}
	if c.Expect.MaxMemory != "" {
		parts = append(parts, "mem<="+c.Expect.MaxMemory)
	}
	if c.Expect.MaxSeconds != 0 {
		parts = append(parts, fmt.Sprintf("<=%gs", c.Expect.MaxSeconds))
	}
	return strings.Join(parts, " ")
}

// checkText checks the error text against Error, Contains and Problems
// (with file as the problems' file name) and returns what is missing.
func (e *expect) checkText(text, file string) []string {
	var missing []string
	for _, s := range append([]string{e.Error}, e.Contains...) {
		if s != "" && !strings.Contains(text, s) {
			missing = append(missing, fmt.Sprintf("lacks %q", s))
		}
	}
	for _, p := range e.Problems {
		if !hasProblem(text, file, p) {
			missing = append(missing, fmt.Sprintf("lacks the problem %s:%s: ...%s...", file, p.At, p.Msg))
		}
	}
	return missing
}

// hasProblem looks for one line "FILE:LINE:COL: ...MSG..." (or
// "FILE:LINE:" when At names only the line).
func hasProblem(text, file string, p problem) bool {
	prefix := file + ":" + p.At + ":"
	for _, line := range strings.Split(text, "\n") {
		i := strings.Index(line, prefix)
		if i >= 0 && strings.Contains(line[i+len(prefix):], p.Msg) {
			return true
		}
	}
	return false
}

// checkBounds enforces max_seconds and max_memory; grown reports the
// memory the product took for this input.
func checkBounds(t *testing.T, c *hostileCase, r *result, took time.Duration, grown func() (int64, error)) {
	t.Helper()
	if c.Expect.MaxSeconds > 0 && took.Seconds() > c.Expect.MaxSeconds {
		t.Errorf("%s: took %s, more than %gs", c.name, took.Round(time.Millisecond), c.Expect.MaxSeconds)
		r.ok = false
		r.got += fmt.Sprintf(" | took %s", took.Round(time.Millisecond))
	}
	if c.Expect.MaxMemory == "" {
		return
	}
	limit, err := parseSize(c.Expect.MaxMemory)
	if err != nil {
		t.Fatalf("%s: max_memory: %v", c.name, err)
	}
	n, err := grown()
	if err != nil {
		t.Fatalf("%s: measure memory: %v", c.name, err)
	}
	r.got += fmt.Sprintf(" | %d MiB", n>>20)
	if n > limit {
		t.Errorf("%s: took %d MiB of memory for this input, more than %s", c.name, n>>20, c.Expect.MaxMemory)
		r.ok = false
	}
}

// parseSize reads "256MiB", "10MB" or a plain number of bytes.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
			return v * u.mult, err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// logTable prints case → expected → got, one line each, at the end.
func logTable(t *testing.T, rows []result) {
	t.Helper()
	w1, w2 := len("case"), len("expected")
	for _, r := range rows {
		w1, w2 = max(w1, len(r.name)), max(w2, min(len(r.expected), 70))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-4s %-*s  %-*s  %s\n", "", w1, "case", w2, "expected", "got")
	pass := 0
	for _, r := range rows {
		mark := "ok"
		if !r.ok {
			mark = "FAIL"
		} else {
			pass++
		}
		fmt.Fprintf(&b, "%-4s %-*s  %-*s  %s\n", mark, w1, r.name, w2, clip(r.expected, 70), clip(oneLine(r.got), 110))
	}
	fmt.Fprintf(&b, "%d of %d cases as expected", pass, len(rows))
	t.Log(b.String())
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
