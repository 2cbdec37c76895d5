package yamlx

import (
	"errors"
	"strings"
	"testing"
)

func TestLimits(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"flow bomb", "a: " + strings.Repeat("[", 101), "1:104"},
		{"brace bomb", "a:\n  b: " + strings.Repeat("{x: ", 101), "2:"},
		{"block bomb", strings.Repeat("- ", 300) + "x", "1:401"},
		{"too large", "a: " + strings.Repeat("x", MaxFileSize), "larger than"},
	}
	for _, c := range cases {
		_, err := Parse("f.yml", []byte(c.in))
		var ye *Error
		if !errors.As(err, &ye) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an *Error containing %q", c.name, err, c.want)
		}
	}
	// Brackets inside quoted strings in flow context, in comments and
	// dash rules in block scalars are not nesting.
	ok := []string{
		"a: [\"" + strings.Repeat("[", 200) + "\"]\n",
		"a: ['" + strings.Repeat("{", 200) + "']\n",
		"# " + strings.Repeat("[", 200) + "\na: 1\n",
		"a: |\n  " + strings.Repeat("-", 600) + "\n",
		"a: [[1, 2], {b: [3]}]\n",
	}
	for _, in := range ok {
		if _, err := Parse("f.yml", []byte(in)); err != nil {
			t.Errorf("%.40q: %v", in, err)
		}
	}
}

func TestTrailingDocumentMarker(t *testing.T) {
	_, err := Parse("f.yml", []byte("a: 1\n---\n"))
	if err == nil || !strings.Contains(err.Error(), "f.yml:2:1: more than one YAML document") {
		t.Fatalf("got %v", err)
	}
	n, err := Parse("f.yml", []byte("---\n"))
	if err != nil || n != nil {
		t.Fatalf("empty document: %v %v", n, err)
	}
}
