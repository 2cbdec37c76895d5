package bundle

import (
	"archive/tar"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A "./" member describes the root itself: tar -xp would give its mode to
// the revision directory, so a "./" of mode 777 made the whole revision
// writable by everyone (issue 17.1). Its time is kept, never its mode, and
// nothing below gets group or other write bits or another owner.
func TestRootEntryModeIsNotTrusted(t *testing.T) {
	s := newSandbox(t)
	_, err := s.unpack(t, "b", tarBytes(t,
		ent{name: "./", typ: tar.TypeDir, mode: 0o777, uid: 4711, gid: 4711},
		ent{name: "./scripts/", typ: tar.TypeDir, mode: 0o777, uid: 4711, gid: 4711},
		ent{name: "./scripts/stop.sh", body: "#!/bin/sh\n", mode: 0o6777, uid: 4711, gid: 4711},
		ent{name: "./appspec.yml", body: "a", mode: 0o666, uid: 4711},
	), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Stat(s.dest); info.Mode().Perm() != releaseRootMode || !info.ModTime().Equal(baseTime()) {
		t.Errorf("root mode %v mtime %v", info.Mode(), info.ModTime())
	}
	err = filepath.WalkDir(s.dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		if int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid() || info.Mode()&0o022 != 0 || info.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			t.Errorf("%s: %v owned %d:%d", p, info.Mode(), st.Uid, st.Gid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A packaged virtualenv links to the host's interpreter by absolute path:
// the link is data and unpacks as it is (issue 14.2), also when another
// link of the revision leads to it.
func TestAbsoluteSymlinksAreData(t *testing.T) {
	for _, f := range allFormats() {
		t.Run(string(f), func(t *testing.T) {
			s := newSandbox(t)
			res, err := s.unpack(t, "b", archiveBytes(t, f,
				ent{name: "appspec.yml", body: "version: 0.0\nos: linux\n"},
				ent{name: "venv/bin/python3", typ: tar.TypeSymlink, link: "/usr/bin/python3"},
				ent{name: "venv/bin/python", typ: tar.TypeSymlink, link: "python3"},
				ent{name: "venv/lib64", typ: tar.TypeSymlink, link: "lib"},
				ent{name: "venv/lib/site.py", body: "x"},
			), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			for p, want := range map[string]string{"venv/bin/python3": "/usr/bin/python3", "venv/bin/python": "python3", "venv/lib64": "lib"} {
				got, err := os.Readlink(filepath.Join(s.dest, p))
				if err != nil || got != want {
					t.Errorf("%s -> %q (%v), want %q", p, got, err, want)
				}
			}
			if res.Symlinks != 3 {
				t.Errorf("%d symlinks", res.Symlinks)
			}
		})
	}
}

// The record keeps a tar header's owner names for Install (GNU tar as root
// maps owners by name).
func TestOwnerNamesAreRecorded(t *testing.T) {
	var buf strings.Builder
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "appspec.yml", Mode: 0o644, Size: 1, Uid: 1000, Gid: 1000, Uname: "ubuntu", Gname: "ubuntu"},
		{Name: "run.sh", Mode: 0o4755, Size: 1, Uid: 4711, Gid: 4712},
	} {
		h.Typeflag, h.ModTime, h.Format = tar.TypeReg, baseTime(), tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte("x"))
	}
	tw.Close()
	s := newSandbox(t)
	res, err := s.unpack(t, "b.tar", []byte(buf.String()), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res.Entries)
	var back []Entry
	json.Unmarshal(b, &back)
	want := []Owner{{UID: 1000, GID: 1000, User: "ubuntu", Group: "ubuntu"}, {UID: 4711, GID: 4712}}
	for i, e := range back {
		if e.Owner == nil || *e.Owner != want[i] {
			t.Errorf("%s: owner %+v, want %+v", e.Path, e.Owner, want[i])
		}
	}
	if back[1].Mode != 0o755|fs.ModeSetuid {
		t.Errorf("recorded mode %v", back[1].Mode)
	}
	if _, err := tarOwner(&tar.Header{Uname: "bad:name"}); err == nil {
		t.Errorf("a user name with ':' is recorded")
	}
}
