package appspec

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/yamlx"
)

// lookupOf fakes a user or group database holding exactly names, so that
// tests do not depend on the accounts of the machine running them.
func lookupOf(names ...string) func(string) error {
	return func(name string) error {
		for _, n := range names {
			if n == name {
				return nil
			}
		}
		return fmt.Errorf("unknown name %s", name)
	}
}

func testOptions() Options {
	return Options{
		LookupUser:  lookupOf("root", "bob", "codedeployuser", "wordpress_user", "ec2-user"),
		LookupGroup: lookupOf("root", "writers", "wordpress_group"),
	}
}

// mustParse parses src with the fake accounts and fails on any error.
func mustParse(t *testing.T, src string) *AppSpec {
	t.Helper()
	spec, err := Parse("appspec.yml", []byte(src), testOptions())
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return spec
}

// mustFail parses src with the fake accounts and returns its *yamlx.Error.
func mustFail(t *testing.T, src string) *yamlx.Error {
	t.Helper()
	return failWith(t, src, testOptions())
}

func failWith(t *testing.T, src string, opts Options) *yamlx.Error {
	t.Helper()
	spec, err := Parse("appspec.yml", []byte(src), opts)
	if err == nil {
		t.Fatalf("Parse succeeded, want an error; got %+v", spec)
	}
	var ye *yamlx.Error
	if !errors.As(err, &ye) {
		t.Fatalf("error is %T, want *yamlx.Error: %v", err, err)
	}
	return ye
}

// wantIn asserts that each fragment occurs in the error text.
func wantIn(t *testing.T, err error, fragments ...string) {
	t.Helper()
	msg := err.Error()
	for _, f := range fragments {
		if !strings.Contains(msg, f) {
			t.Errorf("error lacks %q; full error:\n%s", f, msg)
		}
	}
}

// errorCount counts the problems that are errors, not warnings.
func errorCount(e *yamlx.Error) int {
	n := 0
	for _, p := range e.Problems {
		if !p.Warning {
			n++
		}
	}
	return n
}

const header = "version: 0.0\nos: linux\n"

// The appspec of the CodeDeploy User Guide's EC2/on-premises example.
const docsExample = `version: 0.0
os: linux
files:
  - source: Config/config.txt
    destination: /webapps/Config
  - source: source
    destination: /webapps/myApp
hooks:
  BeforeInstall:
    - location: Scripts/UnzipResourceBundle.sh
    - location: Scripts/UnzipDataBundle.sh
  AfterInstall:
    - location: Scripts/RunResourceTests.sh
      timeout: 180
  ApplicationStart:
    - location: Scripts/RunFunctionalTests.sh
      timeout: 3600
  ValidateService:
    - location: Scripts/MonitorService.sh
      timeout: 3600
      runas: codedeployuser
`

func TestParseDocsExample(t *testing.T) {
	spec := mustParse(t, docsExample)
	if spec.File != "appspec.yml" || spec.Version != "0.0" || spec.OS != "linux" || spec.FileExistsBehavior != Disallow {
		t.Errorf("header fields: %+v", spec)
	}
	wantFiles := []File{
		{Source: "Config/config.txt", Destination: "/webapps/Config", Line: 4},
		{Source: "source", Destination: "/webapps/myApp", Line: 6},
	}
	if !reflect.DeepEqual(spec.Files, wantFiles) {
		t.Errorf("files = %+v, want %+v", spec.Files, wantFiles)
	}
	wantHooks := map[string][]Script{
		BeforeInstall: {
			{Location: "Scripts/UnzipResourceBundle.sh", Timeout: DefaultTimeout, Line: 10},
			{Location: "Scripts/UnzipDataBundle.sh", Timeout: DefaultTimeout, Line: 11},
		},
		AfterInstall:     {{Location: "Scripts/RunResourceTests.sh", Timeout: 180 * time.Second, Line: 13}},
		ApplicationStart: {{Location: "Scripts/RunFunctionalTests.sh", Timeout: time.Hour, Line: 16}},
		ValidateService:  {{Location: "Scripts/MonitorService.sh", Timeout: time.Hour, RunAs: "codedeployuser", Line: 19}},
	}
	if !reflect.DeepEqual(spec.Hooks, wantHooks) {
		t.Errorf("hooks = %+v, want %+v", spec.Hooks, wantHooks)
	}
	if len(spec.Warnings) != 0 {
		t.Errorf("warnings: %v", spec.Warnings)
	}
}

