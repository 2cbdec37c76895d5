package appspec

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/yamlx"
)

// FuzzParse checks that no input makes Parse panic, that an accepted spec
// holds the invariants the deploy engine relies on, and that a refused one
// always explains itself.
func FuzzParse(f *testing.F) {
	seeds := []string{
		docsExample,
		revisionSpec,
		header + "permissions:\n  - object: /srv\n    mode: 0644\n    acls: [u:bob:rw, d:g:writers:r-x]\n    context: {name: system_u, type: t, range: s0-s1:c0.c3}\n    type: [file]\n",
		header + "files:\n  - source: /\n    destination: /srv/app\nfile_exists_behavior: retain\n",
		header + "hooks:\n  AfterInstall:\n    - location: a.sh\n      timeout: \"3600\"\n      runas: root\n      sudo: true\n",
		"version: \"0.0\"\nos: linux\nunknown: [1, 2]\n",
		"version: 1.0\nos: windows\nfiles: /x\n",
		header + "hooks:\n  AfterInstall:\n    - location: ../x\n      timeout: -1\n    - timeout: 4000\n",
		header + "permissions:\n  - mode: u+x\n    acls: [u::rwx]\n    context: {role: r, range: s99}\n",
		"",
		"- [\n",
		header + "files:\n  - &a {source: /, destination: /srv}\n  - *a\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	opts := Options{LookupUser: lookupOf("root", "bob"), LookupGroup: lookupOf("root", "writers")}
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := Parse("appspec.yml", data, opts)
		if err != nil {
			var ye *yamlx.Error
			if !errors.As(err, &ye) {
				t.Fatalf("error is %T, want *yamlx.Error: %v", err, err)
			}
			if len(ye.Problems) == 0 {
				t.Fatalf("*yamlx.Error without problems: %v", err)
			}
			if spec != nil {
				t.Fatalf("a spec came back with an error: %+v", spec)
			}
			return
		}
		if spec == nil {
			t.Fatal("nil spec without an error")
		}
		if spec.Version != "0.0" || spec.OS != "linux" {
			t.Fatalf("accepted version %q os %q", spec.Version, spec.OS)
		}
		for _, fl := range spec.Files {
			if !filepath.IsAbs(fl.Destination) {
				t.Fatalf("accepted relative destination %q", fl.Destination)
			}
		}
		for ev, scripts := range spec.Hooks {
			for _, s := range scripts {
				if s.Location == "" {
					t.Fatalf("accepted an empty location in %s", ev)
				}
			}
		}
	})
}
