package appspec

import (
	"reflect"
	"strings"
	"testing"
)

// Permissions as the CodeDeploy User Guide writes them, context included:
// the guide's `user` key is accepted with a warning, since the agents read
// `name`.
func TestParseDocsPermissions(t *testing.T) {
	spec := mustParse(t, header+`permissions:
  - object: /tmp/my-app
    pattern: "**"
    owner: bob
    group: writers
    mode: 644
    type:
      - file
  - object: /var/www/html/WordPress
    pattern: "*.php"
    except: [wp-config.php, readme.php]
    owner: wordpress_user
    group: wordpress_group
    mode: 4755
    acls:
      - u:bob:rw
      - d:g:writers:r-x
      - default:user:bob:rwx
      - m::rx
      - group:writers:5
    context:
      user: unconfined_u
      name: system_u
      type: httpd_sys_content_t
      range: s0-s1:c0.c255,c300
    type:
      - directory
  - object: " /srv/app/ "
`)
	want := []Permission{
		{Object: "/tmp/my-app", Pattern: "**", Owner: "bob", Group: "writers", Mode: 0o644, HasMode: true, Types: []string{"file"}, Line: 4},
		{
			Object: "/var/www/html/WordPress", Pattern: "*.php", Except: []string{"wp-config.php", "readme.php"},
			Owner: "wordpress_user", Group: "wordpress_group", Mode: 0o4755, HasMode: true,
			ACLs:    []string{"u:bob:rw", "d:g:writers:r-x", "default:user:bob:rwx", "m::rx", "group:writers:5"},
			Context: &Context{Name: "system_u", Type: "httpd_sys_content_t", Range: "s0-s1:c0.c255,c300"},
			Types:   []string{"directory"}, Line: 11,
		},
		{Object: "/srv/app", Pattern: "**", Types: []string{"file", "directory"}, Line: 30},
	}
	if !reflect.DeepEqual(spec.Permissions, want) {
		t.Errorf("permissions:\n got %+v\nwant %+v", spec.Permissions, want)
	}
	if len(spec.Warnings) != 2 || !strings.HasPrefix(spec.Warnings[0], "appspec.yml:11:5: warning: permissions[1]: mode 4755 with owner or group: the chown that follows the chmod clears the setuid/setgid bits") ||
		!strings.HasPrefix(spec.Warnings[1], "appspec.yml:24:7: warning: permissions[1].context.user: CodeDeploy ignores") {
		t.Errorf("warnings: %v", spec.Warnings)
	}
	if !spec.Permissions[0].HasType("file") || spec.Permissions[0].HasType("directory") {
		t.Errorf("HasType on %v", spec.Permissions[0].Types)
	}
}

// mode is read from the digits as written: YAML's octal reading of 0644
// (420) must never leak through.
func TestParseMode(t *testing.T) {
	cases := map[string]uint32{
		`"0644"`: 0o644,
		"644":    0o644,
		`"0755"`: 0o755,
		"'755'":  0o755,
		"75":     0o075,
		"7":      0o007,
		"4755":   0o4755,
		`"0000"`: 0,
		"0":      0,
		"1777":   0o1777,
	}
	for in, want := range cases {
		spec := mustParse(t, header+"permissions:\n  - object: /srv\n    mode: "+in+"\n")
		p := spec.Permissions[0]
		if !p.HasMode || p.Mode != want {
			t.Errorf("mode: %s gave %#o (HasMode %v), want %#o", in, p.Mode, p.HasMode, want)
		}
	}
	spec := mustParse(t, header+"permissions:\n  - object: /srv\n    mode:\n")
	if spec.Permissions[0].HasMode {
		t.Errorf("an empty mode must leave HasMode false: %+v", spec.Permissions[0])
	}
	for _, bad := range []string{"u+x", "0o644", "0x1a4", "648", "09", "12345", `""`, "6.44", "-644", "rwxr-xr-x"} {
		err := mustFail(t, header+"permissions:\n  - object: /srv\n    mode: "+bad+"\n")
		wantIn(t, err, "appspec.yml:5:11: permissions[0].mode: ")
	}
	wantIn(t, mustFail(t, header+"permissions:\n  - object: /srv\n    mode: [644]\n"),
		"appspec.yml:5:11: permissions[0].mode: want a string, got a list")
}