func TestParseWholeRevisionSources(t *testing.T) {
	spec := mustParse(t, header+`files:
  - source: /
    destination: /var/www/html/WordPress/
  - source: .
    destination: /srv//a/../b
  - source: /app/config
    destination: /etc/app
  - source: app/../lib/
    destination: /opt/lib
file_exists_behavior: overwrite
`)
	want := []File{
		{Source: "/", Destination: "/var/www/html/WordPress", Line: 4},
		{Source: "/", Destination: "/srv/b", Line: 6},
		{Source: "app/config", Destination: "/etc/app", Line: 8},
		{Source: "lib", Destination: "/opt/lib", Line: 10},
	}
	if !reflect.DeepEqual(spec.Files, want) {
		t.Errorf("files = %+v, want %+v", spec.Files, want)
	}
	if spec.FileExistsBehavior != Overwrite {
		t.Errorf("file_exists_behavior = %q, want OVERWRITE", spec.FileExistsBehavior)
	}
}

func TestParseFileExistsBehavior(t *testing.T) {
	for in, want := range map[string]string{"": Disallow, "DISALLOW": Disallow, "Retain": Retain, "OVERWRITE": Overwrite} {
		spec := mustParse(t, header+"file_exists_behavior: "+in+"\n")
		if spec.FileExistsBehavior != want {
			t.Errorf("file_exists_behavior: %q gave %q, want %q", in, spec.FileExistsBehavior, want)
		}
	}
	wantIn(t, mustFail(t, header+"file_exists_behavior: MERGE\n"),
		`appspec.yml:3:23: file_exists_behavior: "MERGE" is not one of DISALLOW, OVERWRITE, RETAIN`)
}

func TestParseVersion(t *testing.T) {
	spec := mustParse(t, "version: 0.0\nos: linux\n")
	if spec.Version != "0.0" || len(spec.Warnings) != 0 {
		t.Errorf("unquoted 0.0: version %q, warnings %v", spec.Version, spec.Warnings)
	}
	// A quoted "0.0" is a string, which CodeDeploy's v1 agent refuses.
	spec = mustParse(t, "version: \"0.0\"\nos: linux\n")
	if spec.Version != "0.0" || len(spec.Differences) != 1 || !strings.Contains(spec.Differences[0], "appspec.yml:1:10: codedeploy: version: \"0.0\" is quoted") {
		t.Errorf("quoted 0.0: version %q, differences %v", spec.Version, spec.Differences)
	}
	// The integer 0 equals 0.0 for both CodeDeploy agents (issue 14.4).
	for _, zero := range []string{"0", "00", "0.00"} {
		spec = mustParse(t, "version: "+zero+"\nos: linux\n")
		if spec.Version != "0.0" || len(spec.Warnings)+len(spec.Differences) != 0 {
			t.Errorf("version %s: %q %v %v", zero, spec.Version, spec.Warnings, spec.Differences)
		}
	}
	for _, bad := range []string{"1.0", "1", "'0'", "'1'", "[0.0]", "latest", ""} {
		err := mustFail(t, "version: "+bad+"\nos: linux\n")
		wantIn(t, err, "appspec.yml:1:")
		if !strings.Contains(err.Error(), "version:") {
			t.Errorf("version %q: %v", bad, err)
		}
	}
	wantIn(t, mustFail(t, "os: linux\n"), "appspec.yml:1:1: version: missing")
}

func TestParseOS(t *testing.T) {
	wantIn(t, mustFail(t, "version: 0.0\nos: windows\n"), "appspec.yml:2:5: os: windows revisions need the CodeDeploy Windows agent; this agent deploys Linux revisions")
	wantIn(t, mustFail(t, "version: 0.0\nos: Linux\n"), `appspec.yml:2:5: os: unsupported operating system "Linux"`)
	wantIn(t, mustFail(t, "version: 0.0\nos:\n"), "appspec.yml:2:5: os: missing value")
	wantIn(t, mustFail(t, "version: 0.0\n"), "appspec.yml:1:1: os: missing")
}

