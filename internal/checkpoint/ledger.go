package checkpoint

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// The ledger is the agent's own record of what it made in AWS: the
// checkpoints it created (with their snapshots and image) and the
// volumes that are or were this instance's. Tags say whose a resource
// claims to be, but anyone who may tag in the account can write them: a
// snapshot of another instance's volume tagged rollback-agent:* as this
// host's must never enter the catalogue, and retention must never delete
// anything on the word of a tag alone. The catalogue lists a resource
// only when its tags say it is this host's and the ledger agrees.
//
// The ledger lives in the journal (meta key ledgerKey), apart from the
// catalogue cache, which a fresh catalogue replaces wholesale. A root
// restore brings back the journal of its checkpoint, which predates the
// checkpoint itself and everything after: the restore adopts what its
// intent names (AdoptAfterRootRestore); other checkpoints made in between
// stay unlisted and are never pruned (they can be deleted by hand).

const ledgerKey = "checkpoint_ledger"

// Why a volume is in the ledger.
const (
	volumeAttached = "attached"
	volumeRestored = "restored"
	volumeReplaced = "replaced"
)

// ledger is what the journal holds under ledgerKey.
type ledger struct {
	Checkpoints map[string]*ledgerEntry `json:"checkpoints"`
	// Volumes are the volume ids that are or were this instance's, with
	// why: "attached", "restored", "replaced" (a restore swapped it out:
	// retention may delete it).
	Volumes map[string]string `json:"volumes"`
	// Replaced are the volumes restores swapped out and kept for undo:
	// what the catalogue lists and retention may delete, whatever tags
	// say (a volume at EC2's 50 tags cannot carry the agent's).
	Replaced map[string]*replacedRec `json:"replaced,omitempty"`
}

// replacedRec is one volume a restore swapped out.
type replacedRec struct {
	By         string    `json:"by"`
	Checkpoint string    `json:"checkpoint"`
	Device     string    `json:"device"`
	At         time.Time `json:"at"`
}

// ledgerEntry is one checkpoint the agent made.
type ledgerEntry struct {
	Created time.Time `json:"created"`
	// Snapshots maps each snapshot to the volume it was taken of.
	Snapshots map[string]string `json:"snapshots,omitempty"`
	// Devices maps each snapshot to the device it was taken of.
	Devices map[string]string `json:"devices,omitempty"`
	Image   string            `json:"image,omitempty"`
	// Adopted is a checkpoint learned from a root restore's intent, whose
	// snapshot ids the journal of the restored root never saw: its
	// snapshots are trusted by checkpoint id, on any of its volumes.
	Adopted bool `json:"adopted,omitempty"`
}

// MetaStore is the part of the journal the ledger uses.
type MetaStore interface {
	GetMeta(key string) (string, error)
	SetMeta(key, value string) error
}

// ledgerStore reads and changes the ledger, one change at a time.
type ledgerStore struct {
	mu   sync.Mutex
	meta MetaStore
}

// load reads the ledger; a journal without one (an agent from before the
// ledger) seeds it from the catalogue cache, as the older agent trusted.
func (l *ledgerStore) load(cache Cache, current []api.Volume) (*ledger, error) {
	v, err := l.meta.GetMeta(ledgerKey)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: read the ledger: %w", err)
	}
	led := &ledger{Checkpoints: map[string]*ledgerEntry{}, Volumes: map[string]string{}, Replaced: map[string]*replacedRec{}}
	if v != "" {
		if err := json.Unmarshal([]byte(v), led); err != nil {
			return nil, fmt.Errorf("checkpoint: the ledger in the journal is damaged (%w): nothing is trusted or pruned until it is repaired (move the journal aside)", err)
		}
		if led.Checkpoints == nil {
			led.Checkpoints = map[string]*ledgerEntry{}
		}
		if led.Volumes == nil {
			led.Volumes = map[string]string{}
		}
		if led.Replaced == nil {
			led.Replaced = map[string]*replacedRec{}
		}
		return led, nil
	}
	for _, v := range current {
		led.Volumes[v.VolumeID] = volumeAttached
	}
	cached, err := cache.Checkpoints()
	if err != nil {
		return nil, err
	}
	for i := range cached {
		led.add(&cached[i])
	}
	return led, nil
}

// update applies fn to the ledger and writes it back.
func (l *ledgerStore) update(cache Cache, current []api.Volume, fn func(*ledger)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	led, err := l.load(cache, current)
	if err != nil {
		return err
	}
	fn(led)
	b, err := json.Marshal(led)
	if err != nil {
		return err
	}
	if err := l.meta.SetMeta(ledgerKey, string(b)); err != nil {
		return fmt.Errorf("checkpoint: write the ledger: %w", err)
	}
	return nil
}

// read returns the ledger as it is now.
func (l *ledgerStore) read(cache Cache, current []api.Volume) (*ledger, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.load(cache, current)
}

// add records a checkpoint the agent made (or adopted) and its volumes.
func (led *ledger) add(c *api.Checkpoint) {
	e := led.Checkpoints[c.ID]
	if e == nil {
		e = &ledgerEntry{Created: c.CreatedAt, Snapshots: map[string]string{}, Devices: map[string]string{}}
		led.Checkpoints[c.ID] = e
	}
	if e.Snapshots == nil {
		e.Snapshots, e.Devices = map[string]string{}, map[string]string{}
	}
	for _, s := range c.Snapshots {
		e.Snapshots[s.SnapshotID] = s.VolumeID
		if s.DeviceName != "" {
			e.Devices[s.SnapshotID] = s.DeviceName
		}
		if s.VolumeID != "" && led.Volumes[s.VolumeID] == "" {
			led.Volumes[s.VolumeID] = volumeAttached
		}
	}
	if c.Image != nil && c.Image.ImageID != "" {
		e.Image = c.Image.ImageID
	}
}

// knownVolume is true for a volume that is or was this instance's.
func (led *ledger) knownVolume(id string, current []api.Volume) bool {
	if led.Volumes[id] != "" {
		return true
	}
	for _, v := range current {
		if v.VolumeID == id {
			return true
		}
	}
	return false
}

// trustSnapshot says whether a snapshot tagged as checkpoint cp's, of
// volume vol, is one the agent made; why not, when it is not.
func (led *ledger) trustSnapshot(cp, snap, vol string, current []api.Volume) (bool, string) {
	e := led.Checkpoints[cp]
	switch {
	case e == nil:
		return false, fmt.Sprintf("the agent never made checkpoint %s", cp)
	case e.Adopted:
		return true, ""
	case !led.knownVolume(vol, current):
		return false, fmt.Sprintf("it is a snapshot of %s, which never was this instance's volume", vol)
	case len(e.Snapshots) > 0 && e.Snapshots[snap] == "":
		return false, fmt.Sprintf("checkpoint %s has no snapshot %s in the agent's record", cp, snap)
	}
	return true, ""
}

// trustImage says whether an image tagged as checkpoint cp's is the one
// the agent made.
func (led *ledger) trustImage(cp, image string) (bool, string) {
	e := led.Checkpoints[cp]
	switch {
	case e == nil:
		return false, fmt.Sprintf("the agent never made checkpoint %s", cp)
	case e.Image != image:
		return false, fmt.Sprintf("checkpoint %s has no image %s in the agent's record", cp, image)
	}
	return true, ""
}