// An unquoted mode with a leading zero is YAML 1.1's octal integer for
// CodeDeploy's agent: 0644 becomes mode 0420 there, 0755 (493) is refused.
// Reading the digits instead would silently differ (issue 14.6), so it is
// refused with what to write.
func TestParseUnquotedLeadingZeroMode(t *testing.T) {
	for in, want := range map[string]string{
		"0644":  `permissions[0].mode: 0644 is unquoted: YAML 1.1, which CodeDeploy's agent reads, takes it for the octal number 420 and CodeDeploy applies it as mode 0420; write mode: "0644" (quoted) or mode: 644`,
		"0755":  `permissions[0].mode: 0755 is unquoted: YAML 1.1, which CodeDeploy's agent reads, takes it for the octal number 493 and CodeDeploy refuses it (not an octal mode); write mode: "0755" (quoted) or mode: 755`,
		"0000":  `octal number 0 and CodeDeploy applies it as mode 0000`,
		"04755": `octal number 2541 and CodeDeploy applies it as mode 2541`,
	} {
		wantIn(t, mustFail(t, header+"permissions:\n  - object: /srv\n    mode: "+in+"\n"), "appspec.yml:5:11: ", want)
	}
}

func TestParseACLs(t *testing.T) {
	good := []string{"u:bob:rwx", "user:bob:r", "g:writers:-", "group:writers:r-x", "m::rw", "mask::7",
		"d:u:bob:rw", "default:group:writers:rx", "d:u::rwx", "d:o::r"}
	for _, acl := range good {
		if err := checkACL(acl); err != nil {
			t.Errorf("checkACL(%q) = %v, want nil", acl, err)
		}
	}
	bad := map[string]string{
		"u::rwx":      "sets a base entry",
		"g::r":        "sets a base entry",
		"o::r":        "sets a base entry",
		"o:bob:r":     "takes no name",
		"m:bob:rw":    "takes no name",
		"u:bob:rwxr":  "is not an ACL entry",
		"u:bob:rwX":   "is not an ACL entry",
		"u:bob:8":     "is not an ACL entry",
		"x:bob:rw":    "is not an ACL entry",
		"bob:rw":      "is not an ACL entry",
		"u:bob:":      "is not an ACL entry",
		"dd:u:bob:rw": "is not an ACL entry",
		"":            "is not an ACL entry",
	}
	for acl, want := range bad {
		err := checkACL(acl)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("checkACL(%q) = %v, want %q", acl, err, want)
		}
	}
	err := mustFail(t, header+`permissions:
  - object: /srv
    acls:
      - u:bob:rw
      - g::r
      - [nested]
`)
	wantIn(t, err,
		`appspec.yml:7:9: permissions[0].acls[1]: "g::r" sets a base entry`,
		`appspec.yml:8:9: permissions[0].acls[2]: want a string, got a list`)
	if errorCount(err) != 2 {
		t.Errorf("want 2 errors: %v", err)
	}
}

func TestParseContextRange(t *testing.T) {
	for _, r := range []string{"s0", "s15", "s0-s15", "s0:c0", "s0:c0.c1023", "s1-s2:c1,c3.c5,c7"} {
		if err := checkRange(r); err != nil {
			t.Errorf("checkRange(%q) = %v", r, err)
		}
	}
	bad := map[string]string{
		"s16":             "above s15",
		"s0-s16":          "above s15",
		"s3-s1":           "below the low one",
		"s0:c1024":        "above c1023",
		"s0:c5.c2":        "runs backwards",
		"s0:c1,c1":        "twice",
		"s0:c1.c3,c2":     "twice",
		"s0:":             "is not an SELinux range",
		"s0:x1":           "not a category",
		"s0:c1..c2":       "not a category",
		"0":               "is not an SELinux range",
		"s":               "is not an SELinux range",
		"s99999999999999": "above s15",
	}
	for r, want := range bad {
		err := checkRange(r)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("checkRange(%q) = %v, want %q", r, err, want)
		}
	}
	err := mustFail(t, header+`permissions:
  - object: /srv
    context:
      name: system_u
      range: s0
  - object: /srv/b
    context: httpd_t
`)
	wantIn(t, err,
		"appspec.yml:6:7: permissions[0].context.type: missing",
		"appspec.yml:9:14: permissions[1].context: want a mapping of keys, got a string")
}

