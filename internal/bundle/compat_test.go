package bundle

import (
	"archive/tar"
	"archive/zip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests build a revision tree on disk, archive it with the real tar
// and zip (archive/tar and archive/zip stand in when a tool is missing),
// and check that UnpackFile produces exactly what the source holds and
// exactly what CodeDeploy's own commands (tar -xpf, unzip -qo) produce.

// snap is what two unpacked trees must agree on for one path.
type snap struct {
	typ      string
	mode     fs.FileMode
	sum      string
	link     string
	mtime    int64
	uid, gid uint32
}

func (s snap) String() string {
	return fmt.Sprintf("%s %v sum=%.8s link=%q mtime=%d owner=%d:%d", s.typ, s.mode, s.sum, s.link, s.mtime, s.uid, s.gid)
}

// snapshot describes every path under root, "." included.
func snapshot(t testing.TB, root string) map[string]snap {
	t.Helper()
	out := map[string]snap{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		s := snap{mode: info.Mode() & permBits, mtime: info.ModTime().Unix(), uid: st.Uid, gid: st.Gid}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			s.typ, s.mode = TypeSymlink, fs.ModePerm
			s.link, err = os.Readlink(p)
		case info.IsDir():
			s.typ = TypeDir
		default:
			s.typ = TypeFile
			s.sum, err = fileSum(p)
		}
		out[filepath.ToSlash(rel)] = s
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func fileSum(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), err
}

// buildSourceTree writes the tree every compat test archives.
func buildSourceTree(t testing.TB, root string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	files := []struct {
		path string
		mode fs.FileMode
		body string
	}{
		{"appspec.yml", 0o644, "version: 0.0\nos: linux\n"},
		{"scripts/start.sh", 0o755, "#!/bin/sh\necho start\n"},
		{"bin/suid", 0o755 | fs.ModeSetuid, "setuid program"},
		{"conf/app.conf", 0o640, "key=value\n"},
		{"a/b/c/deep.txt", 0o600, "deep\n"},
		{"shared/setgid/file", 0o664, "in a setgid dir"},
	}
	for _, f := range files {
		p := filepath.Join(root, f.path)
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, []byte(f.body), 0o600))
		must(os.Chmod(p, f.mode))
	}
	must(os.Chmod(filepath.Join(root, "conf"), 0o750))
	must(os.Chmod(filepath.Join(root, "shared/setgid"), 0o2775))
	must(os.Link(filepath.Join(root, "scripts/start.sh"), filepath.Join(root, "scripts/start-copy.sh")))
	must(os.Symlink("scripts/start.sh", filepath.Join(root, "current")))
	must(os.Symlink("../appspec.yml", filepath.Join(root, "conf/spec")))
	must(os.Symlink("a/b", filepath.Join(root, "lib")))
	if os.Geteuid() == 0 {
		must(os.Lchown(filepath.Join(root, "conf/app.conf"), 1234, 2345))
	}
	// Distinct times, set deepest first so directories keep theirs.
	var paths []string
	must(filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	}))
	for i := len(paths) - 1; i >= 0; i-- {
		ts := time.Date(2022, 1, 2, 3, 4, 5, 0, time.UTC).Add(time.Duration(i) * time.Hour)
		spec := []unix.Timespec{unix.NsecToTimespec(ts.UnixNano()), unix.NsecToTimespec(ts.UnixNano())}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], spec, unix.AT_SYMLINK_NOFOLLOW))
	}
}