func TestParseEmptyAndNonMapping(t *testing.T) {
	for name, src := range map[string]string{"empty": "", "comments": "# nothing\n", "null": "~\n", "doc marker": "---\n"} {
		err := mustFail(t, src)
		if !strings.Contains(err.Error(), "empty appspec") {
			t.Errorf("%s: %v", name, err)
		}
	}
	wantIn(t, mustFail(t, "- version: 0.0\n"), "appspec.yml:1:1: the appspec must be a mapping")
	wantIn(t, mustFail(t, "just text\n"), "the appspec must be a mapping")
	wantIn(t, mustFail(t, "version: [0.0\n"), "YAML syntax")
}

func TestParseUnknownKeysAreWarnings(t *testing.T) {
	spec := mustParse(t, `version: 0.0
os: linux
Hooks: {}
resources: []
files:
  - source: /
    destination: /srv/app
    owner: bob
permissions:
  - object: /srv/app
    recursive: true
    context:
      type: httpd_sys_content_t
      level: s0
hooks:
  AfterInstall:
    - location: scripts/a.sh
      runAs: bob
`)
	want := []string{
		`appspec.yml:3:1: warning: unknown key "Hooks" at the top level is ignored by CodeDeploy (did you mean "hooks"?)`,
		`appspec.yml:4:1: warning: unknown key "resources" at the top level`,
		`appspec.yml:8:5: warning: unknown key "owner" in files[0]`,
		`appspec.yml:11:5: warning: unknown key "recursive" in permissions[0]`,
		`appspec.yml:14:7: warning: unknown key "level" in permissions[0].context`,
		`appspec.yml:18:7: warning: unknown key "runAs" in hooks.AfterInstall[0] is ignored by CodeDeploy (did you mean "runas"?)`,
	}
	if len(spec.Warnings) != len(want) {
		t.Fatalf("got %d warnings, want %d:\n%s", len(spec.Warnings), len(want), strings.Join(spec.Warnings, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(spec.Warnings[i], w) {
			t.Errorf("warning %d = %q, want prefix %q", i, spec.Warnings[i], w)
		}
	}
}

// A misspelt or unknown event would never run: CodeDeploy fails such a
// deployment when the service lists the possible events, and this agent
// always does (issue 14.7), suggesting the closest event.
func TestParseUnknownEventsAreErrors(t *testing.T) {
	err := mustFail(t, header+`hooks:
  AfterInstall:
    - location: scripts/a.sh
  Afterinstall:
    - location: scripts/b.sh
  AfterInstal:
    - location: scripts/b.sh
  ApplicationStrat: []
  CustomEvent:
    - location: scripts/c.sh
`)
	wantIn(t, err,
		`appspec.yml:6:3: hooks: unknown lifecycle event "Afterinstall" (did you mean "AfterInstall"?) would never run; CodeDeploy fails a deployment whose appspec names unknown lifecycle events`,
		`appspec.yml:8:3: hooks: unknown lifecycle event "AfterInstal" (did you mean "AfterInstall"?)`,
		`appspec.yml:10:3: hooks: unknown lifecycle event "ApplicationStrat" (did you mean "ApplicationStart"?)`,
		`appspec.yml:11:3: hooks: unknown lifecycle event "CustomEvent" would never run`,
	)
	if n := errorCount(err); n != 4 {
		t.Errorf("%d errors: %v", n, err)
	}
}

// Lower-case file_exists_behavior works here as with the API override, but
// CodeDeploy's agent compares the appspec's value as written and fails.
func TestParseLowerCaseFileExistsBehaviorIsADifference(t *testing.T) {
	spec := mustParse(t, header+"file_exists_behavior: overwrite\n")
	if spec.FileExistsBehavior != Overwrite || len(spec.Differences) != 1 ||
		!strings.HasPrefix(spec.Differences[0], `appspec.yml:3:23: codedeploy: file_exists_behavior: "overwrite" is read as OVERWRITE here, but CodeDeploy's agent fails the deployment on it`) {
		t.Errorf("%q %v", spec.FileExistsBehavior, spec.Differences)
	}
}

// A file with many mistakes reports every one of them, each at its line.
func TestParseReportsEveryProblem(t *testing.T) {
	src := `version: 1.0
os: linux
files:
  - source: ../outside
    destination: relative/dir
  - destination: /srv/app
file_exists_behavior: MERGE
permissions:
  - object: /srv/app
    mode: u+x
    owner: nobody-here
    acls:
      - u::rwx
    context:
      type: httpd_t
      range: s16
      role: object_r
    type: [file, socket]
  - pattern: "*.sh"
hooks:
  BeforeInstall:
    - location: scripts/a.sh
      timeout: abc
    - timeout: 10
  AfterInstall:
    - location: scripts/b.sh
      timeout: 3000
    - location: scripts/c.sh
      timeout: "900"
      runas: ghost
      sudo: maybe
  ApplicationStart: scripts/start.sh
unknown_top: 1
`
	err := mustFail(t, src)
	want := []string{
		`appspec.yml:1:10: version: "1.0" is not a supported version`,
		`appspec.yml:4:13: files[0].source: "../outside" leaves the revision`,
		`appspec.yml:5:18: files[0].destination: "relative/dir" must be an absolute path`,
		`appspec.yml:6:5: files[1].source: missing`,
		`appspec.yml:7:23: file_exists_behavior: "MERGE" is not one of DISALLOW, OVERWRITE, RETAIN`,
		`appspec.yml:10:11: permissions[0].mode: "u+x" is not a mode`,
		`appspec.yml:11:12: permissions[0].owner: user "nobody-here" does not exist on this host`,
		`appspec.yml:13:9: permissions[0].acls[0]: "u::rwx" sets a base entry`,
		`appspec.yml:16:14: permissions[0].context.range: "s16" has a sensitivity above s15`,
		`appspec.yml:17:7: permissions[0].context.role: SELinux roles cannot be set`,
		`appspec.yml:18:18: permissions[0].type[1]: "socket" is not a permission type`,
		`appspec.yml:19:5: permissions[1].object: missing`,
		`appspec.yml:23:16: hooks.BeforeInstall[0].timeout: "abc" is not a number of seconds`,
		`appspec.yml:24:7: hooks.BeforeInstall[1].location: missing`,
		`appspec.yml:25:3: warning: hooks.AfterInstall: the scripts' timeouts add up to 3900s`,
		`appspec.yml:30:14: hooks.AfterInstall[1].runas: user "ghost" does not exist on this host`,
		`appspec.yml:31:13: hooks.AfterInstall[1].sudo: want true or false, got "maybe"`,
		`appspec.yml:32:21: hooks.ApplicationStart: want a list of scripts`,
		`appspec.yml:33:1: warning: unknown key "unknown_top"`,
	}
	wantIn(t, err, want...)
	if got := errorCount(err); got != len(want)-2 {
		t.Errorf("got %d errors, want %d:\n%v", got, len(want)-2, err)
	}
	if !strings.HasPrefix(err.Error(), fmt.Sprintf("appspec.yml: %d problem(s)", len(want)-2)) {
		t.Errorf("header: %s", strings.SplitN(err.Error(), "\n", 2)[0])
	}
}

func TestParseRequiredFileFields(t *testing.T) {
	err := mustFail(t, header+`files:
  - source: ""
    destination:
  - "not a mapping"
  - source: app
    destination: " "
`)
	wantIn(t, err,
		`appspec.yml:4:13: files[0].source: must not be empty`,
		`appspec.yml:5:17: files[0].destination: missing value`,
		`appspec.yml:6:5: files[1]: want a mapping of keys, got a string`,
		`appspec.yml:8:18: files[2].destination: must not be empty`,
	)
	wantIn(t, mustFail(t, header+"files: /srv\n"), "appspec.yml:3:8: files: want a list, got a string")
	wantIn(t, mustFail(t, header+"hooks: [a]\n"), "appspec.yml:3:8: hooks: want a mapping of keys, got a list")
}

func TestParseYAMLFeatures(t *testing.T) {
	// Anchors are stripped by yamlx; aliases and merge keys are refused
	// rather than half-understood.
	spec := mustParse(t, header+`files:
  - &f {source: /, destination: /srv/app}
`)
	if len(spec.Files) != 1 || spec.Files[0].Destination != "/srv/app" {
		t.Errorf("flow mapping with anchor: %+v", spec.Files)
	}
	err := mustFail(t, header+`files:
  - source: &s app
    destination: /srv/app
  - source: *s
    destination: /srv/other
`)
	wantIn(t, err, "appspec.yml:6:13: files[1].source: want a string, got an alias")
	// goccy itself rejects duplicate keys, as a syntax error.
	wantIn(t, mustFail(t, header+"os: linux\n"), `appspec.yml:3:1: YAML syntax: mapping key "os" already defined`)
}
