package journal

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// ErrCorrupt means the journal file is damaged: a page is not what bbolt
// expects, or a record does not decode. The agent then stops taking work
// and says so (docs/design.md, "When the journal is damaged"); it never
// guesses what a damaged record said.
var ErrCorrupt = errors.New("the journal is damaged")

// view and update are bbolt's View and Update, with a panic inside bbolt
// (which is how it reports most damaged pages) turned into ErrCorrupt:
// a damaged file must not take the daemon down in a crash loop.
func (j *Journal) view(fn func(*bolt.Tx) error) error {
	return safely(j.path, func() error { return j.db.View(fn) })
}
func (j *Journal) update(fn func(*bolt.Tx) error) error {
	return safely(j.path, func() error { return j.db.Update(fn) })
}

func safely(path string, fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %s: %v", ErrCorrupt, path, p)
		}
	}()
	return fn()
}

// check walks every page of db (bbolt's consistency check): a file whose
// pages are damaged is found at open, not in the middle of a deployment.
func check(db *bolt.DB, path string) error {
	return safely(path, func() error {
		return db.View(func(tx *bolt.Tx) error {
			var errs []error
			for err := range tx.Check() {
				errs = append(errs, err)
				if len(errs) == 5 {
					break
				}
			}
			if len(errs) > 0 {
				return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, errors.Join(errs...))
			}
			return nil
		})
	})
}
