package journal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/journal/aside"
)

// An agent on a damaged journal runs on a scratch one: it reports the
// damage with the recovery, holds the damaged file (a second agent and
// `recover journal` wait for it to stop), never writes it, never moves a
// channel floor, and cannot acknowledge its way out. Once it is closed
// the recovery moves the file aside and the next Open is journal-lost,
// with the channel floors kept.
func TestDamagedJournalRunsOnScratch(t *testing.T) {
	// One page (found by Open's check), or every page after the two meta
	// pages (bbolt panics inside Open, holding its lock).
	for name, all := range map[string]bool{"one page": false, "all data pages": true} {
		t.Run(name, func(t *testing.T) { damagedRunsOnScratch(t, all) })
	}
}

func damagedRunsOnScratch(t *testing.T, all bool) {
	dir, path := filled(t)
	j0, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := j0.RaiseChannelFloor("s3://b/app/prod.json", ChannelFloor{Sequence: 7, Version: "v7"}); err != nil {
		t.Fatal(err)
	}
	j0.Close()
	page := int64(os.Getpagesize())
	f, _ := os.OpenFile(path, os.O_WRONLY, 0)
	if all {
		fi, _ := f.Stat()
		f.WriteAt(bytes.Repeat([]byte{0xa5}, int(fi.Size()-2*page)), 2*page)
	} else {
		f.WriteAt(bytes.Repeat([]byte{0xa5}, int(page)), 3*page)
	}
	f.Close()
	damagedBytes, _ := os.ReadFile(path)

	_, cause := Open(dir, 0)
	if !errors.Is(cause, ErrCorrupt) {
		t.Fatalf("open: %v", cause)
	}
	j, err := OpenDamaged(dir, cause)
	if err != nil {
		t.Fatal(err)
	}
	tr := j.Trouble()
	if !j.Damaged() || tr == nil || tr.Kind != TroubleJournalDamaged || !strings.Contains(tr.What, path) ||
		!strings.Contains(tr.Next, "agentctl recover journal --state-dir "+dir) {
		t.Fatalf("trouble %+v", tr)
	}
	if list, err := j.Deployments(0); err != nil || len(list) != 0 {
		t.Errorf("the scratch journal lists %d records (%v)", len(list), err)
	}
	if _, err := Open(dir, 0); !errors.Is(err, ErrLocked) {
		t.Errorf("a second agent opened the state dir: %v", err)
	}
	if _, err := OpenDamaged(dir, cause); !errors.Is(err, ErrLocked) {
		t.Errorf("a second agent on the damaged journal: %v", err)
	}
	if _, err := aside.MoveAside(dir, time.Now()); !errors.Is(err, aside.ErrHeld) {
		t.Errorf("recover while the agent runs: %v", err)
	}
	if err := j.Acknowledge(TroubleJournalDamaged); !errors.Is(err, ErrDamagedRecord) {
		t.Errorf("acknowledge of a damaged journal: %v", err)
	}
	if err := j.RaiseChannelFloor("s3://b/app/prod.json", ChannelFloor{Sequence: 9}); !errors.Is(err, ErrDamagedRecord) {
		t.Errorf("a floor moved on a damaged journal: %v", err)
	}
	if fl, err := j.ChannelFloor("s3://b/app/prod.json"); err != nil || fl.Sequence != 7 {
		t.Errorf("floor read on the damaged journal: %+v %v", fl, err)
	}
	scratch := j.damaged.scratch
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(scratch); !os.IsNotExist(err) {
		t.Errorf("scratch dir %s left behind: %v", scratch, err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, damagedBytes) {
		t.Error("the damaged journal was written")
	}

	moved, err := aside.MoveAside(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(moved); !bytes.Equal(b, damagedBytes) {
		t.Error("the file moved aside is not the damaged journal")
	}
	j2, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if tr := j2.Trouble(); tr == nil || tr.Kind != TroubleJournalLost {
		t.Fatalf("after recovery: trouble %+v", tr)
	}
	if fl, _ := j2.ChannelFloor("s3://b/app/prod.json"); fl.Sequence != 7 {
		t.Errorf("the channel floor after recovery: %+v", fl)
	}
	// What the daemon rebuilds from releases/: once, on the lost journal
	// only, with an interrupted later Install as its intent; said again
	// after a restart.
	intent := &InstallIntent{Target: "d-3", Previous: []string{"d-2"}}
	if ok, err := j2.RebuildInstalled("d-2", intent, "the installed revision is v2"); !ok || err != nil {
		t.Fatalf("rebuild: %v %v", ok, err)
	}
	if id, _ := j2.Pointer(PointerInstalled); id != "d-2" || !strings.Contains(j2.Trouble().What, "rebuilt from releases/: the installed revision is v2") {
		t.Errorf("installed %q, trouble %q", id, j2.Trouble().What)
	}
	if in, _ := j2.InstallIntent(); in == nil || in.Target != "d-3" {
		t.Errorf("install intent %+v, want d-3's", in)
	}
	if ok, _ := j2.RebuildInstalled("d-1", nil, "older"); ok {
		t.Error("a second rebuild replaced what the journal knows")
	}
	j2.Close()
	j2, err = Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if ok, _ := j2.RebuildInstalled("d-1", nil, "older"); ok || !strings.Contains(j2.Trouble().What, "the installed revision is v2") || strings.Contains(j2.Trouble().What, "older") {
		t.Errorf("after a restart: rebuilt %v, trouble %q", ok, j2.Trouble().What)
	}
	if err := j2.Acknowledge(TroubleJournalLost); err != nil {
		t.Fatal(err)
	}
	if ok, _ := j2.RebuildInstalled("d-1", nil, "x"); ok {
		t.Error("rebuilt on a journal with no trouble")
	}
	if _, err := os.Stat(filepath.Join(dir, WitnessName)); err != nil {
		t.Fatal(err)
	}
}
