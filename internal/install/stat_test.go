package install

import (
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
)

// walkTree and dirStatter answer exactly what filepath.WalkDir and
// os.Lstat do, for every kind of file and mode bit the plan looks at.
func TestStatHelpersAgreeWithPackageOS(t *testing.T) {
	root := t.TempDir()
	mk := func(p string) string { return filepath.Join(root, p) }
	os.MkdirAll(mk("b/c"), 0o755)
	os.MkdirAll(mk("a"), 0o700)
	os.WriteFile(mk("a/z"), []byte("zz"), 0o644)
	os.WriteFile(mk("b/c/suid"), []byte("x"), 0o4755)
	os.Chmod(mk("b/c/suid"), 0o4755|fs.ModeSetuid)
	os.Chmod(mk("b/c"), 0o1777|fs.ModeSticky)
	os.Symlink("a/z", mk("b/link"))
	os.Symlink("a", mk("dirlink"))
	syscall.Mkfifo(mk("b/fifo"), 0o600)
	os.WriteFile(mk("B"), nil, 0o600)

	type seen struct {
		Path              string
		Mode              fs.FileMode
		Size              int64
		MTime             int64
		Dev, Ino          uint64
		UID, GID          uint32
		CTimeSec, CTimeNs int64
	}
	of := func(p string, fi fs.FileInfo) seen {
		st := fi.Sys().(*syscall.Stat_t)
		return seen{p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano(), st.Dev, st.Ino, st.Uid, st.Gid, st.Ctim.Sec, st.Ctim.Nsec}
	}
	var want, got []seen
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		fi, err := os.Lstat(p)
		want = append(want, of(p, fi))
		return err
	})
	if err := walkTree(root, func(p string, fi fs.FileInfo) error { got = append(got, of(p, fi)); return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("walkTree:\n got %+v\nwant %+v", got, want)
	}
	ds := newDirStatter()
	defer ds.close()
	for _, w := range want {
		fi, err := ds.lstat(w.Path)
		if err != nil || fi == nil {
			t.Fatalf("lstat %s: %v", w.Path, err)
		}
		if g := of(w.Path, fi); g != w {
			t.Errorf("dirStatter.lstat:\n got %+v\nwant %+v", g, w)
		}
	}
	for _, p := range []string{mk("nothing"), mk("nodir/x"), mk("dirlink/z")} {
		fi, err := ds.lstat(p)
		lfi, lerr := os.Lstat(p)
		if (fi == nil) != (lerr != nil) || err != nil {
			t.Errorf("lstat %s: %v %v; os.Lstat: %v %v", p, fi, err, lfi, lerr)
		}
	}
	// A path under a file: an error, as lstat gives.
	if _, err := ds.lstat(mk("B/x")); err == nil {
		t.Errorf("lstat under a file: no error")
	}
}
