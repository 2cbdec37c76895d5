package push

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	ignore "github.com/sabhiram/go-gitignore"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
	"github.com/rollback-agent/rollback-agent/internal/bundle"
)

// IgnoreFile names the gitignore-syntax file of paths left out of a bundle.
const IgnoreFile = ".rollbackignore"

// conventionalHooks are the hook scripts a generated appspec wires, by
// event, in run order.
func conventionalHooks() []struct{ event, script string } {
	return []struct{ event, script string }{
		{appspec.ApplicationStop, "scripts/application_stop.sh"},
		{appspec.BeforeInstall, "scripts/before_install.sh"},
		{appspec.AfterInstall, "scripts/after_install.sh"},
		{appspec.ApplicationStart, "scripts/application_start.sh"},
		{appspec.ValidateService, "scripts/validate_service.sh"},
	}
}

// Built is a bundle written to a local file.
type Built struct {
	Path   string
	SHA256 string
	Size   int64
	// AppSpec is the appspec.yml that went into the bundle, and Generated
	// says push wrote it (the directory had none).
	AppSpec   []byte
	Generated bool
	// Injected says the CodeDeploy hooks were added (inject.go).
	Injected bool
}

// skipper returns the filter of .rollbackignore (and .git, which is never
// part of a release).
func skipper(dir string) (func(rel string, isDir bool) bool, error) {
	var gi *ignore.GitIgnore
	p := filepath.Join(dir, IgnoreFile)
	b, err := os.ReadFile(p)
	switch {
	case err == nil:
		gi = ignore.CompileIgnoreLines(strings.Split(string(b), "\n")...)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return func(rel string, isDir bool) bool {
		if rel == ".git" {
			return true
		}
		if gi == nil {
			return false
		}
		// Directory patterns ("build/") match the directory's own path
		// only with its trailing slash.
		if isDir && gi.MatchesPath(rel+"/") {
			return true
		}
		return gi.MatchesPath(rel)
	}, nil
}

// GenerateAppSpec writes the appspec for a directory that has none: all
// of it goes to destination, and the conventionally named scripts that
// exist (and are not ignored) become hooks.
func GenerateAppSpec(dir, destination string, skip func(string, bool) bool) ([]byte, error) {
	var b strings.Builder
	b.WriteString("# Written by agentctl push: the directory had no appspec.yml.\n")
	b.WriteString("version: 0.0\nos: linux\nfiles:\n")
	// Quoted: a path may hold characters YAML would read otherwise.
	fmt.Fprintf(&b, "  - source: /\n    destination: %q\n", destination)
	var hooks []string
	for _, h := range conventionalHooks() {
		fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(h.script)))
		if errors.Is(err, fs.ErrNotExist) || (err == nil && skip(h.script, false)) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("look for hook script %s: %w", filepath.Join(dir, h.script), err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("hook script %s is not a regular file", filepath.Join(dir, h.script))
		}
		hooks = append(hooks, fmt.Sprintf("  %s:\n    - location: %s\n      timeout: 300\n", h.event, h.script))
	}
	if len(hooks) > 0 {
		b.WriteString("hooks:\n")
		for _, h := range hooks {
			b.WriteString(h)
		}
	}
	return []byte(b.String()), nil
}

// acceptAnyAccount: runas users and permission owners exist on the hosts,
// not necessarily on the workstation that pushes.
func acceptAnyAccount(string) error { return nil }

// Build bundles dir into a new file in tmpDir: the directory's own
// appspec is validated with the agent's parser (its errors stop the push),
// or one is generated for destination.
func Build(ctx context.Context, dir, destination, tmpDir string) (*Built, error) {
	return build(ctx, dir, destination, tmpDir, "")
}

// BuildForCodeDeploy is Build with the CodeDeploy hooks added to the
// bundle's appspec (inject.go); version is written into them.
func BuildForCodeDeploy(ctx context.Context, dir, destination, tmpDir, version string) (*Built, error) {
	return build(ctx, dir, destination, tmpDir, version)
}

