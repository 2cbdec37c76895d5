package posixacl

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func names(uid uint32) string {
	if uid == 65534 {
		return "nobody"
	}
	return ""
}

func TestParseSpec(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Spec
		err  string
	}{
		{in: "u:bob:rw", want: Spec{Tag: User, Name: "bob", Perm: 6}},
		{in: "user:bob:r-x", want: Spec{Tag: User, Name: "bob", Perm: 5}},
		{in: "g:adm:4", want: Spec{Tag: Group, Name: "adm", Perm: 4}},
		{in: "d:u::rwx", want: Spec{Default: true, Tag: UserObj, Perm: 7}},
		{in: "default:group:www:r", want: Spec{Default: true, Tag: Group, Name: "www", Perm: 4}},
		{in: "m::r", want: Spec{Tag: Mask, Perm: 4}},
		{in: "o::---", want: Spec{Tag: Other}},
		{in: "m:bob:r", err: "takes no name"},
		{in: "u:bob:rwxx", err: "is not an ACL entry"},
		{in: "x:bob:r", err: "is not an ACL entry"},
	} {
		got, err := ParseSpec(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %+v %v, want %+v", c.in, got, err, c.want)
		}
	}
}

func resolveFixed(tag Tag, name string) (uint32, error) {
	if name == "nobody" {
		return 65534, nil
	}
	return LookupID(tag, name)
}

func mustSpecs(t *testing.T, in ...string) []Spec {
	t.Helper()
	var out []Spec
	for _, s := range in {
		sp, err := ParseSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sp)
	}
	return out
}

// CodeDeploy's mask is the mode's group bits: u:nobody:rw on 0640 is r--
// in effect (issue 14, point 6).
func TestBuildMaskFromGroupBits(t *testing.T) {
	acc, def, err := Build(0o640, mustSpecs(t, "u:nobody:rw"), false, resolveFixed)
	if err != nil || def != nil {
		t.Fatal(err, def)
	}
	if got := acc.Format(names, names); got != "user::rw-,user:nobody:rw-,group::r--,mask::r--,other::---" {
		t.Errorf("got %s", got)
	}
	acc, _, _ = Build(0o640, mustSpecs(t, "u:nobody:rw", "m::rw"), false, resolveFixed)
	if got := acc.Format(names, names); !strings.Contains(got, "mask::rw-") {
		t.Errorf("explicit mask lost: %s", got)
	}
	if _, _, err := Build(0o640, mustSpecs(t, "d:u:nobody:r"), false, resolveFixed); err == nil || !strings.Contains(err.Error(), "directories only") {
		t.Errorf("default ACL on a file: %v", err)
	}
	_, def, err = Build(0o750, mustSpecs(t, "d:u:nobody:rx"), true, resolveFixed)
	if err != nil {
		t.Fatal(err)
	}
	if got := def.Format(names, names); got != "user::rwx,user:nobody:r-x,group::r-x,mask::r-x,other::---" {
		t.Errorf("default: %s", got)
	}
	if _, _, err := Build(0o640, mustSpecs(t, "u:nobody:r", "u:nobody:w"), false, resolveFixed); err == nil {
		t.Errorf("a user named twice is accepted")
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	a := ACL{{Tag: Other}, {Tag: User, ID: 7, Perm: 5}, {Tag: UserObj, Perm: 7}, {Tag: Mask, Perm: 5}, {Tag: GroupObj, Perm: 5}, {Tag: User, ID: 3, Perm: 4}}
	b, err := a.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Format(names, names) != "user::rwx,user:3:r--,user:7:r-x,group::r-x,mask::r-x,other::---" {
		t.Errorf("round trip: %s", got.Format(names, names))
	}
	for _, bad := range [][]byte{nil, {2, 0, 0}, {1, 0, 0, 0}, append(b, 1)} {
		if _, err := Decode(bad); err == nil {
			t.Errorf("Decode(%x) accepted", bad)
		}
	}
	if _, err := (ACL{{Tag: UserObj}, {Tag: GroupObj}, {Tag: Other}, {Tag: User, ID: 1}}).Encode(); err == nil {
		t.Errorf("named entry without mask encoded")
	}
}

// The kernel and the acl package's getfacl read what SetFd writes the
// same way: an independent check of the encoding.
func TestSetFdAgreesWithGetfacl(t *testing.T) {
	getfacl, err := exec.LookPath("getfacl")
	if err != nil {
		t.Fatalf("getfacl (package acl, `make ostools`) is needed as the independent reader: %v", err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	acc, _, err := Build(0o640, mustSpecs(t, "u:65534:rw", "g:65534:r"), false, resolveFixed)
	if err != nil {
		t.Fatal(err)
	}
	if err := SetFd(int(f.Fd()), XattrAccess, acc); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(getfacl, "-c", "-n", p).Output()
	if err != nil {
		t.Fatalf("getfacl: %v %s", err, out)
	}
	want := "user::rw-\nuser:65534:rw-\t#effective:r--\ngroup::r--\ngroup:65534:r--\nmask::r--\nother::---\n"
	if strings.TrimSpace(string(out)) != strings.TrimSpace(want) {
		t.Errorf("getfacl reads\n%s\nwant\n%s", out, want)
	}
	got, err := Lget(p, XattrAccess)
	if err != nil || got.Format(names, names) != "user::rw-,user:nobody:rw-,group::r--,group:nobody:r--,mask::r--,other::---" {
		t.Errorf("Lget: %v %v", got, err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode after the ACL: %v", fi.Mode())
	}
	// Directories take a default ACL too.
	d := filepath.Join(dir, "d")
	os.Mkdir(d, 0o750)
	df, _ := os.Open(d)
	defer df.Close()
	_, def, err := Build(0o750, mustSpecs(t, "d:u:65534:rx"), true, resolveFixed)
	if err != nil {
		t.Fatal(err)
	}
	if err := SetFd(int(df.Fd()), XattrDefault, def); err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command(getfacl, "-c", "-n", "-d", d).Output()
	if !strings.Contains(string(out), "default:user:65534:r-x") && !strings.Contains(string(out), "user:65534:r-x") {
		t.Errorf("getfacl -d: %s", out)
	}
}
