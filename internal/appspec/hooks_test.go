package appspec

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// The hooks example of the CodeDeploy User Guide, with every scriptable
// event including the traffic ones, timeouts, runas and the undocumented
// sudo.
func TestParseHooksAllEvents(t *testing.T) {
	spec := mustParse(t, header+`hooks:
  BeforeBlockTraffic:
    - location: scripts/deregister.sh
  AfterBlockTraffic:
    - location: scripts/drained.sh
  ApplicationStop:
    - location: scripts/stop_server.sh
      timeout: 300
      runas: root
  BeforeInstall:
    - location: scripts/install_dependencies.sh
      timeout: "300"
      runas: root
      sudo: true
  AfterInstall:
    - location: /scripts/change_permissions.sh
      timeout: 1200
      runas: ec2-user
      sudo: yes
  ApplicationStart:
    - location: "  scripts/start_server.sh  "
  ValidateService:
    - location: ./scripts/check.sh
      sudo: false
  BeforeAllowTraffic:
    - location: scripts/warm.sh
  AfterAllowTraffic:
    - location: scripts/register.sh
      timeout: 60
`)
	want := map[string][]Script{
		BeforeBlockTraffic: {{Location: "scripts/deregister.sh", Timeout: time.Hour, Line: 5}},
		AfterBlockTraffic:  {{Location: "scripts/drained.sh", Timeout: time.Hour, Line: 7}},
		ApplicationStop:    {{Location: "scripts/stop_server.sh", Timeout: 300 * time.Second, RunAs: "root", Line: 9}},
		BeforeInstall:      {{Location: "scripts/install_dependencies.sh", Timeout: 300 * time.Second, RunAs: "root", Sudo: true, Line: 13}},
		AfterInstall:       {{Location: "scripts/change_permissions.sh", Timeout: 1200 * time.Second, RunAs: "ec2-user", Sudo: true, Line: 18}},
		ApplicationStart:   {{Location: "scripts/start_server.sh", Timeout: time.Hour, Line: 23}},
		ValidateService:    {{Location: "scripts/check.sh", Timeout: time.Hour, Line: 25}},
		BeforeAllowTraffic: {{Location: "scripts/warm.sh", Timeout: time.Hour, Line: 28}},
		AfterAllowTraffic:  {{Location: "scripts/register.sh", Timeout: time.Minute, Line: 30}},
	}
	if !reflect.DeepEqual(spec.Hooks, want) {
		t.Errorf("hooks:\n got %+v\nwant %+v", spec.Hooks, want)
	}
	for _, ev := range Events() {
		if _, ok := spec.Hooks[ev]; !ok {
			t.Errorf("event %s missing", ev)
		}
	}
}

func TestParseEmptyEventsAreIgnored(t *testing.T) {
	spec := mustParse(t, header+`hooks:
  BeforeInstall:
  AfterInstall: []
  ApplicationStart: ~
  ValidateService:
    - location: check.sh
`)
	if len(spec.Hooks) != 1 || len(spec.Hooks[ValidateService]) != 1 {
		t.Errorf("hooks: %+v", spec.Hooks)
	}
	spec = mustParse(t, header+"hooks:\n")
	if len(spec.Hooks) != 0 {
		t.Errorf("null hooks: %+v", spec.Hooks)
	}
}

func TestParseTimeouts(t *testing.T) {
	for in, want := range map[string]time.Duration{"1": time.Second, "3600": time.Hour, `"45"`: 45 * time.Second, `" 90 "`: 90 * time.Second, "": time.Hour, `"1_800"`: 30 * time.Minute} {
		spec := mustParse(t, header+"hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: "+in+"\n")
		if got := spec.Hooks[AfterInstall][0].Timeout; got != want || len(spec.Warnings) != 0 {
			t.Errorf("timeout: %s gave %v %v, want %v", in, got, spec.Warnings, want)
		}
	}
	bad := map[string]string{
		"0":                     "0 is not a positive number of seconds",
		"-5":                    "-5 is not a positive number of seconds",
		`"0"`:                   "0 is not a positive number of seconds",
		"abc":                   `"abc" is not a number of seconds (CodeDeploy's agent reads it as 0 and fails too)`,
		`"-5"`:                  `"-5" is not a number of seconds`,
		"0.5":                   "0 is not a positive number of seconds",
		"true":                  `"true" is not a number of seconds`,
		"[60]":                  "a list is not a number of seconds",
		"99999999999999999999":  "is far too long",
		`"9223372036854775807"`: "is far too long",
	}
	for in, want := range bad {
		err := mustFail(t, header+"hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: "+in+"\n")
		wantIn(t, err, "appspec.yml:6:16: hooks.AfterInstall[0].timeout: ", want)
	}
}

