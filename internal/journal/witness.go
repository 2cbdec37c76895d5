package journal

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/journal/aside"
)

// The witness is a second durable record beside the journal
// (STATE_DIR/journal.witness), small and rewritten whole (temp file,
// fsync, rename, fsync of the directory): the id of the journal it
// belongs to, and what must survive the journal's loss, the highest
// sequence applied per release channel.
//
// A journal cut to zero bytes (power loss, a file system repair) or
// deleted opens as a new, empty journal: without the witness the agent
// would start as new, forget the channel sequences it applied, and apply
// a replayed older channel. With it, Open sees a journal that is not the
// one the witness names, and reports Trouble: the daemon says so
// (needs_operator) and takes no new work until an operator acknowledges,
// while the channel floors stay in force.
//
// A damaged journal (issue 17, item 12) is Trouble too, of its own kind
// (damaged.go): the same needs_operator and the same gate, cleared by
// recovery rather than by an acknowledgement.

// WitnessName is the witness's file name in the state directory.
const WitnessName = "journal.witness"

const (
	witnessSchema = 1
	metaJournalID = "journal_id"
	// maxWitnessBytes bounds what is read of the witness: a few channels.
	maxWitnessBytes = 1 << 20
)

// Trouble kinds.
const (
	// TroubleJournalLost: the journal is not the one the witness names
	// (it vanished, was emptied, or was replaced by another).
	TroubleJournalLost = aside.TroubleJournalLost
	// TroubleJournalDamaged: the journal cannot be read (damaged pages, a
	// failed consistency check); the agent runs on a scratch journal
	// (OpenDamaged) until an operator recovers it.
	TroubleJournalDamaged = aside.TroubleJournalDamaged
)

// Trouble is something wrong with the agent's record that it cannot mend
// by itself: an operator must look, then acknowledge.
type Trouble struct {
	Kind  string
	What  string
	Next  string
	Since time.Time
}

// ChannelFloor is the highest sequence applied on one channel.
type ChannelFloor struct {
	Sequence       int64  `json:"sequence"`
	Version        string `json:"version"`
	ManifestSHA256 string `json:"manifest_sha256"`
}

// witness is the file's content.
type witness struct {
	SchemaVersion int                     `json:"schema_version"`
	JournalID     string                  `json:"journal_id"`
	CreatedAt     time.Time               `json:"created_at"`
	Channels      map[string]ChannelFloor `json:"channels,omitempty"`
	// Lost are the journals acknowledged lost, for the record.
	Lost []LostJournal `json:"lost,omitempty"`
}

// LostJournal is one acknowledged loss.
type LostJournal struct {
	JournalID      string    `json:"journal_id"`
	AcknowledgedAt time.Time `json:"acknowledged_at"`
}

func (j *Journal) witnessPath() string { return filepath.Join(filepath.Dir(j.path), WitnessName) }

// readWitness reads the witness; nil when there is none.
func readWitness(path string) (*witness, error) {
	b, err := readSmall(path, maxWitnessBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: read %s: %w", path, err)
	}
	var w witness
	if err := json.Unmarshal(b, &w); err != nil || w.SchemaVersion != witnessSchema || w.JournalID == "" {
		return nil, fmt.Errorf("journal: %s is damaged (%v)", path, err)
	}
	return &w, nil
}

// writeWitness replaces the witness atomically and durably.
func writeWitness(path string, w *witness) error {
	w.SchemaVersion = witnessSchema
	b, err := json.MarshalIndent(w, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("journal: write %s: %w", tmp, err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("journal: write %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("journal: sync %s: %w", filepath.Dir(path), err)
		}
	}
	return nil
}

func newJournalID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "j-" + hex.EncodeToString(b)
}