func run(t testing.TB, dir string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func TestCompatTar(t *testing.T) {
	for _, f := range []Format{FormatTar, FormatTgz} {
		t.Run(string(f), func(t *testing.T) {
			s := newSandbox(t)
			src := filepath.Join(s.base, "src")
			buildSourceTree(t, src)
			want := snapshot(t, src)
			bundle := filepath.Join(s.bundles, "bundle.tar")
			if tool, err := exec.LookPath("tar"); err == nil {
				flags := "-cpf"
				if f == FormatTgz {
					flags = "-czpf"
				}
				run(t, src, tool, flags, bundle, ".")
			} else {
				t.Logf("tar not found (%v): archiving with archive/tar", err)
				writeTarFromTree(t, src, bundle, f == FormatTgz)
			}
			res, err := UnpackFile(t.Context(), bundle, s.dest, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			// The record holds what the archive says (what Install
			// applies); the disk holds the agent's normalised copy.
			compareSnaps(t, "source", recorded(res), withoutRoot(want), false)
			compareSnaps(t, "disk", snapshot(t, s.dest), normalised(want), false)

			if tool, err := exec.LookPath("tar"); err == nil {
				ref := filepath.Join(s.base, "ref")
				if err := os.Mkdir(ref, 0o700); err != nil {
					t.Fatal(err)
				}
				run(t, ref, tool, "-xpf", bundle)
				compareSnaps(t, "tar -xpf", recorded(res), withoutRoot(snapshot(t, ref)), false)
			}
		})
	}
}

func TestCompatZip(t *testing.T) {
	s := newSandbox(t)
	src := filepath.Join(s.base, "src")
	buildSourceTree(t, src)
	bundle := filepath.Join(s.bundles, "bundle.tar") // CodeDeploy's name for every bundle
	if tool, err := exec.LookPath("zip"); err == nil {
		run(t, src, tool, "-r", "-y", "-q", filepath.Join(s.bundles, "b.zip"), ".")
		if err := os.Rename(filepath.Join(s.bundles, "b.zip"), bundle); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Logf("zip not found (%v): archiving with archive/zip", err)
		writeZipFromTree(t, src, bundle)
	}
	res, err := UnpackFile(t.Context(), bundle, s.dest, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	got := recorded(res)

	// What unzip -qo makes of the source: setuid/setgid/sticky cleared,
	// owned by whoever unpacks, no root entry in a zip.
	want := withoutRoot(snapshot(t, src))
	for p, w := range want {
		w.mode &^= fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
		w.uid, w.gid = uint32(os.Geteuid()), uint32(os.Getegid())
		want[p] = w
	}
	compareSnaps(t, "source", got, want, false)
	disk, norm := snapshot(t, s.dest), normalised(snapshot(t, src))
	// A zip has no root entry: the root's time is the unpack's.
	r := norm["."]
	r.mtime = disk["."].mtime
	norm["."] = r
	compareSnaps(t, "disk", disk, norm, false)

	if tool, err := exec.LookPath("unzip"); err == nil {
		ref := filepath.Join(s.base, "ref")
		run(t, s.base, tool, "-qo", bundle, "-d", ref)
		// unzip does not set a symlink's own time; we do.
		compareSnaps(t, "unzip -qo", got, withoutRoot(snapshot(t, ref)), true)
	}
}

// recorded is what a Result says about each entry: the archive's modes
// and owners (zip entries have none: the unpacker's).
func recorded(res *Result) map[string]snap {
	out := map[string]snap{}
	for _, e := range res.Entries {
		s := snap{typ: e.Type, mode: e.Mode, sum: e.SHA256, link: e.LinkTarget, mtime: e.ModTime.Unix(),
			uid: uint32(os.Geteuid()), gid: uint32(os.Getegid())}
		if e.Owner != nil {
			s.uid, s.gid = uint32(e.Owner.UID), uint32(e.Owner.GID)
		}
		out[e.Path] = s
	}
	return out
}

func withoutRoot(m map[string]snap) map[string]snap {
	out := maps.Clone(m)
	delete(out, ".")
	return out
}

// normalised is the unpacked copy of a source tree: everything the
// unpacker's, modes per releaseMode, the root private.
func normalised(src map[string]snap) map[string]snap {
	out := map[string]snap{}
	for p, s := range src {
		s.uid, s.gid = uint32(os.Geteuid()), uint32(os.Getegid())
		switch {
		case p == ".":
			s.mode = releaseRootMode
		case s.typ == TypeDir:
			s.mode = releaseMode(kindDir, s.mode)
		case s.typ == TypeFile:
			s.mode = releaseMode(kindFile, s.mode)
		}
		out[p] = s
	}
	return out
}

func compareSnaps(t *testing.T, what string, got, want map[string]snap, ignoreLinkTimes bool) {
	t.Helper()
	for _, p := range slices.Sorted(maps.Keys(want)) {
		w, g := want[p], got[p]
		if ignoreLinkTimes && w.typ == TypeSymlink {
			g.mtime = w.mtime
		}
		if g != w {
			t.Errorf("%s: %s: got  %v\n%*swant %v", what, p, g, len(what)+len(p)+4, "", w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: unexpected %s", what, p)
		}
	}
}

// writeTarFromTree is the stand-in for tar -cpf when tar is missing.
func writeTarFromTree(t testing.TB, src, dst string, gz bool) {
	t.Helper()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var w io.Writer = out
	if gz {
		zw := newGzipWithExtra(out, nil)
		defer zw.Close()
		w = zw
	}
	tw := tar.NewWriter(w)
	defer tw.Close()
	seen := map[uint64]string{}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		link, _ := os.Readlink(p)
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = "./" + filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		st := info.Sys().(*syscall.Stat_t)
		if info.Mode().IsRegular() {
			if first, ok := seen[st.Ino]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				seen[st.Ino] = hdr.Name
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// writeZipFromTree is the stand-in for zip -r -y when zip is missing.
func writeZipFromTree(t testing.TB, src, dst string) {
	t.Helper()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	zw := zip.NewWriter(out)
	defer zw.Close()
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == src {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		h, err := zip.FileInfoHeader(info)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			h.Name += "/"
		} else {
			h.Method = zip.Deflate
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			_, err = io.WriteString(w, link)
			return err
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = w.Write(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
