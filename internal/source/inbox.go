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

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

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
	if err := in.prepare(); err != nil {
		return err
	}
	w, err := watchDir(ctx, in.Dir)
	if err != nil {
		return err
	}
	defer w.Close()
	// What is here before processing/ appears was found there; what
	// arrives later is seen arriving. processing/ appears once the inbox
	// is watched and listed: a dropper (or a test) that sees it knows a
	// rename in will be judged as one, never as a file found in place
	// (listed after processing/ was made, a rename racing the listing
	// was refused as "arrival unseen").
	before, err := os.ReadDir(in.Dir)
	if err != nil {
		return fmt.Errorf("inbox: list %s: %w", in.Dir, err)
	}
	d, err := in.open()
	if err != nil {
		return err
	}
	d.close()
	events, stop := in.Engine.Subscribe("")
	defer stop()

	// waiting: files not taken yet, and how they arrived. A file written
	// in place waits for its writer to close it; one with a manifest
	// waits until its bytes are the manifest's.
	waiting := map[string]arrival{}
	in.reconcile()
	in.considerFound(waiting, before)
	sweep := time.NewTicker(30 * time.Second)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.events:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("inbox: watcher closed")
			}
			switch {
			case ev.how == overflow:
				in.report(fmt.Errorf("inbox: events on %s were lost (queue overflow): files there without a manifest are refused, rename them in again", in.Dir))
				in.scan(waiting)
			case isSidecar(ev.name):
				// A manifest may be what a waiting file lacked.
				in.recheck(waiting)
			case ignored(ev.name):
			default:
				in.consider(waiting, ev.name, ev.how)
			}
		case err := <-w.errs:
			in.report(err)
		case ev := <-events:
			if ev.Type == api.EventStatus && ev.Status.Terminal() {
				in.reconcile()
			}
		case <-sweep.C:
			in.reconcile()
			in.recheck(waiting)
		}
	}
}

// consider takes or refuses name, or keeps it waiting.
func (in *Inbox) consider(waiting map[string]arrival, name string, how arrival) {
	if in.take(name, how) {
		waiting[name] = how
		return
	}
	delete(waiting, name)
}

// recheck looks again at every waiting file (a manifest arrived, or the
// sweep), forgetting those that went away.
func (in *Inbox) recheck(waiting map[string]arrival) {
	for name, how := range waiting {
		in.consider(waiting, name, how)
	}
}

func (in *Inbox) report(err error) {
	in.Log.Warn(err.Error())
	if in.OnError != nil {
		in.OnError(err)
	}
}

// notAPlainFile says why st is not a regular file with one name ("" when
// it is).
func notAPlainFile(st *unix.Stat_t) string {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFLNK:
		return "is a symbolic link, which the inbox does not follow"
	default:
		return "is not a regular file"
	}
	if st.Nlink > 1 {
		return fmt.Sprintf("has %d hard links: another name could still change it", st.Nlink)
	}
	return ""
}

// ignored names are never bundles: partial copies, hidden files, our
// own subdirectories.
func ignored(name string) bool {
	return strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".tmp") || strings.HasSuffix(name, ".part") ||
		isSidecar(name) || name == dirProcessing || name == dirProcessed || name == dirRejected
}

// scan considers every file in the inbox not already waiting: at start,
// or when events were lost, so their arrival is unknown.
func (in *Inbox) scan(waiting map[string]arrival) {
	ents, err := os.ReadDir(in.Dir)
	if err != nil {
		in.report(fmt.Errorf("inbox: list %s: %w", in.Dir, err))
		return
	}
	in.considerFound(waiting, ents)
}

// considerFound considers the listed files not already waiting as
// found there (their arrival unknown).
func (in *Inbox) considerFound(waiting map[string]arrival, ents []os.DirEntry) {
	for _, e := range ents {
		if e.IsDir() || ignored(e.Name()) {
			continue
		}
		if _, ok := waiting[e.Name()]; !ok {
			in.consider(waiting, e.Name(), foundThere)
		}
	}
}

// take turns a complete file into a deployment, or refuses it at once
// when it is not a bundle, or its manifest does not vouch for it; it
// reports true when the file is not complete yet and must wait (how it
// arrived decides: see arrival). The bytes hashed here are pinned in the
// deployment (Source.SHA256): the fetch refuses any others, so a bundle
// swapped after this check never runs.
func (in *Inbox) take(name string, how arrival) (wait bool) {
	if ignored(name) {
		return false
	}
	d, err := in.open()
	if err != nil {
		in.report(err)
		return false
	}
	defer d.close()
	path := filepath.Join(in.Dir, name)
	var st unix.Stat_t
	if err := unix.Fstatat(int(d.root.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false // gone (moved away, or taken)
	}
	// What is not one regular file of its own is refused at once: a link
	// made in place raises a create and never a close, so it would wait
	// silently forever; followed, it would point the agent (root) at any
	// file; a hard link leaves another name through which the bytes can
	// change.
	if reason := notAPlainFile(&st); reason != "" {
		in.reject(d, d.root, name, fmt.Sprintf("%s %s: copy the bundle into the inbox (under a temporary name, then rename it in)", path, reason))
		return false
	}
	beside, err := checkBeside(d.root, name, in.Keys, in.App)
	if err == nil && beside == nil {
		switch {
		case how == writing:
			return true // its writer is at work: wait for the close
		case how != renamedIn:
			err = fmt.Errorf("%s was written in place (or found there with its arrival unseen) and has no manifest giving its size and sha256: "+
				"it may be a copy cut short, so it is not deployed. Write it under a temporary name (.%s or %s.part) and rename it in, "+
				"or drop %s first", path, name, name, ownManifest(name))
		case in.Keys != nil && in.Keys.Required():
			err = fmt.Errorf("no %s (or %s naming it) beside %s, and trust.require_signature is true", ownManifest(name), release.ManifestName, path)
		}
	}
	if err == nil && beside != nil && how != renamedIn && how != closedWrite && st.Size < beside.manifest.Size {
		// Short of what the manifest says: a copy still running (or one
		// that stalled: it waits, and never runs cut short).
		return true
	}
	var sum string
	var size int64
	if err == nil {
		sum, size, err = hashBundle(d.root, name)
	}
	if err == nil && beside != nil {
		err = beside.matches(path, sum, size)
		if err != nil && how == writing {
			return true // the writer may not be done: judged at its close
		}
	}
	if err != nil {
		if beside != nil {
			in.settleSidecars(d, beside.sidecars)
		}
		in.reject(d, d.root, name, err.Error())
		return false
	}
	dst, err := moveAt(d.root, name, d.processing, name)
	if err != nil {
		in.report(fmt.Errorf("inbox: %w", err))
		return false
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
	return false
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