func TestParsePermissionTypes(t *testing.T) {
	spec := mustParse(t, header+`permissions:
  - object: /srv/a
    type: [directory]
  - object: /srv/b
    type:
  - object: /srv/c
    type: []
`)
	if got := spec.Permissions[0].Types; !reflect.DeepEqual(got, []string{"directory"}) {
		t.Errorf("type [directory] gave %v", got)
	}
	if got := spec.Permissions[1].Types; !reflect.DeepEqual(got, []string{"file", "directory"}) {
		t.Errorf("empty type gave %v, want both", got)
	}
	if got := spec.Permissions[2].Types; len(got) != 0 {
		t.Errorf("type [] gave %v, want nothing", got)
	}
	if len(spec.Warnings) != 1 || !strings.HasPrefix(spec.Warnings[0], "appspec.yml:9:11: warning: permissions[2].type: an empty list") {
		t.Errorf("warnings: %v", spec.Warnings)
	}
	wantIn(t, mustFail(t, header+"permissions:\n  - object: /srv\n    type: file\n"),
		"appspec.yml:5:11: permissions[0].type: want a list, got a string")
	wantIn(t, mustFail(t, header+"permissions:\n  - object: srv\n"),
		`appspec.yml:4:13: permissions[0].object: "srv" must be an absolute path`)
}

func TestParseOwnerAndGroupLookups(t *testing.T) {
	err := mustFail(t, header+`permissions:
  - object: /srv/a
    owner: alice
    group: staff
  - object: /srv/b
    owner: alice
    group: writers
`)
	wantIn(t, err,
		`appspec.yml:5:12: permissions[0].owner: user "alice" does not exist on this host`,
		`appspec.yml:6:12: permissions[0].group: group "staff" does not exist on this host`,
		`appspec.yml:8:12: permissions[1].owner: user "alice" does not exist on this host`)
	if errorCount(err) != 3 {
		t.Errorf("want 3 errors: %v", err)
	}
}

// Each name is looked up once per file however often it appears.
func TestParseLookupsAreMemoised(t *testing.T) {
	calls := map[string]int{}
	opts := Options{
		LookupUser:  func(name string) error { calls["u:"+name]++; return nil },
		LookupGroup: func(name string) error { calls["g:"+name]++; return nil },
	}
	src := header + `permissions:
  - {object: /a, owner: bob, group: bob}
  - {object: /b, owner: bob, group: bob}
hooks:
  AfterInstall:
    - {location: a.sh, runas: bob}
    - {location: b.sh, runas: bob}
`
	if _, err := Parse("appspec.yml", []byte(src), opts); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(calls, map[string]int{"u:bob": 1, "g:bob": 1}) {
		t.Errorf("lookups: %v", calls)
	}
}

// With the real account database: root exists on every Linux host, and
// the nonexistent names are reported.
func TestParseRealLookups(t *testing.T) {
	spec, err := Parse("appspec.yml", []byte(header+`permissions:
  - object: /srv
    owner: root
    group: root
hooks:
  ApplicationStart:
    - location: start.sh
      runas: root
`), Options{})
	if err != nil {
		t.Fatalf("root must exist: %v", err)
	}
	if spec.Permissions[0].Owner != "root" || spec.Hooks[ApplicationStart][0].RunAs != "root" {
		t.Errorf("spec: %+v", spec)
	}
	e := failWith(t, header+`permissions:
  - object: /srv
    owner: no-such-user-rollback-agent
    group: no-such-group-rollback-agent
`, Options{})
	wantIn(t, e,
		`appspec.yml:5:12: permissions[0].owner: user "no-such-user-rollback-agent" does not exist`,
		`appspec.yml:6:12: permissions[0].group: group "no-such-group-rollback-agent" does not exist`)
}
