package engine_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/engine"
	"github.com/rollback-agent/rollback-agent/internal/journal"
)

// onStep builds the engine's OnStep for one start: when killAt says so,
// the worker announces it and stops for good, between two journal writes,
// as a SIGKILL would leave it.
func (a *agent) onStep() func(*api.Deployment, api.Step, engine.StepPoint) {
	kill, killed := a.killAt, a.killed
	if kill == nil {
		return nil
	}
	var once sync.Once
	return func(d *api.Deployment, s api.Step, at engine.StepPoint) {
		if !kill(d, s, at) {
			return
		}
		once.Do(func() { close(killed) })
		select {} // this process is gone
	}
}

// onTransition records every status change; one the lifecycle table does
// not allow is a test failure.
func (a *agent) onTransition(d api.Deployment, from api.DeploymentStatus) {
	if !engine.Allowed(from, d.Status) || strings.Contains(d.Error, "internal error") {
		a.t.Errorf("transition %s %s→%s is not in the lifecycle table: %s", d.ID, from, d.Status, d.Error)
	}
	a.mu.Lock()
	a.transitions = append(a.transitions, fmt.Sprintf("%s %s→%s", d.ID, from, d.Status))
	a.mu.Unlock()
}

// dieAt makes the next start's engine die at the given point of the
// given step (rung "" for the deployment's own steps, the n-th time it
// runs, from 1).
func (a *agent) dieAt(step string, r api.RungName, n int, at engine.StepPoint) {
	seen := 0
	a.killed = make(chan struct{})
	a.killAt = func(d *api.Deployment, s api.Step, p engine.StepPoint) bool {
		if s.Name != step || s.Rung != r || p != at {
			return false
		}
		seen++
		return seen == n
	}
}

// crash waits for the engine to die where dieAt said, then closes the
// journal (the process is gone) and starts a new agent process on the
// same state, which recovers from the journal.
func (a *agent) crash() {
	a.t.Helper()
	a.die()
	a.killAt = nil
	a.start()
}

// die waits for the engine to die where dieAt said and closes the
// journal: the process is gone, nothing is started.
func (a *agent) die() {
	a.t.Helper()
	select {
	case <-a.killed:
	case <-time.After(30 * time.Second):
		a.t.Fatal("the engine never reached the point it was to die at")
	}
	a.j.Close()
	a.cancel = nil // the old worker is parked for good: nothing to wait for
}

// rootImage is what the fake root volume holds: the journal, the
// installed files and the host's own configuration (the file sys).
// Restoring it puts the journal back as it was when the checkpoint was
// taken, as EC2's root replacement does.
type rootImage struct {
	Journal []byte            `json:"journal"`
	Dest    map[string]string `json:"dest"`
	Sys     []byte            `json:"sys"`
}

func (a *agent) snapRoot() []byte {
	img := rootImage{Dest: map[string]string{}}
	var err error
	if img.Journal, err = os.ReadFile(filepath.Join(a.cfg.StateDir, journal.FileName)); err != nil {
		panic(err)
	}
	if img.Sys, err = os.ReadFile(filepath.Join(a.dir, "sys")); err != nil {
		panic(err)
	}
	filepath.Walk(a.dest, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			img.Dest[strings.TrimPrefix(p, a.dest)] = string(b)
		}
		return nil
	})
	b, _ := json.Marshal(img)
	return b
}

// reboot is the host coming back on the restored root: the engine died
// in the replacement's wait, the root is the checkpoint's, and a new
// agent process starts.
func (a *agent) reboot(f *fakeCheckpoints) {
	a.t.Helper()
	select {
	case <-f.rebooting:
	case <-time.After(time.Minute):
		a.t.Fatal("the root rung never started the replacement")
	}
	a.j.Close()
	a.cancel = nil
	var img rootImage
	if err := json.Unmarshal(f.reboot(), &img); err != nil {
		a.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.cfg.StateDir, journal.FileName), img.Journal, 0o600); err != nil {
		a.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.dir, "sys"), img.Sys, 0o644); err != nil {
		a.t.Fatal(err)
	}
	os.RemoveAll(a.dest)
	for rel, content := range img.Dest {
		p := filepath.Join(a.dest, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			a.t.Fatal(err)
		}
	}
	a.start()
}
