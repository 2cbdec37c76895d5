package push

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
)

func parseLocations(t *testing.T, spec []byte) map[string][]string {
	t.Helper()
	s, err := appspec.Parse("appspec.yml", spec, appspec.Options{LookupUser: acceptAnyAccount, LookupGroup: acceptAnyAccount})
	if err != nil {
		t.Fatalf("the rewritten appspec does not parse: %v\n%s", err, spec)
	}
	out := map[string][]string{}
	for ev, scripts := range s.Hooks {
		for _, sc := range scripts {
			out[ev] = append(out[ev], sc.Location)
		}
	}
	return out
}

// The hooks are merged with the user's own, whatever YAML style holds
// them: the checkpoint first in BeforeInstall, the gate last in
// ValidateService, everything else as it was (the agent's own parser
// reads the result).
func TestInjectCodeDeployMergesWithTheUsersHooks(t *testing.T) {
	opts := appspec.Options{LookupUser: acceptAnyAccount, LookupGroup: acceptAnyAccount}
	cases := []struct {
		name, spec string
		want       map[string][]string
	}{
		{"block lists", `version: 0.0
os: linux
files:
  - source: /
    destination: /opt/app
permissions:
  - object: /opt/app
    mode: "0755"
hooks:
  BeforeInstall:
    - location: scripts/a.sh   # mine
      timeout: 300
  ValidateService:
    - location: scripts/v.sh
      runas: nobody
`, map[string][]string{"BeforeInstall": {InjectedBeforeInstall, "scripts/a.sh"}, "ValidateService": {"scripts/v.sh", InjectedValidateService}}},
		{"flow lists", "version: 0.0\nos: linux\nhooks:\n  ValidateService: [{location: scripts/v.sh, timeout: 30}]\n  ApplicationStart: [{location: s.sh}]\n",
			map[string][]string{"BeforeInstall": {InjectedBeforeInstall}, "ValidateService": {"scripts/v.sh", InjectedValidateService}, "ApplicationStart": {"s.sh"}}},
		{"flow hooks mapping", "version: 0.0\nos: linux\nhooks: {BeforeInstall: [{location: a.sh}]}\n",
			map[string][]string{"BeforeInstall": {InjectedBeforeInstall, "a.sh"}, "ValidateService": {InjectedValidateService}}},
		{"no hooks", "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: /x\n",
			map[string][]string{"BeforeInstall": {InjectedBeforeInstall}, "ValidateService": {InjectedValidateService}}},
		{"empty event", "version: 0.0\nos: linux\nhooks:\n  ValidateService:\n  AfterInstall:\n    - location: b.sh\n",
			map[string][]string{"BeforeInstall": {InjectedBeforeInstall}, "ValidateService": {InjectedValidateService}, "AfterInstall": {"b.sh"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := injectCodeDeploy("appspec.yml", []byte(c.spec), "1.2.3", opts)
			if err != nil {
				t.Fatal(err)
			}
			got := parseLocations(t, out)
			for ev, want := range c.want {
				if !slices.Equal(got[ev], want) {
					t.Errorf("%s: %v, want %v\n%s", ev, got[ev], want, out)
				}
			}
			if len(got) != len(c.want) {
				t.Errorf("events %v, want %v", got, c.want)
			}
			// Twice is once.
			again, err := injectCodeDeploy("appspec.yml", out, "1.2.3", opts)
			if err != nil {
				t.Fatal(err)
			}
			if g := parseLocations(t, again); len(g[appspec.BeforeInstall]) != len(got[appspec.BeforeInstall]) {
				t.Errorf("injected twice: %v", g)
			}
		})
	}
	// The mode keeps its octal digits: the rewrite works on the YAML as
	// written, not on decoded values.
	out, _ := injectCodeDeploy("appspec.yml", []byte(cases[0].spec), "1.2.3", opts)
	if !strings.Contains(string(out), `mode: "0755"`) || !strings.Contains(string(out), "version: 0.0") || !strings.Contains(string(out), "# mine") {
		t.Errorf("the rewrite changed what it did not need to:\n%s", out)
	}
}

// What the rewrite cannot place, or a version a shell would read, stops
// the push with a message naming the file.
func TestInjectCodeDeployRefusesWhatItCannotMerge(t *testing.T) {
	opts := appspec.Options{LookupUser: acceptAnyAccount, LookupGroup: acceptAnyAccount}
	for _, spec := range []string{
		"version: 0.0\nos: linux\nhooks:\n  BeforeInstall: scripts/a.sh\n",
		"version: 0.0\nos: linux\nhooks: [a, b]\n",
	} {
		if _, err := injectCodeDeploy("appspec.yml", []byte(spec), "1.2.3", opts); err == nil || !strings.Contains(err.Error(), "appspec.yml") {
			t.Errorf("%q: %v", spec, err)
		}
	}
	if _, err := injectCodeDeploy("appspec.yml", []byte("version: 0.0\nos: linux\n"), "1.2.3'; rm -rf /", opts); err == nil {
		t.Error("a version with a quote was written into a shell script")
	}
}

// BuildForCodeDeploy puts the rewritten appspec and both scripts into the
// bundle, once each, and leaves the directory alone.
func TestBuildForCodeDeployBundle(t *testing.T) {
	dir := t.TempDir()
	spec := "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: /opt/x\nhooks:\n  BeforeInstall:\n    - location: scripts/b.sh\n"
	os.MkdirAll(filepath.Join(dir, "app"), 0o755)
	os.MkdirAll(filepath.Join(dir, "scripts"), 0o755)
	os.WriteFile(filepath.Join(dir, "appspec.yml"), []byte(spec), 0o644)
	os.WriteFile(filepath.Join(dir, "scripts", "b.sh"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "app", "index.html"), []byte("hi\n"), 0o644)
	built, err := BuildForCodeDeploy(context.Background(), dir, "/opt/x", t.TempDir(), "v7")
	if err != nil {
		t.Fatal(err)
	}
	if !built.Injected {
		t.Error("not marked injected")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "appspec.yml")); string(b) != spec {
		t.Errorf("the directory's appspec changed:\n%s", b)
	}
	f, err := os.Open(built.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	files := map[string]string{}
	count := map[string]int{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = string(b)
		count[h.Name]++
		if strings.HasPrefix(h.Name, InjectedDir) && h.Mode&0o111 == 0 {
			t.Errorf("%s is not executable: %o", h.Name, h.Mode)
		}
	}
	if count["appspec.yml"] != 1 {
		t.Errorf("appspec.yml %d times in the bundle", count["appspec.yml"])
	}
	got := parseLocations(t, []byte(files["appspec.yml"]))
	if !slices.Equal(got["BeforeInstall"], []string{InjectedBeforeInstall, "scripts/b.sh"}) || !slices.Equal(got["ValidateService"], []string{InjectedValidateService}) {
		t.Errorf("bundle's hooks: %v", got)
	}
	if s := files[InjectedBeforeInstall]; !strings.Contains(s, "codedeploy before-install --revision 'v7'") {
		t.Errorf("before_install.sh:\n%s", s)
	}
	if s := files[InjectedValidateService]; !strings.Contains(s, "codedeploy validate-service --revision 'v7'") {
		t.Errorf("validate_service.sh:\n%s", s)
	}
}
