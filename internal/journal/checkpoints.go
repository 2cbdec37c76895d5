package journal

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// The checkpoint catalogue lives in AWS (tagged snapshots and images);
// this bucket is only a cache of it, so status answers without an API
// call. After a root restore it is rebuilt from AWS.
var bucketCheckpoints = []byte("checkpoints")

// PutCheckpoint caches one checkpoint.
func (j *Journal) PutCheckpoint(c *api.Checkpoint) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("journal: encode checkpoint %s: %w", c.ID, err)
	}
	return j.Update(func(t *Tx) error { return t.tx.Bucket(bucketCheckpoints).Put([]byte(c.ID), b) })
}

// DeleteCheckpoint drops a checkpoint from the cache.
func (j *Journal) DeleteCheckpoint(id string) error {
	return j.Update(func(t *Tx) error { return t.tx.Bucket(bucketCheckpoints).Delete([]byte(id)) })
}

// ReplaceCheckpoints makes the cache list (a fresh catalogue), except
// that checkpoints created since `since` (when the listing began) are
// kept: the listing cannot have seen them yet.
func (j *Journal) ReplaceCheckpoints(list []api.Checkpoint, since time.Time) error {
	return j.Update(func(t *Tx) error {
		b := t.tx.Bucket(bucketCheckpoints)
		fresh := map[string]bool{}
		for i := range list {
			fresh[list[i].ID] = true
		}
		var stale [][]byte
		err := b.ForEach(func(k, v []byte) error {
			var c api.Checkpoint
			if err := json.Unmarshal(v, &c); err != nil || (!fresh[string(k)] && c.CreatedAt.Before(since)) {
				stale = append(stale, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range stale {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		for i := range list {
			v, err := json.Marshal(&list[i])
			if err != nil {
				return err
			}
			if err := b.Put([]byte(list[i].ID), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Checkpoints returns the cached checkpoints, newest first.
func (j *Journal) Checkpoints() ([]api.Checkpoint, error) {
	var out []api.Checkpoint
	err := j.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCheckpoints).ForEach(func(_, v []byte) error {
			var c api.Checkpoint
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			out = append(out, c)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("journal: read checkpoints: %w", err)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].CreatedAt.After(out[b].CreatedAt) })
	return out, nil
}
