package engine_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/engine/rung"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/testutil"
)

// One damaged deployment record: recovery cannot tell what that
// deployment was doing, so the engine stops taking work (fail closed)
// instead of stopping silently while new deployments queue forever.
// Submit says why, and the fault names the record and what to do.
func TestDamagedRecordStopsTheEngineLoudly(t *testing.T) {
	a, _ := ladderAgent(t, rung.Revision)
	d1 := mustStatus(t, a.deploy(a.appRev("v1", "ok", nil)), api.StatusSucceeded)
	a.stop()
	db, err := bolt.Open(filepath.Join(a.cfg.StateDir, journal.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("deployments")).Put([]byte(d1.ID), []byte(`{"id":"`+d1.ID+`","status":`))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	a.start()
	testutil.WaitFor(t, 30*time.Second, "the engine to find the damaged record", func() error {
		if a.e.Fault() == nil {
			return errors.New("no fault yet")
		}
		return nil
	})
	_, err = a.e.Submit(a.request(a.appRev("v2", "ok", nil)))
	if !errors.Is(err, engine.ErrStopped) || !strings.Contains(err.Error(), d1.ID) {
		t.Fatalf("submit with a damaged record: %v", err)
	}
	if hint := engine.FaultHint(a.e.Fault(), a.cfg.StateDir); !strings.Contains(hint, "is damaged") {
		t.Errorf("hint: %s", hint)
	}
}