// checkWitness runs at Open: it gives a journal without an id one, and
// compares the journal with the witness. fresh says the journal file was
// missing or empty before Open.
func (j *Journal) checkWitness(fresh bool) error {
	id, err := j.GetMeta(metaJournalID)
	if err != nil {
		return err
	}
	w, werr := readWitness(j.witnessPath())
	if id == "" {
		id = newJournalID()
		if err := j.SetMeta(metaJournalID, id); err != nil {
			return err
		}
	}
	switch {
	case werr != nil && fresh:
		// Neither record can be trusted: say so rather than start as new.
		j.trouble = lost(fmt.Sprintf("the journal %s is new or empty and the witness beside it is damaged (%v)", j.path, werr))
		return nil
	case werr != nil:
		// The journal is intact: it is the record; the witness is rebuilt
		// from it (the channels' records are in the journal too).
		return writeWitness(j.witnessPath(), &witness{JournalID: id, CreatedAt: time.Now().UTC()})
	case w == nil:
		// The first start, or the first with a witness.
		return writeWitness(j.witnessPath(), &witness{JournalID: id, CreatedAt: time.Now().UTC()})
	case w.JournalID != id:
		what := fmt.Sprintf("the journal %s is not the one this agent kept (journal %s, witnessed since %s)", j.path, w.JournalID, w.CreatedAt.Format(time.RFC3339))
		if fresh {
			what = fmt.Sprintf("the journal %s vanished or was emptied (it was journal %s, witnessed since %s); the agent started a new one", j.path, w.JournalID, w.CreatedAt.Format(time.RFC3339))
		}
		j.trouble = lost(what)
	}
	return nil
}

func lost(what string) *Trouble {
	return &Trouble{Kind: TroubleJournalLost, What: what, Since: time.Now().UTC(),
		Next: "the agent no longer knows what it deployed (the history, the current and last good deployments, the rollback limits); " +
			"it rebuilt what it could: the checkpoint catalogue from AWS tags, and the installed revision from the newest install " +
			"manifest under releases/ (said above when there was one: the next deployment then stops it and replaces its files as " +
			"usual; otherwise its files are met as files the agent did not install, and file_exists_behavior applies). It deploys " +
			"nothing until you acknowledge. Check the host (agentctl checkpoint list, the application), then run `agentctl acknowledge " +
			TroubleJournalLost + "`. The release channels' applied sequences are kept in " + WitnessName + ", so a replayed older channel is still refused"}
}

// Trouble returns what is wrong with the record, nil when nothing is.
func (j *Journal) Trouble() *Trouble {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	if j.trouble == nil {
		return nil
	}
	t := *j.trouble
	return &t
}

// Acknowledge clears the trouble of kind: for a lost journal, the witness
// from now on names this journal, keeping the channel floors and a note
// of the journal lost.
func (j *Journal) Acknowledge(kind string) error {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	if j.trouble == nil || j.trouble.Kind != kind {
		return fmt.Errorf("nothing to acknowledge of kind %q", kind)
	}
	if j.damaged != nil {
		return fmt.Errorf("%w: %s", ErrDamagedRecord, j.trouble.Next)
	}
	id, err := j.GetMeta(metaJournalID)
	if err != nil {
		return err
	}
	w, err := readWitness(j.witnessPath())
	if err != nil || w == nil {
		w = &witness{}
	}
	if w.JournalID != "" {
		w.Lost = append(w.Lost, LostJournal{JournalID: w.JournalID, AcknowledgedAt: time.Now().UTC()})
	}
	w.JournalID, w.CreatedAt = id, time.Now().UTC()
	if err := writeWitness(j.witnessPath(), w); err != nil {
		return err
	}
	j.trouble = nil
	return nil
}

// ChannelFloor returns the highest sequence the witness records as
// applied on the channel url (zero when none).
func (j *Journal) ChannelFloor(url string) (ChannelFloor, error) {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	w, err := readWitness(j.witnessPath())
	if err != nil || w == nil {
		return ChannelFloor{}, err
	}
	return w.Channels[url], nil
}

// RaiseChannelFloor records f as applied on the channel url, durably,
// before it returns; a floor is never lowered.
func (j *Journal) RaiseChannelFloor(url string, f ChannelFloor) error {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	w, err := readWitness(j.witnessPath())
	if err != nil {
		return err
	}
	if w == nil {
		return fmt.Errorf("journal: %s is missing", j.witnessPath())
	}
	if j.damaged != nil {
		return fmt.Errorf("journal: %w: nothing is applied", ErrDamagedRecord)
	}
	if w.Channels[url].Sequence >= f.Sequence {
		return nil
	}
	if w.Channels == nil {
		w.Channels = map[string]ChannelFloor{}
	}
	w.Channels[url] = f
	return writeWitness(j.witnessPath(), w)
}

// isFresh reports whether the journal file is missing or empty (what
// bbolt then initialises as a new journal).
func isFresh(path string) bool {
	fi, err := os.Lstat(path)
	return err != nil || fi.Size() == 0
}
