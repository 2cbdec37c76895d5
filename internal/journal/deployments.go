package journal

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

var (
	bucketDeployments = []byte("deployments")  // id → JSON api.Deployment
	bucketOrder       = []byte("deploy_order") // seq (8 bytes) → id
	bucketPointers    = []byte("pointers")     // name → value
)

// Pointers kept in the journal.
const (
	// PointerCurrent is the deployment whose revision is live and healthy.
	PointerCurrent = "current"
	// PointerLastGood is the last deployment that succeeded.
	PointerLastGood = "last_good"
	// PointerInstalled is the deployment whose files the last completed
	// Install put on disk (CodeDeploy's last_successful_install: it is
	// written at the end of Install, so ApplicationStop of the next
	// deployment runs this revision's script even if it later failed).
	PointerInstalled = "installed"
	// PointerInstalling is set while an Install runs: JSON InstallIntent.
	PointerInstalling = "installing"
)

// InstallIntent is written before an Install touches the disk, so a crash
// mid-Install knows which manifests describe what may be on disk.
type InstallIntent struct {
	Target   string   `json:"target"`   // release being installed
	Previous []string `json:"previous"` // releases whose manifests were on disk before
}

// ErrNotFound is returned for an unknown deployment.
var ErrNotFound = errors.New("not found")

// Tx is a write transaction over deployments and pointers: a status
// change and the pointers that follow from it are committed together.
type Tx struct{ tx *bolt.Tx }

// Update runs fn in one write transaction.
func (j *Journal) Update(fn func(*Tx) error) error {
	if err := j.update(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) }); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// PutDeployment stores d, giving it a place in the history when new.
func (t *Tx) PutDeployment(d *api.Deployment) error {
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode deployment %s: %w", d.ID, err)
	}
	deps := t.tx.Bucket(bucketDeployments)
	if deps.Get([]byte(d.ID)) == nil {
		order := t.tx.Bucket(bucketOrder)
		seq, err := order.NextSequence()
		if err != nil {
			return err
		}
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], seq)
		if err := order.Put(k[:], []byte(d.ID)); err != nil {
			return err
		}
	}
	return deps.Put([]byte(d.ID), b)
}

// SetPointer sets (or, with "", clears) a pointer.
func (t *Tx) SetPointer(name, value string) error {
	p := t.tx.Bucket(bucketPointers)
	if value == "" {
		return p.Delete([]byte(name))
	}
	return p.Put([]byte(name), []byte(value))
}

// Pointer reads a pointer inside the transaction.
func (t *Tx) Pointer(name string) string {
	return string(t.tx.Bucket(bucketPointers).Get([]byte(name)))
}

// PutDeployment stores d in its own transaction.
func (j *Journal) PutDeployment(d *api.Deployment) error {
	return j.Update(func(t *Tx) error { return t.PutDeployment(d) })
}

// Deployment returns the deployment with id.
func (j *Journal) Deployment(id string) (*api.Deployment, error) {
	var d api.Deployment
	err := j.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDeployments).Get([]byte(id))
		if b == nil {
			return fmt.Errorf("deployment %s: %w", id, ErrNotFound)
		}
		if err := json.Unmarshal(b, &d); err != nil {
			return fmt.Errorf("%w: deployment record %s does not decode: %w", ErrCorrupt, id, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	return &d, nil
}

// DamagedError names records that do not decode. Deployments returns it
// with the records that do.
type DamagedError struct{ IDs []string }

func (e *DamagedError) Error() string {
	return fmt.Sprintf("deployment record(s) %s do not decode", strings.Join(e.IDs, ", "))
}

// Unwrap makes a damaged record an ErrCorrupt.
func (e *DamagedError) Unwrap() error { return ErrCorrupt }

// Deployments returns up to limit deployments, newest first (limit <= 0:
// all). Records that do not decode are left out and named in a
// *DamagedError, returned with the others: a list can still be shown, and
// the engine, which must not guess, stops on it.
func (j *Journal) Deployments(limit int) ([]api.Deployment, error) {
	var out []api.Deployment
	var damaged []string
	err := j.view(func(tx *bolt.Tx) error {
		deps := tx.Bucket(bucketDeployments)
		c := tx.Bucket(bucketOrder).Cursor()
		for k, id := c.Last(); k != nil; k, id = c.Prev() {
			b := deps.Get(id)
			if b == nil {
				continue
			}
			var d api.Deployment
			if err := json.Unmarshal(b, &d); err != nil {
				damaged = append(damaged, string(id))
				continue
			}
			out = append(out, d)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if len(damaged) > 0 {
		return out, fmt.Errorf("journal: %w", &DamagedError{IDs: damaged})
	}
	return out, nil
}

// Pointer returns a pointer's value ("" when unset).
func (j *Journal) Pointer(name string) (string, error) {
	var v string
	err := j.view(func(tx *bolt.Tx) error {
		v = string(tx.Bucket(bucketPointers).Get([]byte(name)))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("journal: read pointer %s: %w", name, err)
	}
	return v, nil
}

// InstallIntent returns the pending install intent, if any.
func (j *Journal) InstallIntent() (*InstallIntent, error) {
	v, err := j.Pointer(PointerInstalling)
	if err != nil || v == "" {
		return nil, err
	}
	var in InstallIntent
	if err := json.Unmarshal([]byte(v), &in); err != nil {
		return nil, fmt.Errorf("journal: decode install intent: %w", err)
	}
	return &in, nil
}

// SetInstallIntent records (in != nil) or clears the install intent.
func (t *Tx) SetInstallIntent(in *InstallIntent) error {
	if in == nil {
		return t.SetPointer(PointerInstalling, "")
	}
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return t.SetPointer(PointerInstalling, string(b))
}

// PruneDeployments deletes the oldest records beyond keep, except those in protect.
func (j *Journal) PruneDeployments(keep int, protect map[string]bool) ([]string, error) {
	var removed []string
	err := j.Update(func(t *Tx) error {
		order := t.tx.Bucket(bucketOrder)
		deps := t.tx.Bucket(bucketDeployments)
		// Collect first: deleting under a moving cursor skips keys.
		type rec struct{ key, id []byte }
		var all []rec
		c := order.Cursor()
		for k, id := c.First(); k != nil; k, id = c.Next() {
			all = append(all, rec{append([]byte(nil), k...), append([]byte(nil), id...)})
		}
		excess := len(all) - keep
		for _, r := range all {
			if excess <= 0 {
				break
			}
			if protect[string(r.id)] {
				continue
			}
			if err := deps.Delete(r.id); err != nil {
				return err
			}
			if err := order.Delete(r.key); err != nil {
				return err
			}
			removed = append(removed, string(r.id))
			excess--
		}
		return nil
	})
	return removed, err
}
