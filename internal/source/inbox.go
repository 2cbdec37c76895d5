package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/bundle"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/source/release"
)

// Inbox subdirectories. A bundle moves from the inbox to processing/ when
// it becomes a deployment, and from there to processed/ or rejected/ (with
// a .reason file beside it) when that deployment ends.
const (
	dirProcessing = "processing"
	dirProcessed  = "processed"
	dirRejected   = "rejected"
)

// Submitter is the engine's side the inbox needs.
type Submitter interface {
	Submit(engine.Request) (*api.Deployment, error)
	Subscribe(id string) (<-chan api.Event, func())
}

// Deployments reads deployment records.
type Deployments interface {
	Deployments(limit int) ([]api.Deployment, error)
}

// Inbox watches a folder for bundles.
type Inbox struct {
	Dir     string
	Engine  Submitter
	Journal Deployments
	Log     *zap.Logger
	// Quiet is how long a file must stay unchanged before it is taken: a
	// copy in progress is not a bundle yet.
	Quiet time.Duration
	// OnError reports a problem to the status (nil: log only).
	OnError func(error)
	// Keys verify manifests dropped beside bundles (inbox_manifest.go);
	// nil trusts no key and requires no signature.
	Keys *release.Keyring
	// App is the agent's application: a manifest of another app is refused.
	App string
}

// Run watches until ctx ends.
func (in *Inbox) Run(ctx context.Context) error {
	if in.Quiet == 0 {
		in.Quiet = 500 * time.Millisecond
	}
	for _, d := range []string{in.Dir, in.sub(dirProcessing), in.sub(dirProcessed), in.sub(dirRejected)} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("inbox: create %s: %w", d, err)
		}
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("inbox: watch %s: %w", in.Dir, err)
	}
	defer w.Close()
	if err := w.Add(in.Dir); err != nil {
		return fmt.Errorf("inbox: watch %s: %w", in.Dir, err)
	}
	events, stop := in.Engine.Subscribe("")
	defer stop()

	pending := map[string]time.Time{} // name → when it last changed
	in.reconcile()
	in.scan(pending)
	tick := time.NewTicker(in.Quiet / 2)
	defer tick.Stop()
	sweep := time.NewTicker(30 * time.Second)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("inbox: watcher closed")
			}
			if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Write) || ev.Has(fsnotify.Rename) || ev.Has(fsnotify.Chmod) {
				if filepath.Dir(ev.Name) == filepath.Clean(in.Dir) {
					pending[filepath.Base(ev.Name)] = time.Now()
				}
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("inbox: watcher closed")
			}
			in.report(fmt.Errorf("inbox: watching %s: %w", in.Dir, err))
			in.scan(pending) // events may have been lost (queue overflow)
		case <-tick.C:
			for name, changed := range pending {
				if time.Since(changed) >= in.Quiet {
					delete(pending, name)
					in.take(name)
				}
			}
		case ev := <-events:
			if ev.Type == api.EventStatus && ev.Status.Terminal() {
				in.reconcile()
			}
		case <-sweep.C:
			in.reconcile()
			in.scan(pending)
		}
	}
}

func (in *Inbox) sub(name string) string { return filepath.Join(in.Dir, name) }

func (in *Inbox) report(err error) {
	in.Log.Warn(err.Error())
	if in.OnError != nil {
		in.OnError(err)
	}
}

// ignored names are never bundles: partial copies, hidden files, our
// own subdirectories.
func ignored(name string) bool {
	return strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".tmp") || strings.HasSuffix(name, ".part") ||
		isSidecar(name) || name == dirProcessing || name == dirProcessed || name == dirRejected
}

func (in *Inbox) scan(pending map[string]time.Time) {
	ents, err := os.ReadDir(in.Dir)
	if err != nil {
		in.report(fmt.Errorf("inbox: list %s: %w", in.Dir, err))
		return
	}
	for _, e := range ents {
		if !e.IsDir() && !ignored(e.Name()) {
			if _, ok := pending[e.Name()]; !ok {
				pending[e.Name()] = time.Now()
			}
		}
	}
}

