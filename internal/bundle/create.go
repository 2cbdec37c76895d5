package bundle

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// WriteTarGz writes dir as a tar.gz in a reproducible form: entries in
// sorted order, owners fixed to root, modes and mtimes kept, symlinks kept
// as links. Special files are refused.
func WriteTarGz(ctx context.Context, dir string, w io.Writer) error {
	return WriteTarGzWith(ctx, dir, w, TarOptions{})
}

// TarOptions change what WriteTarGzWith puts into the bundle.
type TarOptions struct {
	// Skip leaves out the entry at rel (slash-separated, relative to the
	// directory); a skipped directory is left out with everything in it.
	Skip func(rel string, isDir bool) bool
	// Extra are files made in memory (a generated appspec.yml) added at
	// the root of the bundle; a file of the same name in the directory is
	// replaced.
	Extra []ExtraFile
}

// ExtraFile is a file that exists only in the bundle.
type ExtraFile struct {
	Name    string // at the root of the bundle
	Content []byte
	Mode    fs.FileMode
	// ModTime should come from the input (the newest file of the tree)
	// rather than the clock, so that the bundle stays reproducible.
	ModTime time.Time
}

// WriteTarGzWith is WriteTarGz with entries left out and extra files added.
func WriteTarGzWith(ctx context.Context, dir string, w io.Writer, opts TarOptions) error {
	gz, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	extra := map[string]*ExtraFile{}
	for i := range opts.Extra {
		extra[opts.Extra[i].Name] = &opts.Extra[i]
	}
	var paths []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if opts.Skip != nil && opts.Skip(rel, d.IsDir()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if _, ok := extra[rel]; !ok {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk %s: %w", dir, err)
	}
	for name := range extra {
		paths = append(paths, filepath.Join(dir, name))
	}
	sort.Strings(paths)
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if e, ok := extra[filepath.ToSlash(rel)]; ok {
			err = addExtraEntry(tw, e)
		} else {
			err = addTarEntry(tw, dir, p)
		}
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func addExtraEntry(tw *tar.Writer, e *ExtraFile) error {
	hdr := &tar.Header{
		Typeflag: tar.TypeReg, Name: e.Name, Size: int64(len(e.Content)), Mode: int64(e.Mode.Perm()),
		ModTime: e.ModTime, Uname: "root", Gname: "root", Format: tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", e.Name, err)
	}
	if _, err := tw.Write(e.Content); err != nil {
		return fmt.Errorf("%s: %w", e.Name, err)
	}
	return nil
}

func addTarEntry(tw *tar.Writer, dir, p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	rel, _ := filepath.Rel(dir, p)
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	} else if !fi.Mode().IsRegular() && !fi.IsDir() {
		return fmt.Errorf("%s: special files cannot go into a bundle", p)
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	hdr.Name = filepath.ToSlash(rel)
	if fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "root", "root"
	// PAX keeps sub-second mtimes; atime and ctime would make two bundles
	// of the same tree differ, so they are left out.
	hdr.Format = tar.FormatPAX
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if fi.Mode().IsRegular() {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}
