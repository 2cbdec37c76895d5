package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// tarEntry is one member of a bundle built byte by byte.
type tarEntry struct {
	name, body, link string
	mode             int64
	uid              int
	uname            string
	dir              bool
}

// writeTgz writes a tar.gz of the entries.
func writeTgz(t *testing.T, path string, ents ...tarEntry) {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.uid, Uname: e.uname, Gname: e.uname, ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		switch {
		case e.dir:
			h.Typeflag = tar.TypeDir
		case e.link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.link
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	zw.Close()
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A developer (a local user) built the bundle: its tar carries their uid,
// and its "./" entry mode 777. The kept release must give them no way to
// change what the next deployment runs as root (issue 17.1): neither the
// scripts (theirs by the headers) nor the revision root (777 by "./").
func TestTarOfALocalUserGivesThemNothingToRewrite(t *testing.T) {
	dev := makeUser(t, "rbt-dev")
	h := newHost(t, "")
	h.packagedStateDir()
	h.start()
	marker := filepath.Join(h.dir, "stop-ran")
	stop := "#!/bin/sh\necho \"stop of $ROLLBACK_AGENT_REVISION\" >> " + marker + "\n"
	appspec := "version: 0.0\nos: linux\nhooks:\n  ApplicationStop:\n    - location: scripts/stop.sh\n"
	v1 := filepath.Join(h.dir, "v1.tgz")
	writeTgz(t, v1,
		tarEntry{name: "./", mode: 0o777, uid: dev.uid, uname: dev.name, dir: true},
		tarEntry{name: "./scripts/", mode: 0o777, uid: dev.uid, uname: dev.name, dir: true},
		tarEntry{name: "./scripts/stop.sh", body: stop, mode: 0o775, uid: dev.uid, uname: dev.name},
		tarEntry{name: "./appspec.yml", body: appspec, mode: 0o666, uid: dev.uid, uname: dev.name},
	)
	r, d1 := h.deployJSON(v1)
	if r.code != 0 {
		t.Fatalf("v1: %s %s", r.stdout, r.stderr)
	}
	archive := filepath.Join(h.stateDir, "releases", d1.ID, "archive")
	evil := "#!/bin/sh\nid > " + filepath.Join(h.dir, "pwned") + "\n"
	for what, cmd := range map[string]string{
		"rewrite the script":       "printf '" + evil + "' > " + archive + "/scripts/stop.sh",
		"swap the scripts dir":     "mv " + archive + "/scripts " + archive + "/old && mkdir " + archive + "/scripts",
		"add a file to the root":   "echo x > " + archive + "/new",
		"rewrite the appspec":      "echo 'hooks: {}' >> " + archive + "/appspec.yml",
		"replace the release dir":  "mv " + filepath.Dir(archive) + " " + filepath.Dir(archive) + ".old",
		"chmod the script for all": "chmod 777 " + archive + "/scripts/stop.sh",
	} {
		if out, err := runAs(t, dev, "/bin/sh", "-c", cmd); err == nil {
			t.Errorf("%s could %s: %s", dev.name, what, out)
		}
	}
	// And if they could (here: root does it for them), the next
	// deployment would not run it: checked again before executing.
	os.WriteFile(filepath.Join(archive, "scripts/stop.sh"), []byte(evil), 0o755)
	os.Chown(filepath.Join(archive, "scripts/stop.sh"), dev.uid, dev.gid)
	v2 := filepath.Join(h.dir, "v2.tgz")
	writeTgz(t, v2, tarEntry{name: "appspec.yml", body: "version: 0.0\nos: linux\n"})
	r, d2 := h.deployJSON(v2)
	if r.code != 1 || !strings.Contains(d2.Error, "refusing to run hooks of release "+d1.ID) || !strings.Contains(d2.Error, "stop.sh belongs to uid "+strconv.Itoa(dev.uid)) {
		t.Errorf("v2 after the tamper: exit %d %s: %s", r.code, d2.Status, d2.Error)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "pwned")); err == nil {
		t.Fatal("the tampered ApplicationStop ran as root")
	}
}

// The application's user owns the installed tree (a permission gives it to
// them) and puts a symlink where the previous revision's www/old directory
// was. The next deployment's cleanup must not delete through it (issue
// 17.8), nor write through it when the revision installs there again.
func TestCleanupAndInstallNeverGoThroughTheAppUsersLink(t *testing.T) {
	www := makeUser(t, "rbt-www")
	h := newHost(t, "")
	h.start()
	dest := filepath.Join(h.dir, "dest")
	rootonly := filepath.Join(h.dir, "rootonly")
	os.Mkdir(rootonly, 0o700)
	secret := filepath.Join(rootonly, "index.html")
	os.WriteFile(secret, []byte("root's own\n"), 0o600)
	appspec := fmt.Sprintf("version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: %s\nfile_exists_behavior: OVERWRITE\npermissions:\n  - object: %s\n    owner: %s\n    group: %s\n", dest, dest, www.name, www.name)
	v1 := filepath.Join(h.dir, "v1.tgz")
	writeTgz(t, v1, tarEntry{name: "appspec.yml", body: appspec}, tarEntry{name: "app/www/old/index.html", body: "v1 page\n"}, tarEntry{name: "app/www/keep.html", body: "k\n"})
	if r, _ := h.deployJSON(v1); r.code != 0 {
		t.Fatalf("v1: %s %s", r.stdout, r.stderr)
	}
	plant := func() {
		t.Helper()
		old := filepath.Join(dest, "www/old")
		if out, err := runAs(t, www, "/bin/sh", "-c", "rm -rf "+old+" && ln -s "+rootonly+" "+old); err != nil {
			t.Fatalf("the app user could not plant the link: %v %s", err, out)
		}
	}
	plant()
	v2 := filepath.Join(h.dir, "v2.tgz")
	writeTgz(t, v2, tarEntry{name: "appspec.yml", body: appspec}, tarEntry{name: "app/www/new.html", body: "v2\n"})
	r, d2 := h.deployJSON(v2)
	if r.code != 0 {
		t.Fatalf("v2: %s %s", r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "root's own\n" {
		t.Fatalf("the cleanup went through the link: %q %v", b, err)
	}
	if !strings.Contains(strings.Join(d2.Warnings, "\n"), "left alone what the previous revision installed below "+filepath.Join(dest, "www/old")) {
		t.Errorf("warnings: %v", d2.Warnings)
	}
	// The link is no longer where this agent made a directory (v2 has
	// none there): a revision that installs www/old is refused before
	// anything changes, rather than installed through it.
	r, d := h.deployJSON(v1)
	if r.code != 1 || !strings.Contains(d.Error, "that a non-root user could have made is where files[0] needs a directory; nothing is installed through it") {
		t.Fatalf("v1 over the app user's link: exit %d %s", r.code, d.Error)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "root's own\n" {
		t.Fatalf("written through the link: %q %v", b, err)
	}
	// Variant: the link replaces a directory of the revision installed
	// now: it is replaced by that directory again, nothing goes through.
	if out, err := runAs(t, www, "/bin/rm", filepath.Join(dest, "www/old")); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if r, _ := h.deployJSON(v1); r.code != 0 {
		t.Fatalf("v1 again: %s %s", r.stdout, r.stderr)
	}
	plant()
	r, _ = h.deployJSON(v1)
	if r.code != 0 {
		t.Fatalf("v1 over the link made since: %s %s", r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "root's own\n" {
		t.Fatalf("the install wrote through the link: %q %v", b, err)
	}
	if fi, err := os.Lstat(filepath.Join(dest, "www/old")); err != nil || !fi.IsDir() {
		t.Errorf("www/old: %v %v, want the revision's directory", fi, err)
	}
}

// The usual `./server &` in ApplicationStart, with servers that keep
// writing to the hook's stdout and, escaped with setsid, stderr: the
// event's log stays under limits.hook_output_bytes while they write, after
// the deployment ended and after the agent restarted (issue 17.16); and
// they are not killed by the agent going away (no SIGPIPE).
func TestBackgroundWritersNeverGrowTheEventLog(t *testing.T) {
	const limit = 256 << 10
	h := newHost(t, "limits: {hook_output_bytes: 256KiB}\n")
	h.start()
	out, errc := filepath.Join(h.dir, "count-out"), filepath.Join(h.dir, "count-err")
	pids := filepath.Join(h.dir, "pids")
	start := "#!/bin/bash\n" +
		"( n=0; while :; do head -c 65536 /dev/zero; n=$((n+1)); echo $n > " + out + "; done ) &\n" +
		"echo $! >> " + pids + "\n" +
		"setsid bash -c 'n=0; while :; do head -c 65536 /dev/zero >&2; n=$((n+1)); echo $n > " + errc + "; done' < /dev/null > /dev/null &\n" +
		"echo $! >> " + pids + "\n" +
		"echo started\n"
	bundle := filepath.Join(h.dir, "server.tgz")
	writeTgz(t, bundle,
		tarEntry{name: "appspec.yml", body: "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: start.sh\n"},
		tarEntry{name: "start.sh", body: start, mode: 0o755},
	)
	r, d := h.deployJSON(bundle)
	t.Cleanup(func() {
		b, _ := os.ReadFile(pids)
		for _, f := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(f); err == nil {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
	})
	if r.code != 0 || !strings.Contains(strings.Join(d.Warnings, "\n"), "failed to close STDOUT") {
		t.Fatalf("deploy: exit %d warnings %v\n%s", r.code, d.Warnings, r.stderr)
	}
	logPath := filepath.Join(h.stateDir, "logs", d.ID, "ApplicationStart.log")
	bounded := func(when string) {
		t.Helper()
		for _, c := range []string{out, errc} {
			n := waitCounter(t, c, 0)
			waitCounter(t, c, n+64) // 4 MiB more, 16 times the cap
		}
		fi, err := os.Stat(logPath)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > limit+64 {
			t.Fatalf("%s: the event's log is %d bytes, over its %d-byte cap", when, fi.Size(), limit)
		}
	}
	bounded("after the deployment")
	h.agent.Stop()
	h.start()
	bounded("after an agent restart")
}

// waitCounter waits until the number in path exceeds n.
func waitCounter(t *testing.T, path string, n int) int {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(path)
		if c, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && c > n {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not get past %d (%q): the writer stopped (SIGPIPE?)", path, n, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A file name in ISO-8859-1 used to be stored in the install manifest as
// U+FFFD, so redeploying the bundle found "a file already exists" and ended
// needs_operator (issue 17.14). Such names are refused at Unpack, before
// anything changes, every time; the same name in UTF-8 deploys and
// redeploys.
func TestNamesThatAreNotUTF8AreRefusedBeforeAnythingChanges(t *testing.T) {
	h := newHost(t, "")
	h.start()
	dest := filepath.Join(h.dir, "dest")
	appspec := "version: 0.0\nos: linux\nfiles:\n  - source: app\n    destination: " + dest + "\n"
	latin1 := filepath.Join(h.dir, "latin1.tgz")
	writeTgz(t, latin1, tarEntry{name: "appspec.yml", body: appspec}, tarEntry{name: "app/caf\xe9.txt", body: "x\n"}, tarEntry{name: "app/menu", link: "caf\xe9.txt"})
	for i := 0; i < 2; i++ {
		r, d := h.deployJSON(latin1)
		if r.code != 1 || !hasStep(&d, "Unpack", api.StepFailed) || !strings.Contains(d.Error, `entry "app/caf\xe9.txt": the name is not valid UTF-8`) {
			t.Fatalf("attempt %d: exit %d %s: %s", i, r.code, d.Status, d.Error)
		}
		if _, err := os.Stat(dest); err == nil {
			t.Fatalf("attempt %d installed something", i)
		}
	}
	if st := h.status(); st.State != api.StateIdle {
		t.Errorf("state %s after the refusals", st.State)
	}
	utf8 := filepath.Join(h.dir, "utf8.tgz")
	writeTgz(t, utf8, tarEntry{name: "appspec.yml", body: appspec}, tarEntry{name: "app/café.txt", body: "x\n"})
	for i := 0; i < 2; i++ {
		if r, d := h.deployJSON(utf8); r.code != 0 {
			t.Fatalf("UTF-8 name, deployment %d: %s %s", i, d.Status, d.Error)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dest, "café.txt")); err != nil || string(b) != "x\n" {
		t.Errorf("café.txt: %q %v", b, err)
	}
}
