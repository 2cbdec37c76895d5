package push

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/bundle"
)

// CodeDeploy with no appspec change: `push --codedeploy-app` adds two
// hooks to the revision's appspec in the bundle (the directory is left
// alone), merged with the user's own: the checkpoint first in
// BeforeInstall, the health gate last in ValidateService. They run
// `agentctl codedeploy before-install|validate-service`, so every host of
// the deployment group that runs AWS's CodeDeploy agent beside
// rollback-agent gets a rollback point before each deployment and the
// agent's health checks as its gate.

// InjectedDir is the bundle folder of the injected hook scripts.
const InjectedDir = "rollback-agent-codedeploy"

// The injected scripts and their timeouts (seconds): the checkpoint
// returns once its point in time is fixed (checkpoint.create_timeout is
// 3 minutes by default); the gate lasts one health assessment
// (health.assess_timeout, 1 minute by default, plus its grace).
const (
	InjectedBeforeInstall   = InjectedDir + "/before_install.sh"
	InjectedValidateService = InjectedDir + "/validate_service.sh"
	injectedBeforeTimeout   = 300
	injectedGateTimeout     = 900
)

// injectedScript is a hook that hands over to agentctl. Inside
// rollback-agent's own deployment of the same bundle (from a channel) it
// does nothing: the agent takes its own checkpoint and is its own gate.
func injectedScript(event, sub, version string, timeout int) []byte {
	return fmt.Appendf(nil, `#!/bin/sh
# %s hook added by agentctl push --codedeploy-app: rollback-agent %s.
set -eu
if [ -n "${ROLLBACK_AGENT_DEPLOYMENT_REVISION+set}" ]; then
	echo "run by rollback-agent's own deployment: it takes its own checkpoint and is its own health gate"
	exit 0
fi
exec agentctl --timeout %ds codedeploy %s --revision '%s'
`, event, map[string]string{"before-install": "takes this host's rollback point before CodeDeploy changes it",
		"validate-service": "gates the deployment on this host's health checks"}[sub], timeout-10, sub, version)
}

// injectCodeDeploy returns the appspec with the two hooks added and the
// files the bundle gains (the appspec, replacing the directory's, and
// the scripts). The result is parsed again and must say what the user's
// appspec said, with exactly the two hooks more; anything else (YAML the
// rewrite cannot place them in) stops the push.
func injectCodeDeploy(file string, spec []byte, version string, opts appspec.Options) ([]byte, error) {
	if err := injectableVersion(version); err != nil {
		return nil, err
	}
	f, err := parser.ParseBytes(spec, parser.ParseComments)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(f.Docs) != 1 || f.Docs[0].Body == nil {
		return nil, fmt.Errorf("%s: want one YAML document", file)
	}
	before := hookEntry{Location: InjectedBeforeInstall, Timeout: injectedBeforeTimeout}
	gate := hookEntry{Location: InjectedValidateService, Timeout: injectedGateTimeout}
	if err := addHook(f, appspec.BeforeInstall, before, true); err != nil {
		return nil, fmt.Errorf("%s: add the BeforeInstall hook: %w", file, err)
	}
	if err := addHook(f, appspec.ValidateService, gate, false); err != nil {
		return nil, fmt.Errorf("%s: add the ValidateService hook: %w", file, err)
	}
	out := []byte("# agentctl push --codedeploy-app added the hooks in " + InjectedDir + "/ (a checkpoint\n" +
		"# first in BeforeInstall, the health gate last in ValidateService) to this appspec.\n" + f.String())
	if !bytes.HasSuffix(out, []byte("\n")) {
		out = append(out, '\n')
	}
	if err := sameButHooks(file, spec, out, opts); err != nil {
		return nil, fmt.Errorf("%s: adding the CodeDeploy hooks would change it otherwise (%w): add them to the appspec yourself, "+
			"%s first in BeforeInstall and %s last in ValidateService, or push without --codedeploy-app", file, err, InjectedBeforeInstall, InjectedValidateService)
	}
	return out, nil
}

// injectableVersion: the version is written into a shell script, quoted.
var versionChars = regexp.MustCompile(`^[A-Za-z0-9._+-]+$`)

func injectableVersion(v string) error {
	if !versionChars.MatchString(v) {
		return fmt.Errorf("version %q cannot be written into the injected hooks", v)
	}
	return nil
}

type hookEntry struct {
	Location string `yaml:"location"`
	Timeout  int    `yaml:"timeout"`
}

