package appspec

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/yamlx"
)

// revision builds an unpacked revision in a temporary directory: files maps
// a relative path to its content; a content starting with "->" makes a
// symlink to the rest, and a path ending in "/" a directory.
func revision(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasSuffix(name, "/"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasPrefix(content, "->"):
			err = os.Symlink(strings.TrimPrefix(content, "->"), p)
		default:
			err = os.WriteFile(p, []byte(content), 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const revisionSpec = `version: 0.0
os: linux
files:
  - source: /
    destination: /srv/app
  - source: config/app.conf
    destination: /etc/app
  - source: /bin
    destination: /opt/app/bin
hooks:
  AfterInstall:
    - location: scripts/install.sh
  ApplicationStart:
    - location: /scripts/start.sh
      timeout: 60
`

func TestLoadValidRevision(t *testing.T) {
	dir := revision(t, map[string]string{
		"appspec.yml":        revisionSpec,
		"config/app.conf":    "x=1\n",
		"bin/":               "",
		"scripts/install.sh": "#!/bin/sh\n",
		"scripts/real.sh":    "#!/bin/sh\n",
		"scripts/start.sh":   "->real.sh",
	})
	spec, err := Load(dir, testOptions())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if spec.File != "appspec.yml" || len(spec.Files) != 3 || spec.Hooks[ApplicationStart][0].Location != "scripts/start.sh" {
		t.Errorf("spec: %+v", spec)
	}
}

func TestLoadMissingSourceAndScripts(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "evil.sh"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := revision(t, map[string]string{
		"appspec.yml": `version: 0.0
os: linux
files:
  - source: config/missing.conf
    destination: /etc/app
  - source: linked/secret
    destination: /etc/app
hooks:
  AfterInstall:
    - location: scripts/missing.sh
    - location: ../outside.sh
    - location: scripts/escape.sh
    - location: scripts/
    - location: scripts/dangling.sh
`,
		"scripts/escape.sh":   "->" + filepath.Join(outside, "evil.sh"),
		"scripts/dangling.sh": "->nowhere.sh",
		"linked":              "->" + outside,
	})
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(dir, testOptions())
	var ye *yamlx.Error
	if !errors.As(err, &ye) {
		t.Fatalf("want *yamlx.Error, got %T: %v", err, err)
	}
	wantIn(t, err,
		`appspec.yml:4:13: files[0].source: "config/missing.conf" does not exist in the revision`,
		`appspec.yml:6:13: files[1].source: "linked/secret" is reached through a symlink that leaves the revision`,
		`appspec.yml:10:17: hooks.AfterInstall[0].location: script "scripts/missing.sh" does not exist in the revision`,
		`appspec.yml:11:17: hooks.AfterInstall[1].location: "../outside.sh" leaves the revision`,
		`appspec.yml:12:17: hooks.AfterInstall[2].location: script "scripts/escape.sh" resolves to `,
		`appspec.yml:13:17: hooks.AfterInstall[3].location: script "scripts/" is a directory`,
		`appspec.yml:14:17: hooks.AfterInstall[4].location: script "scripts/dangling.sh" is a symlink to nothing`,
	)
	if n := errorCount(ye); n != 7 {
		t.Errorf("got %d errors, want 7:\n%v", n, err)
	}
}

// Without a revision directory, nothing is looked up on disk.
func TestParseWithoutRevisionSkipsDiskChecks(t *testing.T) {
	if _, err := Parse("appspec.yml", []byte(revisionSpec), testOptions()); err != nil {
		t.Fatalf("Parse without RevisionDir must not touch the disk: %v", err)
	}
	opts := testOptions()
	opts.RevisionDir = t.TempDir()
	wantIn(t, failWith(t, revisionSpec, opts), `files[1].source: "config/app.conf" does not exist`)

	// A revision directory that is not there is one problem, not one per path.
	opts.RevisionDir = filepath.Join(t.TempDir(), "gone")
	e := failWith(t, revisionSpec, opts)
	wantIn(t, e, "appspec.yml: checking the revision directory: ")
	if n := errorCount(e); n != 1 {
		t.Errorf("got %d errors, want 1:\n%v", n, e)
	}
}

func TestFind(t *testing.T) {
	both := revision(t, map[string]string{"appspec.yml": "a", "appspec.yaml": "b"})
	if name, err := Find(both); err != nil || name != "appspec.yml" {
		t.Errorf("both present: %q, %v; want appspec.yml", name, err)
	}
	yaml := revision(t, map[string]string{"appspec.yaml": "b"})
	if name, err := Find(yaml); err != nil || name != "appspec.yaml" {
		t.Errorf("only .yaml: %q, %v; want appspec.yaml", name, err)
	}
	none := revision(t, map[string]string{"AppSpec.yml.bak": "x"})
	_, err := Find(none)
	if err == nil || !strings.Contains(err.Error(), "appspec.yml") || !strings.Contains(err.Error(), "appspec.yaml") {
		t.Errorf("neither present: %v; want an error naming both", err)
	}
	dirNamed := revision(t, map[string]string{"appspec.yml/": "", "appspec.yaml": "b"})
	if _, err := Find(dirNamed); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory named appspec.yml: %v", err)
	}
}

func TestLoadYAMLFallbackAndMissing(t *testing.T) {
	dir := revision(t, map[string]string{
		"appspec.yaml":       strings.Replace(revisionSpec, "version: 0.0", "version: 0.0\nfile_exists_behavior: RETAIN", 1),
		"config/app.conf":    "",
		"bin/":               "",
		"scripts/install.sh": "",
		"scripts/start.sh":   "",
	})
	spec, err := Load(dir, testOptions())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if spec.File != "appspec.yaml" || spec.FileExistsBehavior != Retain {
		t.Errorf("spec from appspec.yaml: %+v", spec)
	}
	// CodeDeploy's v1 agent runs hooks from appspec.yml only (issue 14.7).
	if len(spec.Differences) != 1 || !strings.HasPrefix(spec.Differences[0], "appspec.yaml: codedeploy: the revision has appspec.yaml and no appspec.yml") {
		t.Errorf("differences: %v", spec.Differences)
	}
	// Problems name the file the spec came from.
	if err := os.WriteFile(filepath.Join(dir, "appspec.yaml"), []byte("version: 0.0\nos: windows\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir, testOptions())
	wantIn(t, err, "appspec.yaml:2:5: os: windows")

	_, err = Load(t.TempDir(), testOptions())
	if err == nil || !strings.Contains(err.Error(), "neither appspec.yml nor appspec.yaml") {
		t.Errorf("empty revision: %v", err)
	}
}

// Revisions may hold absolute symlinks (issue 14.2); the appspec is read
// only from the revision itself, never through a link leading out of it.
func TestFindRefusesAnAppspecLinkLeavingTheRevision(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret.yml")
	os.WriteFile(secret, []byte("version: 0.0\nos: secret-password\n"), 0o600)
	out := revision(t, map[string]string{"appspec.yml": "->" + secret})
	if _, err := Find(out); err == nil || !strings.Contains(err.Error(), "outside the revision") {
		t.Errorf("link out: %v", err)
	}
	if _, err := Load(out, testOptions()); err == nil || strings.Contains(err.Error(), "secret-password") {
		t.Errorf("Load through a link out: %v", err)
	}
	in := revision(t, map[string]string{"appspec.yml": "->conf/appspec-prod.yml", "conf/appspec-prod.yml": "version: 0.0\nos: linux\n"})
	if spec, err := Load(in, testOptions()); err != nil || spec.OS != "linux" {
		t.Errorf("link inside: %v", err)
	}
}

// An appspec larger than the YAML limit is refused after reading just
// past the limit.
func TestLoadStopsReadingAtTheLimit(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "appspec.yml"))
	if err != nil {
		t.Fatal(err)
	}
	// A sparse 4 GiB file: reading it whole would take minutes and 4 GiB.
	if err := f.Truncate(4 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = Load(dir, testOptions())
	if err == nil || !strings.Contains(err.Error(), "larger than the") {
		t.Errorf("huge appspec: %v", err)
	}
}