// take turns a settled file into a deployment, or rejects it at once when
// it is not a bundle at all.
func (in *Inbox) take(name string) {
	if ignored(name) {
		return
	}
	path := filepath.Join(in.Dir, name)
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() {
		if err == nil {
			in.reject(path, name, "not a regular file")
		}
		return
	}
	if err := checkFormat(path); err != nil {
		in.reject(path, name, err.Error())
		return
	}
	rev, sidecars, err := in.verify(path, name)
	if err != nil {
		in.settleSidecars(sidecars, dirRejected)
		in.reject(path, name, err.Error())
		return
	}
	dst := uniquePath(in.sub(dirProcessing), name)
	if err := os.Rename(path, dst); err != nil {
		in.report(fmt.Errorf("inbox: move %s to %s: %w", path, dst, err))
		return
	}
	in.settleSidecars(sidecars, dirProcessed)
	in.submit(dst, rev)
}

// submit queues path; rev "" names the revision after the file.
func (in *Inbox) submit(path, rev string) {
	if rev == "" {
		rev = engine.RevisionFromLocation(path)
	}
	d, err := in.Engine.Submit(engine.Request{
		Source:   api.Source{Type: TypeInbox, Location: path},
		Revision: rev,
		Trigger:  "inbox",
	})
	if err != nil {
		in.report(fmt.Errorf("inbox: submit %s: %w", path, err))
		return
	}
	in.Log.Info("inbox: bundle taken", zap.String("file", path), zap.String("deployment", d.ID))
}

func checkFormat(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, 1024)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return err
	}
	_, err = bundle.DetectFormat(head[:n])
	return err
}

// reconcile settles bundles in processing/: a finished deployment moves
// its file to processed/ (or rejected/ when the bundle never got past
// validation); a file without a deployment (a crash between the move and
// the submit) is submitted now.
func (in *Inbox) reconcile() {
	ents, err := os.ReadDir(in.sub(dirProcessing))
	if err != nil {
		return
	}
	deps, err := in.Journal.Deployments(0)
	if err != nil {
		in.report(fmt.Errorf("inbox: read deployments: %w", err))
		return
	}
	byLoc := map[string]*api.Deployment{}
	for i := len(deps) - 1; i >= 0; i-- { // newest wins
		if deps[i].Source.Type == TypeInbox {
			byLoc[deps[i].Source.Location] = &deps[i]
		}
	}
	for _, e := range ents {
		path := filepath.Join(in.sub(dirProcessing), e.Name())
		d := byLoc[path]
		switch {
		case d == nil:
			in.submit(path, "")
		case !d.Status.Terminal():
		case d.Rejected():
			in.reject(path, e.Name(), fmt.Sprintf("deployment %s: %s", d.ID, d.Error))
		default:
			in.settle(path, dirProcessed, e.Name(), fmt.Sprintf("deployment %s ended %s (revision %s)\n", d.ID, d.Status, d.Revision))
		}
	}
}

func (in *Inbox) reject(path, name, reason string) {
	in.Log.Warn("inbox: bundle rejected", zap.String("file", path), zap.String("reason", reason))
	in.settle(path, dirRejected, name, reason+"\n")
}

func (in *Inbox) settle(path, dir, name, reason string) {
	dst := uniquePath(in.sub(dir), name)
	if err := os.Rename(path, dst); err != nil {
		in.report(fmt.Errorf("inbox: move %s to %s: %w", path, dst, err))
		return
	}
	if err := os.WriteFile(dst+".reason", []byte(reason), 0o640); err != nil {
		in.report(fmt.Errorf("inbox: write %s.reason: %w", dst, err))
	}
}

// uniquePath avoids overwriting an earlier bundle of the same name.
func uniquePath(dir, name string) string {
	p := filepath.Join(dir, name)
	for i := 1; ; i++ {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			return p
		}
		p = filepath.Join(dir, fmt.Sprintf("%s.%d", name, i))
	}
}