func build(ctx context.Context, dir, destination, tmpDir, codedeployVersion string) (*Built, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("bundle %s: not a directory", dir)
	}
	skip, err := skipper(dir)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", dir, err)
	}
	opts := appspec.Options{RevisionDir: dir, LookupUser: acceptAnyAccount, LookupGroup: acceptAnyAccount}
	built := &Built{}
	var tarOpts bundle.TarOptions
	tarOpts.Skip = skip
	name, findErr := appspec.Find(dir)
	if findErr == nil && skip(name, false) {
		return nil, fmt.Errorf("bundle %s: %s is listed in %s: a bundle needs its appspec", dir, name, IgnoreFile)
	}
	if findErr == nil {
		spec, err := appspec.Load(dir, opts)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: the appspec is invalid, nothing was uploaded:\n%w", dir, err)
		}
		if err := checkNotIgnored(spec, skip); err != nil {
			return nil, fmt.Errorf("bundle %s: %w", dir, err)
		}
		if built.AppSpec, err = os.ReadFile(filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("bundle %s: %w", dir, err)
		}
	} else {
		if !filepath.IsAbs(destination) {
			return nil, fmt.Errorf("bundle %s: --destination %q must be an absolute path", dir, destination)
		}
		gen, err := GenerateAppSpec(dir, destination, skip)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", dir, err)
		}
		if _, err := appspec.Parse("appspec.yml", gen, opts); err != nil {
			return nil, fmt.Errorf("bundle %s: the generated appspec is invalid:\n%w", dir, err)
		}
		newest, err := newestMtime(dir, skip)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", dir, err)
		}
		built.AppSpec, built.Generated = gen, true
		tarOpts.Extra = []bundle.ExtraFile{{Name: "appspec.yml", Content: gen, Mode: 0o644, ModTime: newest}}
	}
	if codedeployVersion != "" {
		if built.Generated {
			name = "appspec.yml"
		}
		newest, err := newestMtime(dir, skip)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", dir, err)
		}
		// The injected scripts are not in dir: check the rewrite without it.
		spec, err := injectCodeDeploy(name, built.AppSpec, codedeployVersion, appspec.Options{LookupUser: acceptAnyAccount, LookupGroup: acceptAnyAccount})
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", dir, err)
		}
		appspecFile := bundle.ExtraFile{Name: name, Content: spec, Mode: 0o644, ModTime: newest}
		tarOpts.Extra = append([]bundle.ExtraFile{appspecFile}, injectedFiles(codedeployVersion, appspecFile)...)
		built.AppSpec, built.Injected = spec, true
	}
	f, err := os.CreateTemp(tmpDir, "bundle-*.tar.gz")
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", dir, err)
	}
	built.Path = f.Name()
	h := sha256.New()
	cw := &counter{w: io.MultiWriter(f, h)}
	err = bundle.WriteTarGzWith(ctx, dir, cw, tarOpts)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(built.Path)
		return nil, fmt.Errorf("bundle %s into %s: %w", dir, built.Path, err)
	}
	built.SHA256, built.Size = hex.EncodeToString(h.Sum(nil)), cw.n
	return built, nil
}

// checkNotIgnored refuses an appspec that names a hook script the bundle
// leaves out: it would validate here and fail on every host.
func checkNotIgnored(spec *appspec.AppSpec, skip func(string, bool) bool) error {
	for ev, scripts := range spec.Hooks {
		for _, s := range scripts {
			loc := strings.TrimPrefix(filepath.ToSlash(filepath.Clean(s.Location)), "/")
			if skip(loc, false) {
				return fmt.Errorf("%s: the %s hook %s is listed in %s", spec.File, ev, s.Location, IgnoreFile)
			}
		}
	}
	return nil
}

// newestMtime is the newest modification time of what goes into the
// bundle: a generated file gets it, so rebuilding the same tree gives the
// same bytes.
func newestMtime(dir string, skip func(string, bool) bool) (time.Time, error) {
	var newest time.Time
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if skip(filepath.ToSlash(rel), d.IsDir()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.ModTime().After(newest) {
			newest = fi.ModTime()
		}
		return nil
	})
	if newest.IsZero() {
		newest = time.Unix(0, 0)
	}
	return newest.UTC(), err
}

type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
