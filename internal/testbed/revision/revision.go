// Package revision builds CodeDeploy-style revisions for tests and the
// demo: a tree with an appspec.yml, hooks and files, written as a
// directory, a tar.gz or a zip bundle. It imports nothing of the test
// bed's simulator (moto, the AWS proxy, EC2), so the tests of pure
// packages (engine, install, bundle) that only need a bundle do not link
// it.
package revision

import (
	"archive/zip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rollback-agent/rollback-agent/internal/bundle"
)

// File is one file of a test revision.
type File struct {
	Content string
	Mode    fs.FileMode // default 0644
	Link    string      // non-empty: a symlink to this target
}

// Revision describes a CodeDeploy-style revision for tests and the demo.
type Revision struct {
	// Files are installed from the revision's "app/" directory.
	Files map[string]File
	// Dest is where `files` installs app/ (when AppSpec is empty).
	Dest string
	// Hooks maps an event to a shell script body (#!/bin/sh is added),
	// written to scripts/<Event>.sh (when AppSpec is empty).
	Hooks map[string]string
	// HookTimeout in seconds for every hook (default: none given).
	HookTimeout int
	// Extra appspec text appended at the top level (permissions, ...).
	Extra string
	// AppSpec replaces the generated appspec.yml entirely.
	AppSpec string
	// Raw files written at the revision root as they are (for odd cases).
	Raw map[string]File
}

// WriteDir writes the revision's tree into dir.
func (r Revision) WriteDir(dir string) error {
	write := func(rel string, f File) error {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if f.Link != "" {
			return os.Symlink(f.Link, p)
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(p, []byte(f.Content), mode); err != nil {
			return err
		}
		return os.Chmod(p, mode)
	}
	if err := os.MkdirAll(filepath.Join(dir, "app"), 0o755); err != nil {
		return err
	}
	for rel, f := range r.Files {
		if err := write(filepath.Join("app", rel), f); err != nil {
			return err
		}
	}
	for rel, f := range r.Raw {
		if err := write(rel, f); err != nil {
			return err
		}
	}
	events := make([]string, 0, len(r.Hooks))
	for ev, body := range r.Hooks {
		events = append(events, ev)
		if err := write(filepath.Join("scripts", ev+".sh"), File{Content: "#!/bin/sh\nset -e\n" + body + "\n", Mode: 0o755}); err != nil {
			return err
		}
	}
	sort.Strings(events)
	spec := r.AppSpec
	if spec == "" {
		var b strings.Builder
		b.WriteString("version: 0.0\nos: linux\n")
		if r.Dest != "" {
			fmt.Fprintf(&b, "files:\n  - source: app\n    destination: %s\n", r.Dest)
		}
		if len(events) > 0 {
			b.WriteString("hooks:\n")
			for _, ev := range events {
				fmt.Fprintf(&b, "  %s:\n    - location: scripts/%s.sh\n", ev, ev)
				if r.HookTimeout > 0 {
					fmt.Fprintf(&b, "      timeout: %d\n", r.HookTimeout)
				}
			}
		}
		b.WriteString(r.Extra)
		spec = b.String()
	}
	return os.WriteFile(filepath.Join(dir, "appspec.yml"), []byte(spec), 0o644)
}

// TarGz writes the revision as a tar.gz bundle at path.
func (r Revision) TarGz(path string) error {
	dir, err := os.MkdirTemp("", "revision-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := r.WriteDir(dir); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := bundle.WriteTarGz(context.Background(), dir, f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Zip writes the revision as a zip bundle at path.
func (r Revision) Zip(path string) error {
	dir, err := os.MkdirTemp("", "revision-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := r.WriteDir(dir); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	zw := zip.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := zip.FileInfoHeader(info)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
			_, err = zw.CreateHeader(hdr)
			return err
		}
		hdr.Method = zip.Deflate
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			return err
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			_, err = io.WriteString(w, t)
			return err
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		_, err = io.Copy(w, in)
		return err
	})
	if err != nil {
		f.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteZip writes a zip whose entries are exactly the given names, hostile
// ones included (for tests of the unpacker's refusals).
func WriteZip(path string, entries map[string]string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	zw := zip.NewWriter(f)
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: n, Method: zip.Deflate})
		if err != nil {
			f.Close()
			return err
		}
		if _, err := io.WriteString(w, entries[n]); err != nil {
			f.Close()
			return err
		}
	}
	if err := zw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
