package hostile

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rollback-agent/rollback-agent/internal/api"
	"github.com/rollback-agent/rollback-agent/internal/journal"
	"github.com/rollback-agent/rollback-agent/internal/testbed/revision"
)

// journalDamage is what happens to a state dir while its agent is
// stopped: power loss, a bad disk, a file system repair, a clumsy
// operator, someone copying another host's state. Exactly one is set.
type journalDamage struct {
	// Pages overwrites pages of journal.db with 0xA5: Count pages from
	// page From (0 and 1 are bbolt's meta pages; Count 0: to the end).
	Pages *pageRange `yaml:"pages"`
	// RootPage overwrites the page the newest meta page names as the root
	// of the bucket tree: bbolt opens the file, and the first read of a
	// bucket would panic (in the middle of a deployment).
	RootPage bool `yaml:"root_page"`
	// Truncate cuts journal.db to this many bytes.
	Truncate *int64 `yaml:"truncate"`
	// Replace is journal.db's whole new content.
	Replace *string `yaml:"replace"`
	// Remove deletes journal.db.
	Remove bool `yaml:"remove"`
	// Swap puts another agent's (sound) journal in its place.
	Swap bool `yaml:"swap"`
	// Record is the new JSON of the deployment's record, written through
	// bbolt: the file stays sound, one record does not decode.
	Record *string `yaml:"record"`
	// Witness is journal.witness's whole new content.
	Witness *string `yaml:"witness"`
}

type pageRange struct {
	From  int64 `yaml:"from"`
	Count int64 `yaml:"count"`
}

func (d *journalDamage) apply(stateDir string) error {
	path := filepath.Join(stateDir, journal.FileName)
	switch {
	case d.Pages != nil:
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		page := int64(os.Getpagesize())
		n := fi.Size() - d.Pages.From*page
		if d.Pages.Count > 0 {
			n = min(n, d.Pages.Count*page)
		}
		if n <= 0 {
			return fmt.Errorf("journal.db has %d bytes: no page %d to damage", fi.Size(), d.Pages.From)
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteAt(bytes.Repeat([]byte{0xA5}, int(n)), d.Pages.From*page)
		return err
	case d.RootPage:
		root, pageSize, err := rootPage(path)
		if err != nil {
			return err
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteAt(bytes.Repeat([]byte{0xA5}, int(pageSize)), int64(root)*int64(pageSize))
		return err
	case d.Truncate != nil:
		return os.Truncate(path, *d.Truncate)
	case d.Replace != nil:
		return os.WriteFile(path, []byte(*d.Replace), 0o600)
	case d.Remove:
		return os.Remove(path)
	case d.Swap:
		other := filepath.Join(filepath.Dir(stateDir), "other-host")
		j, err := journal.Open(other, time.Second)
		if err != nil {
			return err
		}
		j.Close()
		return os.Rename(filepath.Join(other, journal.FileName), path)
	case d.Record != nil:
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			return err
		}
		defer db.Close()
		return db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("deployments"))
			if b == nil {
				return fmt.Errorf("no deployments bucket in %s", path)
			}
			k, _ := b.Cursor().First()
			if k == nil {
				return fmt.Errorf("no deployment record in %s", path)
			}
			return b.Put(k, []byte(*d.Record))
		})
	case d.Witness != nil:
		return os.WriteFile(filepath.Join(stateDir, journal.WitnessName), []byte(*d.Witness), 0o600)
	}
	return fmt.Errorf("damage says nothing")
}

// rootPage reads bbolt's two meta pages (after a 16-byte page header:
// magic, version, page size, flags, then the root bucket's page id; the
// transaction id at 48) and returns the root page of the newer one.
func rootPage(path string) (root uint64, pageSize uint32, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	ne := binary.NativeEndian
	pageSize = ne.Uint32(b[16+8:])
	if pageSize == 0 || len(b) < 2*int(pageSize) {
		return 0, 0, fmt.Errorf("%s: no meta pages", path)
	}
	m0, m1 := b[16:], b[int(pageSize)+16:]
	m := m0
	if ne.Uint64(m1[48:]) > ne.Uint64(m0[48:]) {
		m = m1
	}
	return ne.Uint64(m[16:]), pageSize, nil
}

