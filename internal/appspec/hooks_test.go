package appspec

import (
	"reflect"
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
	for in, want := range map[string]time.Duration{"1": time.Second, "3600": time.Hour, `"45"`: 45 * time.Second, `" 90 "`: 90 * time.Second, "": time.Hour} {
		spec := mustParse(t, header+"hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: "+in+"\n")
		if got := spec.Hooks[AfterInstall][0].Timeout; got != want {
			t.Errorf("timeout: %s gave %v, want %v", in, got, want)
		}
	}
	bad := map[string]string{
		"0":                     "0 is not a positive number of seconds",
		"-5":                    "-5 is not a positive number of seconds",
		`"0"`:                   "0 is not a positive number of seconds",
		"abc":                   `"abc" is not a number of seconds`,
		`"300s"`:                `"300s" is not a number of seconds`,
		`"-5"`:                  `"-5" is not a number of seconds`,
		"1.5":                   `"1.5" is not a number of seconds`,
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

// The service fails an event whose scripts take more than 3600s in total;
// the scripts' own timeouts say how long they may take.
func TestParseEventTimeoutSum(t *testing.T) {
	err := mustFail(t, header+`hooks:
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
	wantIn(t, err, "appspec.yml:9:3: hooks.AfterInstall: the scripts' timeouts add up to 3601s; CodeDeploy fails a lifecycle event that takes more than 3600s in total")
	if errorCount(err) != 1 {
		t.Errorf("BeforeInstall sums to exactly 3600s and must pass: %v", err)
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
