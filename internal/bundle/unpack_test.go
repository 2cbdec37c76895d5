package bundle

import (
	"archive/tar"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// revisionEnts is a realistic revision: nested and implied directories,
// scripts, a setuid program, symlinks (to a file, up a level, to a
// directory), a hard link, distinct modes and times, and an owner.
func revisionEnts() []ent {
	at := func(h int) time.Time { return baseTime().Add(time.Duration(h) * time.Hour) }
	return []ent{
		{name: "appspec.yml", body: "version: 0.0\nos: linux\n", mtime: at(1)},
		{name: "scripts/", typ: tar.TypeDir, mode: 0o755, mtime: at(2)},
		{name: "scripts/start.sh", body: "#!/bin/sh\necho start\n", mode: 0o755, mtime: at(3), uid: 1234, gid: 2345},
		{name: "bin/suid-tool", body: "\x7fELF-ish", mode: 0o4755, mtime: at(4)},
		{name: "conf/", typ: tar.TypeDir, mode: 0o750, mtime: at(5)},
		{name: "conf/app.conf", body: "key=value\n", mode: 0o640, mtime: at(6)},
		{name: "a/b/c/deep.txt", body: "deep\n", mtime: at(7)},
		{name: "current", typ: tar.TypeSymlink, link: "scripts/start.sh", mtime: at(8)},
		{name: "conf/spec-link", typ: tar.TypeSymlink, link: "../appspec.yml", mtime: at(9)},
		{name: "lib", typ: tar.TypeSymlink, link: "a/b", mtime: at(10)},
		{name: "./scripts/./sticky/", typ: tar.TypeDir, mode: 0o1777, mtime: at(11)},
	}
}

// wantEntry is what one entry of revisionEnts must unpack to.
type wantEntry struct {
	typ   string
	mode  fs.FileMode
	body  string
	link  string
	mtime time.Time
	uid   int
}

func revisionWant(f Format) map[string]wantEntry {
	at := func(h int) time.Time { return baseTime().Add(time.Duration(h) * time.Hour) }
	suid := 0o755 | fs.ModeSetuid
	sticky := 0o777 | fs.ModeSticky
	uid := 1234
	if f == FormatZip {
		// unzip clears setuid/setgid/sticky and keeps no owner.
		suid, sticky, uid = 0o755, 0o777, 0
	}
	want := map[string]wantEntry{
		"appspec.yml":      {typ: TypeFile, mode: 0o644, body: "version: 0.0\nos: linux\n", mtime: at(1)},
		"scripts":          {typ: TypeDir, mode: 0o755, mtime: at(2)},
		"scripts/start.sh": {typ: TypeFile, mode: 0o755, body: "#!/bin/sh\necho start\n", mtime: at(3), uid: uid},
		"bin":              {typ: TypeDir, mode: 0o755},
		"bin/suid-tool":    {typ: TypeFile, mode: suid, body: "\x7fELF-ish", mtime: at(4)},
		"conf":             {typ: TypeDir, mode: 0o750, mtime: at(5)},
		"conf/app.conf":    {typ: TypeFile, mode: 0o640, body: "key=value\n", mtime: at(6)},
		"a":                {typ: TypeDir, mode: 0o755},
		"a/b":              {typ: TypeDir, mode: 0o755},
		"a/b/c":            {typ: TypeDir, mode: 0o755},
		"a/b/c/deep.txt":   {typ: TypeFile, mode: 0o644, body: "deep\n", mtime: at(7)},
		"current":          {typ: TypeSymlink, mode: 0o777, link: "scripts/start.sh", mtime: at(8)},
		"conf/spec-link":   {typ: TypeSymlink, mode: 0o777, link: "../appspec.yml", mtime: at(9)},
		"lib":              {typ: TypeSymlink, mode: 0o777, link: "a/b", mtime: at(10)},
		"scripts/sticky":   {typ: TypeDir, mode: sticky, mtime: at(11)},
	}
	if f != FormatZip {
		want["scripts/start-copy.sh"] = want["scripts/start.sh"]
	}
	return want
}

func TestUnpackRevision(t *testing.T) {
	for _, f := range allFormats() {
		t.Run(string(f), func(t *testing.T) {
			ents := revisionEnts()
			if f != FormatZip {
				ents = append(ents, ent{name: "scripts/start-copy.sh", typ: tar.TypeLink, link: "scripts/start.sh"})
			}
			data := archiveBytes(t, f, ents...)
			s := newSandbox(t)
			start := time.Now()
			res, err := s.unpack(t, "bundle.tar", data, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			s.assertOnlyDest(t)
			want := revisionWant(f)
			if res.Format != f || res.SHA256 != sha256Hex(data) || res.Size != int64(len(data)) || res.StrippedDir != "" {
				t.Errorf("result header = %q %s %d %q", res.Format, res.SHA256, res.Size, res.StrippedDir)
			}
			checkEntries(t, s.dest, res, want, start)
		})
	}
}

// checkEntries compares a Result and the tree on disk with want. Implied
// directories (zero mtime in want) must carry a time from the unpack.
func checkEntries(t *testing.T, dest string, res *Result, want map[string]wantEntry, start time.Time) {
	t.Helper()
	if len(res.Entries) != len(want) {
		t.Errorf("%d entries, want %d: %+v", len(res.Entries), len(want), res.Entries)
	}
	var files, dirs, links int
	var bytes int64
	for i, e := range res.Entries {
		if i > 0 && res.Entries[i-1].Path >= e.Path {
			t.Errorf("entries not sorted: %q before %q", res.Entries[i-1].Path, e.Path)
		}
		w, ok := want[e.Path]
		if !ok {
			t.Errorf("unexpected entry %+v", e)
			continue
		}
		p := filepath.Join(dest, filepath.FromSlash(e.Path))
		info, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", e.Path, err)
			continue
		}
		if e.Type != w.typ || e.Mode != w.mode {
			t.Errorf("%s: entry type %s mode %v, want %s %v", e.Path, e.Type, e.Mode, w.typ, w.mode)
		}
		wantTime := w.mtime
		if wantTime.IsZero() {
			if e.ModTime.Before(start.Add(-time.Second)) {
				t.Errorf("%s: implied directory time %v is before the unpack", e.Path, e.ModTime)
			}
			wantTime = e.ModTime
		}
		if !e.ModTime.Equal(wantTime) {
			t.Errorf("%s: entry mtime %v, want %v", e.Path, e.ModTime, wantTime)
		}
		if e.Type != TypeSymlink && !info.ModTime().Equal(wantTime) {
			t.Errorf("%s: disk mtime %v, want %v", e.Path, info.ModTime(), wantTime)
		}
		switch w.typ {
		case TypeFile:
			files++
			bytes += int64(len(w.body))
			b, err := os.ReadFile(p)
			if err != nil || string(b) != w.body || !info.Mode().IsRegular() {
				t.Errorf("%s: content %q (%v), mode %v", e.Path, b, err, info.Mode())
			}
			if e.SHA256 != sha256Hex([]byte(w.body)) || e.Size != int64(len(w.body)) {
				t.Errorf("%s: entry sha256 %s size %d", e.Path, e.SHA256, e.Size)
			}
			// The unpacked copy is the agent's, whatever the archive says
			// (issue 17.1); the archive's mode and owner are recorded.
			if want := releaseMode(kindFile, w.mode); info.Mode()&permBits != want {
				t.Errorf("%s: disk mode %v, want %v", e.Path, info.Mode(), want)
			}
			if st, ok := info.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid() {
				t.Errorf("%s: owner %v, want the unpacker's", e.Path, info.Sys())
			}
			checkOwner(t, e, w, res.Format)
		case TypeDir:
			dirs++
			if !info.IsDir() || info.Mode()&permBits != releaseDirMode {
				t.Errorf("%s: disk mode %v, want dir %v", e.Path, info.Mode(), releaseDirMode)
			}
		case TypeSymlink:
			links++
			got, err := os.Readlink(p)
			if err != nil || got != w.link || e.LinkTarget != w.link {
				t.Errorf("%s: link %q (%v), entry %q, want %q", e.Path, got, err, e.LinkTarget, w.link)
			}
		}
	}
	if res.Files != files || res.Dirs != dirs || res.Symlinks != links {
		t.Errorf("counts files=%d dirs=%d links=%d, want %d %d %d", res.Files, res.Dirs, res.Symlinks, files, dirs, links)
	}
	hardlinked := int64(0)
	if _, ok := want["scripts/start-copy.sh"]; ok {
		hardlinked = int64(len(want["scripts/start-copy.sh"].body))
	}
	if res.UnpackedBytes != bytes-hardlinked {
		t.Errorf("UnpackedBytes %d, want %d", res.UnpackedBytes, bytes-hardlinked)
	}
}

// checkOwner: tar entries record the header's owner, zip entries none.
func checkOwner(t *testing.T, e Entry, w wantEntry, f Format) {
	t.Helper()
	switch {
	case (e.Owner == nil) != (f == FormatZip):
		t.Errorf("%s: recorded owner %+v for a %s entry", e.Path, e.Owner, f)
	case e.Owner != nil && e.Owner.UID != w.uid:
		t.Errorf("%s: recorded owner %+v, want uid %d", e.Path, e.Owner, w.uid)
	}
}

func TestHardLinkSharesInode(t *testing.T) {
	s := newSandbox(t)
	_, err := s.unpack(t, "b.tar", tarBytes(t,
		ent{name: "appspec.yml", body: "x"},
		ent{name: "dir/copy", typ: tar.TypeLink, link: "./appspec.yml"},
	), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(filepath.Join(s.dest, "appspec.yml"))
	b, _ := os.Stat(filepath.Join(s.dest, "dir/copy"))
	if !os.SameFile(a, b) {
		t.Error("hard link is not the same file")
	}
}

func TestRepeatedFileOverwrites(t *testing.T) {
	for _, f := range allFormats() {
		t.Run(string(f), func(t *testing.T) {
			s := newSandbox(t)
			res, err := s.unpack(t, "b", archiveBytes(t, f,
				ent{name: "appspec.yml", body: "first version"},
				ent{name: "d/", typ: tar.TypeDir, mode: 0o700},
				ent{name: "d/", typ: tar.TypeDir, mode: 0o755},
				ent{name: "appspec.yml", body: "second"},
			), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(filepath.Join(s.dest, "appspec.yml"))
			if string(b) != "second" || res.Entries[0].SHA256 != sha256Hex(b) || res.Files != 1 || res.Dirs != 1 {
				t.Errorf("got %q, %+v", b, res)
			}
		})
	}
}

func TestStripWrappingDir(t *testing.T) {
	for _, f := range allFormats() {
		t.Run(string(f), func(t *testing.T) {
			s := newSandbox(t)
			res, err := s.unpack(t, "b", archiveBytes(t, f,
				ent{name: "myapp-1a2b3c/", typ: tar.TypeDir, mode: 0o750},
				ent{name: "myapp-1a2b3c/AppSpec.YML", body: "version: 0.0\n"},
				ent{name: "myapp-1a2b3c/scripts/run.sh", body: "#!/bin/sh\n", mode: 0o755},
				ent{name: "myapp-1a2b3c/run", typ: tar.TypeSymlink, link: "scripts/run.sh"},
			), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			s.assertOnlyDest(t)
			if res.StrippedDir != "myapp-1a2b3c" {
				t.Errorf("StrippedDir = %q", res.StrippedDir)
			}
			var paths []string
			for _, e := range res.Entries {
				paths = append(paths, e.Path)
			}
			if want := []string{"AppSpec.YML", "run", "scripts", "scripts/run.sh"}; !slices.Equal(paths, want) {
				t.Errorf("paths %q, want %q", paths, want)
			}
			if b, err := os.ReadFile(filepath.Join(s.dest, "run")); err != nil || string(b) != "#!/bin/sh\n" {
				t.Errorf("run via link: %q %v", b, err)
			}
			if info, _ := os.Stat(s.dest); info.Mode().Perm() != releaseRootMode {
				t.Errorf("revision root mode %v, want %v whatever the wrapping dir's", info.Mode(), releaseRootMode)
			}
		})
	}
}

// GitHub tarballs start with a pax global header and wrap everything in
// one directory; CodeDeploy's strip rule exists for them.
func TestStripGitHubTarball(t *testing.T) {
	s := newSandbox(t)
	res, err := s.unpack(t, "b", gzipBytes(t, gitHubTarball(t, "52fdfc0")), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if res.StrippedDir != "owner-repo-52fdfc0" || len(res.Entries) != 1 || res.Entries[0].Path != "appspec.yml" {
		t.Errorf("got %+v", res)
	}
}

func TestNoStrip(t *testing.T) {
	cases := map[string][]ent{
		"no appspec in the single dir": {
			{name: "wrap/readme.txt", body: "r"}, {name: "wrap/src/main.go", body: "m"},
		},
		"appspec only deeper": {
			{name: "wrap/sub/appspec.yml", body: "a"},
		},
		"two top-level entries": {
			{name: "wrap/appspec.yml", body: "a"}, {name: "other.txt", body: "o"},
		},
		"single top-level file": {
			{name: "appspec.yml", body: "a"},
		},
		"single top-level symlink to a dir": {
			{name: "appspec-dir", typ: tar.TypeSymlink, link: "."},
		},
	}
	for name, ents := range cases {
		for _, f := range allFormats() {
			t.Run(name+"/"+string(f), func(t *testing.T) {
				s := newSandbox(t)
				res, err := s.unpack(t, "b", archiveBytes(t, f, ents...), Limits{})
				if err != nil {
					t.Fatal(err)
				}
				if res.StrippedDir != "" {
					t.Errorf("stripped %q", res.StrippedDir)
				}
				if _, err := os.Lstat(filepath.Join(s.dest, filepath.FromSlash(res.Entries[0].Path))); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

func TestEmptyZipUnpacksToEmptyRoot(t *testing.T) {
	s := newSandbox(t)
	res, err := s.unpack(t, "b.zip", zipBytes(t), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Format != FormatZip || len(res.Entries) != 0 {
		t.Errorf("got %+v", res)
	}
	if info, err := os.Stat(s.dest); err != nil || info.Mode().Perm() != releaseRootMode {
		t.Errorf("dest: %v %v", info, err)
	}
}

// CodeDeploy names every bundle bundle.tar: the name must not matter.
func TestFormatDetectedByContent(t *testing.T) {
	for _, c := range []struct {
		name string
		f    Format
	}{{"x.tgz", FormatZip}, {"bundle.tar", FormatTgz}, {"bundle.zip", FormatTar}, {"noext", FormatZip}} {
		s := newSandbox(t)
		res, err := s.unpack(t, c.name, archiveBytes(t, c.f, ent{name: "appspec.yml", body: "a"}), Limits{})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if res.Format != c.f {
			t.Errorf("%s: format %q, want %q", c.name, res.Format, c.f)
		}
	}
}

func TestDestMustNotExist(t *testing.T) {
	s := newSandbox(t)
	if err := os.Mkdir(s.dest, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := s.unpack(t, "b.tar", tarBytes(t, ent{name: "a", body: "a"}), Limits{})
	wantErr(t, err, "already exists")
	if left, _ := os.ReadDir(s.box); len(left) != 1 {
		t.Errorf("sandbox holds %d entries", len(left))
	}
}

func TestDestParentMissing(t *testing.T) {
	s := newSandbox(t)
	path := s.bundle(t, "b.tar", tarBytes(t, ent{name: "a", body: "a"}))
	_, err := UnpackFile(context.Background(), path, filepath.Join(s.box, "missing", "rev"), Limits{})
	wantErr(t, err, "temporary directory")
	s.assertClean(t)
}

func TestResultJSON(t *testing.T) {
	s := newSandbox(t)
	res, err := s.unpack(t, "b.tar", tarBytes(t, revisionEnts()...), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil || back.SHA256 != res.SHA256 || len(back.Entries) != len(res.Entries) {
		t.Errorf("round trip: %v %s", err, b)
	}
}

// GNU tar takes a regular-file member whose name ends in a slash for a
// directory (archive/tar only does so for the old type '\x00').
func TestTarRegularWithSlashIsDir(t *testing.T) {
	b := tarBytes(t, ent{name: "d/", typ: tar.TypeDir}, ent{name: "d/f", body: "x"})
	b[156] = tar.TypeReg // the first header's type flag
	s := newSandbox(t)
	res, err := s.unpack(t, "b.tar", fixTarChecksum(b, 0), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Dirs != 1 || res.Files != 1 {
		t.Errorf("got %+v", res)
	}
}

// gzip -d inflates concatenated members as one stream (pigz and cat make
// such files), and ignores bytes after the last member.
func TestTgzMultiMemberAndTrailingBytes(t *testing.T) {
	tb := tarBytes(t, ent{name: "appspec.yml", body: "a"}, ent{name: "b.txt", body: strings.Repeat("b", 5000)})
	half := len(tb) / 2
	data := append(gzipBytes(t, tb[:half]), gzipBytes(t, tb[half:])...)
	data = append(data, "not gzip, ignored"...)
	s := newSandbox(t)
	res, err := s.unpack(t, "b", data, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 2 || res.SHA256 != sha256Hex(data) || res.Size != int64(len(data)) {
		t.Errorf("got %+v", res)
	}
}
