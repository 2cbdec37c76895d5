package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/rollback-agent/rollback-agent/internal/appspec"
)

// preflight checks the plan against the disk before anything changes. It
// returns the foreign files to leave alone (RETAIN) and marks directories
// that existed before and are not ours, and directories of ours that a
// symlink has replaced since (they are replaced back, issue 14.5).
func preflight(t *tree, p *plan, prev *merged, behavior string) (map[string]bool, error) {
	skip := map[string]bool{}
	replaced := map[string]bool{}
	var conflicts []string
	for _, it := range p.items {
		st, err := t.lstat(it.Path)
		var ue *errUntrusted
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case errors.As(err, &ue) && ue.asked != "" && replaced[ue.asked]:
			continue // below a link that is replaced by a new directory
		case errors.As(err, &ue):
			conflicts = append(conflicts, fmt.Sprintf("%s: reached through %v; nothing is installed through it: remove the link or point files[%d].destination at its target", it.Path, ue, it.fromIdx))
			continue
		case err != nil:
			return nil, fmt.Errorf("install: inspect %s: %w", it.Path, err)
		}
		it.disk = st
		pe, owned := prev.get(it.Path)
		onDisk := kindOfStat(st)
		if owned && pe.Kind == onDisk {
			continue // ours: cleanup removes or keeps it
		}
		if it.Kind == KindDir {
			switch {
			case onDisk == KindDir:
				it.preexisting = true
			case onDisk == KindSymlink && owned && pe.Kind == KindDir:
				// A hook swapped our directory for a link (magento's
				// releases): the link goes, a directory takes its place,
				// and nothing is removed or written through the link.
				it.replaceLink = true
				replaced[it.Path] = true
			case onDisk == KindSymlink && followsToDir(t, it.Path):
				// root's own link (/var/www -> /data/www), as CodeDeploy
				// installs through it.
				it.preexisting = true
			case onDisk == KindSymlink:
				target, _ := t.readlink(it.Path)
				conflicts = append(conflicts, fmt.Sprintf("%s: a symlink (to %s) that a non-root user could have made is where files[%d] needs a directory; nothing is installed through it: remove it, or point the destination at its target", it.Path, target, it.fromIdx))
			default:
				conflicts = append(conflicts, fmt.Sprintf("%s: a %s is where files[%d] needs a directory", it.Path, onDisk, it.fromIdx))
			}
			continue
		}
		if onDisk == KindDir {
			conflicts = append(conflicts, fmt.Sprintf("%s: a directory is where files[%d] installs a %s", it.Path, it.fromIdx, it.Kind))
			continue
		}
		switch behavior {
		case appspec.Overwrite:
			// Replaced and recorded, so the next deployment removes it.
		case appspec.Retain:
			skip[it.Path] = true
		default:
			conflicts = append(conflicts, fmt.Sprintf("%s: a file already exists at this location (file_exists_behavior is DISALLOW; use OVERWRITE or RETAIN, or remove it)", it.Path))
		}
	}
	if len(conflicts) > 0 {
		more := ""
		if len(conflicts) > 20 {
			more = fmt.Sprintf("\n  ... and %d more", len(conflicts)-20)
			conflicts = conflicts[:20]
		}
		return nil, fmt.Errorf("install: nothing was changed, %d path(s) in the way:\n  %s%s", len(conflicts), strings.Join(conflicts, "\n  "), more)
	}
	return skip, nil
}

// followsToDir reports whether p is a link the tree follows (trusted) to
// a directory.
func followsToDir(t *tree, p string) bool {
	_, _, err := t.openDir(p)
	return err == nil
}

func kindOf(fi fs.FileInfo) string {
	switch {
	case fi.IsDir():
		return KindDir
	case fi.Mode()&fs.ModeSymlink != 0:
		return KindSymlink
	case fi.Mode().IsRegular():
		return KindFile
	}
	return "special file"
}

// unchanged reports whether the installed copy of pe is still exactly
// what was recorded and the new item would write the same thing.
func unchanged(t *tree, pe Entry, it *item, st *unix.Stat_t) bool {
	if pe.Pending || pe.Kind != it.Kind || pe.UID != it.UID || pe.GID != it.GID || it.ACL || it.SELinux || pe.ACL || pe.SELinux {
		return false
	}
	switch it.Kind {
	case KindFile:
		if pe.SHA256 != it.SHA256 || pe.Mode != it.Mode || pe.MTime != it.MTime || pe.Stat == nil {
			return false
		}
		return *pe.Stat == *statKeyOf(st)
	case KindSymlink:
		target, err := t.readlink(it.Path)
		return err == nil && target == it.Target && pe.Target == it.Target && st.Mode&unix.S_IFMT == unix.S_IFLNK
	}
	return false
}

// cleanup removes the previous install's paths, newest first, except
// those kept unchanged and those a new file of the same kind replaces by
// rename (so the app never sees them missing). It returns the kept set.
// Nothing is removed through a link a non-root user could have made: such
// a path is not where this agent put it, and is left alone with a warning.
func cleanup(ctx context.Context, t *tree, prev *merged, p *plan, rep *Report) (map[string]bool, error) {
	keep := map[string]bool{}
	warned := map[string]bool{}
	for i := len(prev.list) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return keep, fmt.Errorf("install: cleanup interrupted: %w", err)
		}
		pe := prev.list[i]
		if pe.Pending {
			// Only a path whose last record is the write-ahead one can
			// have a temporary file left by a crash.
			_ = t.remove(pe.Path+tmpSuffix, false)
		}
		it := p.byDst[pe.Path]
		var st *unix.Stat_t
		var err error
		if it != nil && it.disk != nil {
			st = it.disk // preflight's answer: nothing has touched it since
		} else {
			st, err = t.lstat(pe.Path)
		}
		var ue *errUntrusted
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ENOTDIR):
			continue
		case errors.As(err, &ue):
			if !warned[ue.link] {
				warned[ue.link] = true
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("left alone what the previous revision installed below %s: %v", ue.link, ue))
			}
			continue
		case err != nil:
			return keep, fmt.Errorf("install: inspect %s: %w", pe.Path, err)
		}
		onDisk := kindOfStat(st)
		if pe.Kind != onDisk {
			if pe.Kind == KindDir && onDisk == KindSymlink && !warned[pe.Path] {
				warned[pe.Path] = true
				target, _ := t.readlink(pe.Path)
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s was a directory of the previous revision and is now a symlink to %s (made after its install): nothing is removed through it", pe.Path, target))
			}
			continue // no longer what we installed: not ours to remove
		}
		if it != nil && it.Kind != KindDir && unchanged(t, pe, it, st) {
			keep[pe.Path] = true
			continue
		}
		if onDisk == KindDir {
			if it != nil && it.Kind == KindDir {
				continue
			}
			if err := t.remove(pe.Path, true); err == nil {
				rep.Removed++
				p.changed()
			} else if !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EEXIST) {
				return keep, fmt.Errorf("install: remove directory %s: %w", pe.Path, err)
			}
			continue
		}
		if pe.SELinux {
			removeContext(ctx, pe.Path)
		}
		if it != nil && it.Kind != KindDir {
			continue // replaced by rename below
		}
		if err := t.remove(pe.Path, false); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return keep, fmt.Errorf("install: remove %s: %w", pe.Path, err)
		}
		rep.Removed++
		p.changed()
	}
	return keep, nil
}