// runJournal gives the case an agent of its own that deployed once,
// stops it, damages its state dir as the case says, and starts it again.
// The agent must come up and answer (no crash loop), report the trouble
// in status and doctor with what to do, refuse work while it needs an
// operator, and never write a journal it cannot read; a positive control
// must deploy again.
func runJournal(t *testing.T, c *hostileCase) result {
	r := result{name: c.name, expected: c.expected(), ok: true}
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
		r.ok = false
	}
	if c.Damage == nil {
		t.Fatalf("%s: a journal case needs damage", c.name)
	}
	h := newHost(t)
	h.start()
	dest := filepath.Join(h.dir, "srv", "app")
	bundle := func(v string) string {
		p := filepath.Join(h.dir, v+".tgz")
		if err := (revision.Revision{Dest: dest, Files: map[string]revision.File{"v": {Content: v}}}).TarGz(p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if res := h.ctl("deploy", bundle("v1"), "--wait"); res.code != 0 {
		t.Fatalf("%s: the deployment before the damage: exit %d %s%s", c.name, res.code, res.stdout, res.stderr)
	}
	h.agent.Stop()
	if err := c.Damage.apply(h.stateDir); err != nil {
		t.Fatalf("%s: damage: %v", c.name, err)
	}
	path := filepath.Join(h.stateDir, journal.FileName)
	damaged, _ := os.ReadFile(path)

	h.start()
	var st api.Status
	res := h.ctl("status", "-o", "json")
	if err := json.Unmarshal([]byte(res.stdout), &st); res.code != 0 || err != nil {
		t.Fatalf("%s: agentctl status: exit %d %v\n%s%s", c.name, res.code, err, res.stdout, res.stderr)
	}
	var trouble, text string
	if st.Operator != nil {
		trouble, text = st.Operator.Trouble, st.Operator.What+" / "+st.Operator.Next
	}
	r.got = fmt.Sprintf("%s %s %q", st.State, trouble, clip(oneLine(text), 70))

	if c.Expect.Accepted {
		if st.State == api.StateNeedsOperator {
			fail("%s: needs an operator: %+v", c.name, st.Operator)
		}
		if res := h.ctl("deploy", bundle("v2"), "--wait"); res.code != 0 {
			fail("%s: deploy after the damage: exit %d %s%s", c.name, res.code, res.stdout, res.stderr)
		}
	} else {
		if st.State != api.StateNeedsOperator || trouble != c.Expect.Trouble {
			fail("%s: state %s, trouble %q, want needs_operator %q (%+v)", c.name, st.State, trouble, c.Expect.Trouble, st.Operator)
		}
		for _, m := range c.Expect.checkText(text, "") {
			fail("%s: status %s: %s", c.name, m, text)
		}
		if res := h.ctl("deploy", bundle("v2")); res.code == 0 {
			fail("%s: a deployment was accepted while the agent needs an operator: %s", c.name, res.stdout)
		}
		if chk := doctorJournal(h); chk.Result != api.DoctorFail || chk.Fix == "" {
			fail("%s: doctor's journal check: %+v", c.name, chk)
		}
	}
	if err := h.alive(); err != nil {
		fail("%s: %v", c.name, err)
		r.got += " | DAEMON DOWN"
	}
	h.agent.Stop()
	if trouble == journal.TroubleJournalDamaged {
		if now, _ := os.ReadFile(path); !bytes.Equal(now, damaged) {
			fail("%s: the agent wrote to the journal it could not read", c.name)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "v")); !c.Expect.Accepted && string(b) != "v1" {
		fail("%s: the application's files changed while the agent needed an operator: v=%q", c.name, b)
	}
	return r
}

// doctorJournal is agentctl doctor's journal check.
func doctorJournal(h *host) api.DoctorCheck {
	res := h.ctl("doctor", "-o", "json", "--timeout", "60s")
	var rep api.DoctorReport
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		return api.DoctorCheck{Detail: fmt.Sprintf("agentctl doctor: exit %d %v: %s", res.code, err, clip(res.stdout+res.stderr, 500))}
	}
	for _, c := range rep.Checks {
		if c.Name == "journal" {
			return c
		}
	}
	return api.DoctorCheck{Detail: "no journal check in " + strings.Join(checkNames(rep.Checks), ", ")}
}

func checkNames(cs []api.DoctorCheck) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}
