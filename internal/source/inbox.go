package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	if err := in.prepare(); err != nil {
		return err
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
// it is not a bundle, or its manifest does not vouch for it. The bytes
// hashed here are pinned in the deployment (Source.SHA256): the fetch
// refuses any others, so a bundle swapped after this check never runs.
func (in *Inbox) take(name string) {
	if ignored(name) {
		return
	}
	d, err := in.open()
	if err != nil {
		in.report(err)
		return
	}
	defer d.close()
	path := filepath.Join(in.Dir, name)
	if !existsAt(d.root, name) {
		return
	}
	sum, size, err := hashBundle(d.root, name)
	if err != nil {
		in.reject(d, d.root, name, err.Error())
		return
	}
	beside, err := checkBeside(d.root, name, in.Keys, in.App)
	if err == nil && beside == nil && in.Keys != nil && in.Keys.Required() {
		err = fmt.Errorf("no %s (or %s naming it) beside %s, and trust.require_signature is true", ownManifest(name), release.ManifestName, path)
	}
	if err == nil && beside != nil {
		err = beside.matches(path, sum, size)
	}
	if err != nil {
		if beside != nil {
			in.settleSidecars(d, beside.sidecars)
		}
		in.reject(d, d.root, name, err.Error())
		return
	}
	dst, err := moveAt(d.root, name, d.processing, name)
	if err != nil {
		in.report(fmt.Errorf("inbox: %w", err))
		return
	}
	src := api.Source{Type: TypeInbox, Location: filepath.Join(in.Dir, dirProcessing, dst), SHA256: sum, Size: size}
	rev := ""
	if beside != nil {
		// The manifest and signature stay beside the bundle, so that a
		// restart that finds it in processing/ can check it again.
		for _, sc := range beside.sidecars {
			if _, err := moveAt(d.root, sc, d.processing, dst+sidecarSuffix(sc)); err != nil {
				in.report(fmt.Errorf("inbox: %w", err))
			}
		}
		rev, src.Signer = beside.manifest.Version, beside.signer
	}
	in.submit(src, rev)
}

// sidecarSuffix is what a sidecar keeps when it follows its bundle into
// processing/: ".manifest.json" or ".manifest.json.minisig".
func sidecarSuffix(name string) string {
	if strings.HasSuffix(name, release.SignatureSuffix) {
		return "." + release.ManifestName + release.SignatureSuffix
	}
	return "." + release.ManifestName
}

// submit queues src; rev "" names the revision after the file.
func (in *Inbox) submit(src api.Source, rev string) {
	if rev == "" {
		rev = engine.RevisionFromLocation(src.Location)
	}
	d, err := in.Engine.Submit(engine.Request{Source: src, Revision: rev, Trigger: "inbox"})
	if err != nil {
		in.report(fmt.Errorf("inbox: submit %s: %w", src.Location, err))
		return
	}
	in.Log.Info("inbox: bundle taken", zap.String("file", src.Location), zap.String("deployment", d.ID),
		zap.String("sha256", src.SHA256), zap.String("signed_by", src.Signer))
}

// hashBundle checks that name is a regular file that looks like a bundle
// and returns its sha256 and size.
func hashBundle(dir *os.File, name string) (string, int64, error) {
	f, err := openAt(dir, name)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	head := make([]byte, 1024)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", 0, err
	}
	if _, err := bundle.DetectFormat(head[:n]); err != nil {
		return "", 0, err
	}
	h := sha256.New()
	h.Write(head[:n])
	rest, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("hash %s: %w", f.Name(), err)
	}
	return hex.EncodeToString(h.Sum(nil)), int64(n) + rest, nil
}

// reconcile settles bundles in processing/: a finished deployment moves
// its file (and the manifest beside it) to processed/, or rejected/ when
// the bundle never got past validation. A file without a deployment (a
// crash between the move and the submit, or a file someone put there) is
// checked again exactly as a new drop is, and queued only if it passes.
func (in *Inbox) reconcile() {
	d, err := in.open()
	if err != nil {
		in.report(err)
		return
	}
	defer d.close()
	ents, err := d.processing.ReadDir(-1)
	if err != nil {
		in.report(fmt.Errorf("inbox: list %s: %w", d.processing.Name(), err))
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
		name := e.Name()
		if isSidecar(name) {
			continue
		}
		path := filepath.Join(in.Dir, dirProcessing, name)
		dep := byLoc[path]
		switch {
		case dep == nil:
			in.retake(d, name)
		case !dep.Status.Terminal():
		case dep.Rejected():
			in.reject(d, d.processing, name, fmt.Sprintf("deployment %s: %s", dep.ID, dep.Error))
		default:
			in.settle(d, d.processing, name, d.processed, fmt.Sprintf("deployment %s ended %s (revision %s)\n", dep.ID, dep.Status, dep.Revision))
		}
	}
}

// retake checks a bundle found in processing/ without a deployment as
// take checks a drop: with the manifest kept beside it there.
func (in *Inbox) retake(d *inboxDirs, name string) {
	path := filepath.Join(d.processing.Name(), name)
	sum, size, err := hashBundle(d.processing, name)
	if err != nil {
		in.reject(d, d.processing, name, err.Error())
		return
	}
	beside, err := checkBeside(d.processing, name, in.Keys, in.App)
	if err == nil && beside == nil && in.Keys != nil && in.Keys.Required() {
		err = fmt.Errorf("%s has no deployment and no %s beside it, and trust.require_signature is true", path, ownManifest(name))
	}
	if err == nil && beside != nil {
		err = beside.matches(path, sum, size)
	}
	if err != nil {
		in.reject(d, d.processing, name, "found in processing/ without a deployment and refused: "+err.Error())
		return
	}
	src := api.Source{Type: TypeInbox, Location: path, SHA256: sum, Size: size}
	rev := ""
	if beside != nil {
		rev, src.Signer = beside.manifest.Version, beside.signer
	}
	in.submit(src, rev)
}

func (in *Inbox) reject(d *inboxDirs, from *os.File, name, reason string) {
	in.Log.Warn("inbox: bundle rejected", zap.String("file", filepath.Join(from.Name(), name)), zap.String("reason", reason))
	in.settle(d, from, name, d.rejected, reason+"\n")
}

// settle moves name (and, from processing/, the manifest and signature
// kept beside it) to the directory to, with a .reason file.
func (in *Inbox) settle(d *inboxDirs, from *os.File, name string, to *os.File, reason string) {
	dst, err := moveAt(from, name, to, name)
	if err != nil {
		in.report(fmt.Errorf("inbox: %w", err))
		return
	}
	if err := writeNewAt(to, dst+".reason", []byte(reason)); err != nil {
		in.report(fmt.Errorf("inbox: write the reason: %w", err))
	}
	if from != d.processing {
		return
	}
	for _, suffix := range []string{"." + release.ManifestName, "." + release.ManifestName + release.SignatureSuffix} {
		if existsAt(from, name+suffix) {
			if _, err := moveAt(from, name+suffix, to, dst+suffix); err != nil {
				in.report(fmt.Errorf("inbox: %w", err))
			}
		}
	}
}

// settleSidecars moves a refused drop's manifest and signature to
// rejected/, kept with the outcome as a record.
func (in *Inbox) settleSidecars(d *inboxDirs, names []string) {
	for _, n := range names {
		if _, err := moveAt(d.root, n, d.rejected, n); err != nil {
			in.report(fmt.Errorf("inbox: %w", err))
		}
	}
}
