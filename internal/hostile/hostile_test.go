package hostile

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// minCases is issue 8's floor for the whole corpus.
const minCases = 40

// TestHostileCorpus feeds every case of testdata/hostile to the product:
// appspecs to the parser, configs to rollback-agent --check-config,
// manifests to the channel watcher over S3, bundles, raw requests and
// inbox drops to one running daemon, damaged state dirs to agents of
// their own, in sequence (each bundle gets a fresh destination
// and sentinel tree). It ends with a table of case, expected and got.
func TestHostileCorpus(t *testing.T) {
	cases := loadCorpus(t)
	byKind := map[string][]*hostileCase{}
	for _, c := range cases {
		byKind[c.Kind] = append(byKind[c.Kind], c)
	}
	var counts []string
	for _, k := range kinds {
		counts = append(counts, fmt.Sprintf("%s %d", k, len(byKind[k])))
		if len(byKind[k]) == 0 {
			t.Errorf("no %s cases in the corpus", k)
		}
	}
	t.Logf("%d cases: %s", len(cases), strings.Join(counts, ", "))
	if os.Geteuid() != 0 {
		// The request cases are the API as root sees it, and the agent
		// needs root for its socket group and its staging.
		t.Fatal("the hostile suite runs as root, as every test bed test does (loop devices, mounts, other uids)")
	}
	if len(cases) < minCases {
		t.Errorf("%d cases, want at least %d", len(cases), minCases)
	}
	lockSentinel(t)

	var rows []result
	record := func(name string, run func(t *testing.T) result) {
		start := time.Now()
		var r result
		ok := t.Run(name, func(t *testing.T) { r = run(t) })
		if r.name == "" { // the runner stopped with t.Fatal
			r = result{name: name, got: "runner failed"}
		}
		r.ok = r.ok && ok
		r.got += fmt.Sprintf(" [%s]", time.Since(start).Round(10*time.Millisecond))
		rows = append(rows, r)
	}
	for _, c := range byKind[kindAppspec] {
		record(c.name, func(t *testing.T) result { return runAppspec(t, c) })
	}
	bins := peers.Binaries(t)
	for _, c := range byKind[kindConfig] {
		record(c.name, func(t *testing.T) result { return runConfig(t, bins.Agent, c) })
	}
	bed := peers.Get(t)
	for i, c := range byKind[kindManifest] {
		record(c.name, func(t *testing.T) result { return runManifest(t, bed, c, i) })
	}
	h := newHost(t)
	h.start()
	for _, c := range byKind[kindBundle] {
		record(c.name, func(t *testing.T) result { return runBundle(t, h, c) })
	}
	for _, c := range byKind[kindRequest] {
		record(c.name, func(t *testing.T) result { return runRequest(t, h, c) })
	}
	// Inbox cases after the requests, whose {{deployment}} is the newest
	// deployment: these add deployments of their own.
	for _, c := range byKind[kindInbox] {
		record(c.name, func(t *testing.T) result { return runInbox(t, h, c) })
	}
	// Journal cases run agents of their own (each damages its state dir).
	for _, c := range byKind[kindJournal] {
		record(c.name, func(t *testing.T) result { return runJournal(t, c) })
	}
	// Reloads last: one that kills the daemon must not fail the cases
	// above; a fresh daemon on the same state serves the next reload.
	for _, c := range byKind[kindConfig] {
		if !c.Reload {
			continue
		}
		if h.agent.Exited() {
			h.start()
		}
		record(c.name+"/reload", func(t *testing.T) result { return runReload(t, h, c) })
	}
	logTable(t, rows)
}