// addHook puts entry into hooks.event: first or last of an existing list,
// or as a new list (and a new hooks mapping) when there is none. A list
// that already names the script is left alone.
func addHook(f *ast.File, event string, entry hookEntry, first bool) error {
	p, err := yaml.PathString("$.hooks." + event)
	if err != nil {
		return err
	}
	if n, err := p.FilterFile(f); err == nil {
		if seq, ok := n.(*ast.SequenceNode); ok {
			if strings.Contains(seq.String(), entry.Location) {
				return nil
			}
			node, err := yaml.ValueToNode(entry, yaml.Flow(seq.IsFlowStyle))
			if err != nil {
				return err
			}
			if first {
				seq.Values = append([]ast.Node{node}, seq.Values...)
			} else {
				seq.Values = append(seq.Values, node)
			}
			return nil
		}
		if _, ok := n.(*ast.NullNode); !ok {
			return fmt.Errorf("hooks.%s is %s, not a list", event, n.Type())
		}
	}
	hp, _ := yaml.PathString("$.hooks")
	if hooks, err := hp.FilterFile(f); err == nil {
		if m, ok := hooks.(*ast.MappingNode); ok {
			return merge(f, hp, map[string][]hookEntry{event: {entry}}, m.IsFlowStyle)
		}
		if _, ok := hooks.(*ast.NullNode); !ok {
			return fmt.Errorf("hooks is %s, not a mapping", hooks.Type())
		}
	}
	root, _ := yaml.PathString("$")
	flow := false
	if m, ok := f.Docs[0].Body.(*ast.MappingNode); ok {
		flow = m.IsFlowStyle
	}
	return merge(f, root, map[string]map[string][]hookEntry{"hooks": {event: {entry}}}, flow)
}

// merge merges v into the mapping at p, in its style.
func merge(f *ast.File, p *yaml.Path, v any, flow bool) error {
	b, err := yaml.MarshalWithOptions(v, yaml.Flow(flow))
	if err != nil {
		return err
	}
	add, err := parser.ParseBytes(b, 0)
	if err != nil {
		return err
	}
	return p.MergeFromNode(f, add.Docs[0].Body)
}

// sameButHooks parses both appspecs with the agent's own parser and checks
// that they say the same, but for the two injected hooks.
func sameButHooks(file string, before, after []byte, opts appspec.Options) error {
	a, err := appspec.Parse(file, before, opts)
	if err != nil {
		return err
	}
	b, err := appspec.Parse(file, after, opts)
	if err != nil {
		return fmt.Errorf("the rewritten appspec is invalid: %w", err)
	}
	want := map[string][]string{}
	for ev, scripts := range a.Hooks {
		for _, s := range scripts {
			want[ev] = append(want[ev], s.Location)
		}
	}
	if !slices.Contains(want[appspec.BeforeInstall], InjectedBeforeInstall) {
		want[appspec.BeforeInstall] = append([]string{InjectedBeforeInstall}, want[appspec.BeforeInstall]...)
	}
	if !slices.Contains(want[appspec.ValidateService], InjectedValidateService) {
		want[appspec.ValidateService] = append(want[appspec.ValidateService], InjectedValidateService)
	}
	got := map[string][]string{}
	for ev, scripts := range b.Hooks {
		for _, s := range scripts {
			got[ev] = append(got[ev], s.Location)
		}
	}
	if fmt.Sprint(want) != fmt.Sprint(got) {
		return fmt.Errorf("the hooks would be %v, want %v", got, want)
	}
	for ev := range a.Hooks {
		for i, s := range a.Hooks[ev] {
			j := slices.IndexFunc(b.Hooks[ev], func(x appspec.Script) bool { return x.Location == s.Location })
			if j < 0 || b.Hooks[ev][j].Timeout != s.Timeout || b.Hooks[ev][j].RunAs != s.RunAs || b.Hooks[ev][j].Sudo != s.Sudo {
				return fmt.Errorf("hook %d of %s (%s) would change", i+1, ev, s.Location)
			}
		}
	}
	if x, y := withoutHooks(a), withoutHooks(b); x != y {
		return fmt.Errorf("files, permissions or settings would change:\n%s\n%s", x, y)
	}
	return nil
}

var lineField = regexp.MustCompile(`"line":\d+`)

// withoutHooks is the spec's JSON without hooks, positions and warnings.
func withoutHooks(s *appspec.AppSpec) string {
	c := *s
	c.Hooks, c.Warnings = nil, nil
	b, _ := json.Marshal(c)
	return lineField.ReplaceAllString(string(b), `"line":0`)
}

// injectedFiles are the files a bundle gains for CodeDeploy, beside the
// rewritten appspec.
func injectedFiles(version string, modTime bundle.ExtraFile) []bundle.ExtraFile {
	mk := func(name string, body []byte) bundle.ExtraFile {
		return bundle.ExtraFile{Name: name, Content: body, Mode: 0o755, ModTime: modTime.ModTime}
	}
	return []bundle.ExtraFile{
		mk(InjectedBeforeInstall, injectedScript("BeforeInstall", "before-install", version, injectedBeforeTimeout)),
		mk(InjectedValidateService, injectedScript("ValidateService", "validate-service", version, injectedGateTimeout)),
	}
}
