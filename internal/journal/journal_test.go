package journal

import (
	"errors"
	"strings"
	"testing"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

func TestExclusiveLockNamesHolder(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.SetMeta("boot_id", "abc"); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, 0)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "held by rollback-agent pid") {
		t.Fatalf("second open: %v", err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j2, err := Open(dir, 0)
	if err != nil {
		t.Fatalf("reopen after close: %v", err)
	}
	defer j2.Close()
	if v, _ := j2.GetMeta("boot_id"); v != "abc" {
		t.Errorf("meta lost: %q", v)
	}
}

func TestDeploymentsOrderPointersAndPrune(t *testing.T) {
	j, err := Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for _, id := range []string{"d-1", "d-2", "d-3", "d-4"} {
		if err := j.PutDeployment(&api.Deployment{ID: id, Status: api.StatusQueued}); err != nil {
			t.Fatal(err)
		}
	}
	// Updating a record keeps its place in the history.
	j.PutDeployment(&api.Deployment{ID: "d-2", Status: api.StatusSucceeded})
	got, _ := j.Deployments(0)
	var ids []string
	for _, d := range got {
		ids = append(ids, d.ID)
	}
	if strings.Join(ids, ",") != "d-4,d-3,d-2,d-1" || got[2].Status != api.StatusSucceeded {
		t.Fatalf("history %v", ids)
	}
	if two, _ := j.Deployments(2); len(two) != 2 || two[0].ID != "d-4" {
		t.Errorf("limit: %v", two)
	}
	err = j.Update(func(tx *Tx) error {
		if err := tx.SetPointer(PointerCurrent, "d-2"); err != nil {
			return err
		}
		return tx.SetInstallIntent(&InstallIntent{Target: "d-3", Previous: []string{"d-2"}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := j.Pointer(PointerCurrent); p != "d-2" {
		t.Errorf("pointer %q", p)
	}
	if in, _ := j.InstallIntent(); in == nil || in.Target != "d-3" || in.Previous[0] != "d-2" {
		t.Errorf("intent %+v", in)
	}
	removed, err := j.PruneDeployments(2, map[string]bool{"d-2": true})
	if err != nil || strings.Join(removed, ",") != "d-1,d-3" {
		t.Errorf("pruned %v %v (keep 2, d-2 protected: the oldest unprotected go)", removed, err)
	}
	if _, err := j.Deployment("d-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("pruned record still there: %v", err)
	}
}