// CodeDeploy's agent reads a timeout with Ruby's to_i (script_info.rb):
// "300s" is 300 and 1.5 is 1 there, so they are accepted here too (issue
// 14.4), with a warning saying what was read ("5m" is 5 seconds!).
func TestParseTimeoutsAsRubyToI(t *testing.T) {
	for in, c := range map[string]struct {
		want time.Duration
		warn string
	}{
		"300s":    {300 * time.Second, `"300s" is read as 300 seconds, as CodeDeploy's agent reads it (Ruby's to_i ignores "s"); write timeout: 300`},
		`"5m"`:    {5 * time.Second, `"5m" is read as 5 seconds`},
		`" 60 x"`: {time.Minute, `ignores "x"`},
		"1.5":     {time.Second, "1.5 is read as 1 seconds (CodeDeploy's agent drops the fraction too)"},
		"+20":     {20 * time.Second, ""},
	} {
		spec := mustParse(t, header+"hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: "+in+"\n")
		if got := spec.Hooks[AfterInstall][0].Timeout; got != c.want {
			t.Errorf("timeout: %s gave %v, want %v", in, got, c.want)
		}
		switch {
		case c.warn == "" && len(spec.Warnings) != 0:
			t.Errorf("timeout: %s warned %v", in, spec.Warnings)
		case c.warn != "" && (len(spec.Warnings) != 1 || !strings.Contains(spec.Warnings[0], "appspec.yml:6:16: warning: hooks.AfterInstall[0].timeout: ") || !strings.Contains(spec.Warnings[0], c.warn)):
			t.Errorf("timeout: %s warned %v, want %q", in, spec.Warnings, c.warn)
		}
	}
	for in, want := range map[string]int64{"300s": 300, " -7x": -7, "x": 0, "": 0, "1_0": 10, "1__0": 1, "_1": 0, "12345678901234567890": 1001} {
		if got, _ := rubyToI(in, 1000); got != want {
			t.Errorf("rubyToI(%q) = %d, want %d", in, got, want)
		}
	}
}

// The service fails an event whose scripts take more than 3600s in total;
// CodeDeploy's agent accepts the appspec and leaves that to run time, as
// this agent does (holding the event to 3600s): a warning, not an error.
func TestParseEventTimeoutSum(t *testing.T) {
	spec := mustParse(t, header+`hooks:
  BeforeInstall:
    - location: a.sh
      timeout: 1800
    - location: b.sh
      timeout: 1800
  AfterInstall:
    - location: c.sh
      timeout: 1800
    - location: d.sh
      timeout: "1801"
    - location: e.sh
`)
	if len(spec.Warnings) != 1 || !strings.HasPrefix(spec.Warnings[0], "appspec.yml:9:3: warning: hooks.AfterInstall: the scripts' timeouts add up to 3601s; a lifecycle event may take 3600s in total") {
		t.Errorf("warnings %v; BeforeInstall sums to exactly 3600s and must not warn", spec.Warnings)
	}
}

func TestParseScriptProblems(t *testing.T) {
	err := mustFail(t, header+`hooks:
  AfterInstall:
    - location: /
    - location: ../../etc/passwd
    - location: scripts/../../x.sh
    - location: "   "
    - location:
    - scripts/a.sh
    - location: a.sh
      runas: ""
    - location: b.sh
      runas: nobody-at-all
      sudo: 1
  ValidateService: {location: v.sh}
`)
	wantIn(t, err,
		`appspec.yml:5:17: hooks.AfterInstall[0].location: "/" is the revision root, not a script`,
		`appspec.yml:6:17: hooks.AfterInstall[1].location: "../../etc/passwd" leaves the revision`,
		`appspec.yml:7:17: hooks.AfterInstall[2].location: "scripts/../../x.sh" leaves the revision`,
		`appspec.yml:8:17: hooks.AfterInstall[3].location: must not be empty`,
		`appspec.yml:9:16: hooks.AfterInstall[4].location: missing value`,
		`appspec.yml:10:7: hooks.AfterInstall[5]: want a mapping of keys, got a string`,
		`appspec.yml:12:14: hooks.AfterInstall[6].runas: must not be empty`,
		`appspec.yml:14:14: hooks.AfterInstall[7].runas: user "nobody-at-all" does not exist on this host (unknown name nobody-at-all)`,
		`appspec.yml:15:13: hooks.AfterInstall[7].sudo: want true or false, got "1"`,
		`appspec.yml:16:20: hooks.ValidateService: want a list of scripts`,
	)
	if n := errorCount(err); n != 10 {
		t.Errorf("got %d errors, want 10:\n%v", n, err)
	}
}

// Every script of the file is checked against the fake account database,
// and a known user passes.
func TestParseRunAsLookup(t *testing.T) {
	opts := testOptions()
	opts.LookupUser = lookupOf("deploy")
	src := header + `hooks:
  ApplicationStart:
    - location: a.sh
      runas: " deploy "
    - location: b.sh
      runas: missing-user
`
	e := failWith(t, src, opts)
	wantIn(t, e, `appspec.yml:8:14: hooks.ApplicationStart[1].runas: user "missing-user" does not exist on this host`)
	if errorCount(e) != 1 {
		t.Errorf("deploy exists and must pass: %v", e)
	}
	opts.LookupUser = lookupOf("deploy", "missing-user")
	spec, err := Parse("appspec.yml", []byte(src), opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := spec.Hooks[ApplicationStart][0].RunAs; got != "deploy" {
		t.Errorf("runas is trimmed as CodeDeploy does: got %q", got)
	}
}
