package journal

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func reopen(t *testing.T, dir string) *Journal {
	t.Helper()
	j, err := Open(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func wantTrouble(t *testing.T, j *Journal, what string) {
	t.Helper()
	tr := j.Trouble()
	if tr == nil || tr.Kind != TroubleJournalLost || !strings.Contains(tr.What, what) || !strings.Contains(tr.Next, "agentctl acknowledge journal-lost") {
		t.Fatalf("trouble %+v, want %s: %q", tr, TroubleJournalLost, what)
	}
}

// Issue 17 item 4: a journal cut to zero bytes, deleted or replaced is
// not taken for a new agent, and the channel floors survive it.
func TestALostJournalIsTroubleNotANewStart(t *testing.T) {
	const url = "s3://b/demo/channels/prod.json"
	for _, loss := range []struct {
		name string
		do   func(t *testing.T, dir string)
		what string
	}{
		{"cut to zero bytes", func(t *testing.T, dir string) { os.Truncate(filepath.Join(dir, FileName), 0) }, "vanished or was emptied"},
		{"deleted", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, FileName)) }, "vanished or was emptied"},
		{"replaced by another agent's", func(t *testing.T, dir string) {
			other := t.TempDir()
			o, err := Open(other, 0)
			if err != nil {
				t.Fatal(err)
			}
			o.Close()
			b, _ := os.ReadFile(filepath.Join(other, FileName))
			os.WriteFile(filepath.Join(dir, FileName), b, 0o600)
		}, "is not the one this agent kept"},
	} {
		t.Run(loss.name, func(t *testing.T) {
			dir := t.TempDir()
			j := reopen(t, dir)
			if tr := j.Trouble(); tr != nil {
				t.Fatalf("a new state dir has trouble: %+v", tr)
			}
			if err := j.RaiseChannelFloor(url, ChannelFloor{Sequence: 7, Version: "v7"}); err != nil {
				t.Fatal(err)
			}
			if err := j.RaiseChannelFloor(url, ChannelFloor{Sequence: 3, Version: "v3"}); err != nil {
				t.Fatal(err)
			}
			j.Close()
			loss.do(t, dir)

			j = reopen(t, dir)
			wantTrouble(t, j, loss.what)
			if f, err := j.ChannelFloor(url); err != nil || f.Sequence != 7 || f.Version != "v7" {
				t.Errorf("floor after the loss: %+v %v, want sequence 7 (never lowered)", f, err)
			}
			// Still trouble at the next start, until acknowledged.
			j.Close()
			j = reopen(t, dir)
			wantTrouble(t, j, "")
			if err := j.Acknowledge("something-else"); err == nil {
				t.Error("acknowledged the wrong kind")
			}
			if err := j.Acknowledge(TroubleJournalLost); err != nil {
				t.Fatal(err)
			}
			if tr := j.Trouble(); tr != nil {
				t.Errorf("trouble after acknowledging: %+v", tr)
			}
			j.Close()
			j = reopen(t, dir)
			if tr := j.Trouble(); tr != nil {
				t.Errorf("trouble at the start after acknowledging: %+v", tr)
			}
			if f, _ := j.ChannelFloor(url); f.Sequence != 7 {
				t.Errorf("floor after acknowledging: %+v", f)
			}
			if w, _ := readWitness(j.witnessPath()); w == nil || len(w.Lost) != 1 {
				t.Errorf("the witness keeps no note of the lost journal: %+v", w)
			}
		})
	}
}

// A damaged witness beside an intact journal is rebuilt from it; beside a
// new journal, neither record can be trusted.
func TestADamagedWitness(t *testing.T) {
	dir := t.TempDir()
	j := reopen(t, dir)
	j.Close()
	os.WriteFile(filepath.Join(dir, WitnessName), []byte("{garbage"), 0o600)
	j = reopen(t, dir)
	if tr := j.Trouble(); tr != nil {
		t.Errorf("intact journal, damaged witness: %+v", tr)
	}
	if w, err := readWitness(j.witnessPath()); err != nil || w == nil {
		t.Errorf("witness not rebuilt: %v", err)
	}
	j.Close()
	os.WriteFile(filepath.Join(dir, WitnessName), []byte("{garbage"), 0o600)
	os.Truncate(filepath.Join(dir, FileName), 0)
	j = reopen(t, dir)
	wantTrouble(t, j, "witness beside it is damaged")
}
