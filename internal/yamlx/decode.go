package yamlx

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
)

// NodeDecoder is implemented by types whose YAML form is not a plain
// scalar/struct mapping (for example "all | data | [vol-...]").
type NodeDecoder interface {
	DecodeYAMLNode(n ast.Node, p *Problems)
}

// Decoder fills Go values from YAML nodes by their `yaml` struct tags,
// recording every problem instead of stopping at the first one, and the
// position of every value it sets so that later validation can point at
// the right line.
type Decoder struct {
	Problems *Problems
	// Positions maps a dotted path ("health.checks[0].http.url") to the
	// position of its value in the file.
	Positions map[string]Pos
	// UnknownKeysAreWarnings turns unknown keys into warnings (appspec
	// semantics) instead of errors (config semantics).
	UnknownKeysAreWarnings bool
}

var durationType = reflect.TypeOf(time.Duration(0))

// Decode decodes n into the value v points to.
func (d *Decoder) Decode(n ast.Node, v any, path string) {
	d.decode(Unwrap(n), reflect.ValueOf(v).Elem(), path)
}

func (d *Decoder) record(path string, n ast.Node) {
	if d.Positions != nil && path != "" {
		d.Positions[path] = PosOf(n)
	}
}

func (d *Decoder) decode(n ast.Node, v reflect.Value, path string) {
	// Scalars are located at their value; mappings and lists keep the
	// position of their key, recorded by the caller.
	if _, ok := Scalar(n); ok {
		d.record(path, n)
	}
	if v.CanAddr() {
		if nd, ok := v.Addr().Interface().(NodeDecoder); ok {
			nd.DecodeYAMLNode(n, d.Problems)
			return
		}
	}
	if IsNull(n) {
		// An empty value keeps the default, as in "channel:" with nothing after it.
		return
	}
	if _, alias := n.(*ast.AliasNode); alias {
		d.Problems.Errorf(n, "%s: aliases are not supported", name(path))
		return
	}
	switch {
	case v.Type() == durationType:
		s, ok := Scalar(n)
		if !ok {
			d.Problems.Errorf(n, "%s: want a duration such as 30s or 5m, got a %s", name(path), KindOf(n))
			return
		}
		if s == "0" {
			v.SetInt(0)
			return
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			d.Problems.Errorf(n, "%s: %q is not a duration (use a number with a unit: 500ms, 30s, 5m, 720h)", name(path), s)
			return
		}
		v.SetInt(int64(dur))
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		items, ok := Sequence(n)
		if !ok {
			d.Problems.Errorf(n, "%s: want a list, got a %s", name(path), KindOf(n))
			return
		}
		out := reflect.MakeSlice(v.Type(), len(items), len(items))
		for i, it := range items {
			d.record(fmt.Sprintf("%s[%d]", path, i), it)
			d.decode(it, out.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(out)
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.String:
		s, ok := Scalar(n)
		if !ok {
			d.Problems.Errorf(n, "%s: want a string, got a %s", name(path), KindOf(n))
			return
		}
		v.SetString(s)
	case reflect.Bool:
		s, _ := Scalar(n)
		if _, ok := n.(*ast.BoolNode); !ok {
			d.Problems.Errorf(n, "%s: want true or false, got %s", name(path), describe(n, s))
			return
		}
		v.SetBool(s == "true" || s == "True" || s == "TRUE" || s == "yes" || s == "on")
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint32, reflect.Uint64, reflect.Int16, reflect.Uint16:
		s, _ := Scalar(n)
		if _, ok := n.(*ast.IntegerNode); !ok {
			d.Problems.Errorf(n, "%s: want a whole number, got %s", name(path), describe(n, s))
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, 64)
		if err != nil {
			d.Problems.Errorf(n, "%s: %q is not a whole number", name(path), s)
			return
		}
		switch v.Kind() {
		case reflect.Uint32, reflect.Uint64, reflect.Uint16:
			if i < 0 || (v.Kind() == reflect.Uint32 && i > math.MaxUint32) || (v.Kind() == reflect.Uint16 && i > math.MaxUint16) {
				d.Problems.Errorf(n, "%s: %d is out of range", name(path), i)
				return
			}
			v.SetUint(uint64(i))
		default:
			if v.OverflowInt(i) {
				d.Problems.Errorf(n, "%s: %d is out of range", name(path), i)
				return
			}
			v.SetInt(i)
		}
	case reflect.Float64:
		s, ok := Scalar(n)
		f, err := strconv.ParseFloat(s, 64)
		if !ok || err != nil {
			d.Problems.Errorf(n, "%s: want a number, got %s", name(path), describe(n, s))
			return
		}
		v.SetFloat(f)
	default:
		d.Problems.Errorf(n, "%s: unsupported field type %s", name(path), v.Type())
	}
}

func (d *Decoder) decodeStruct(n ast.Node, v reflect.Value, path string) {
	entries, ok := Mapping(n, d.Problems)
	if !ok {
		d.Problems.Errorf(n, "%s: want a mapping of keys, got a %s", name(path), KindOf(n))
		return
	}
	fields := structFields(v.Type())
	for _, e := range entries {
		idx, known := fields[e.Key]
		if !known {
			msg := fmt.Sprintf("unknown key %q%s (known keys: %s)", e.Key, in(path), strings.Join(sortedKeys(fields), ", "))
			if d.UnknownKeysAreWarnings {
				d.Problems.Warnf(e.KeyNode, "%s", msg)
			} else {
				d.Problems.Errorf(e.KeyNode, "%s", msg)
			}
			continue
		}
		d.record(join(path, e.Key), e.KeyNode)
		d.decode(e.Value, v.Field(idx), join(path, e.Key))
	}
}

func (d *Decoder) decodeMap(n ast.Node, v reflect.Value, path string) {
	if v.Type().Key().Kind() != reflect.String {
		d.Problems.Errorf(n, "%s: unsupported map key type", name(path))
		return
	}
	entries, ok := Mapping(n, d.Problems)
	if !ok {
		d.Problems.Errorf(n, "%s: want a mapping, got a %s", name(path), KindOf(n))
		return
	}
	out := reflect.MakeMapWithSize(v.Type(), len(entries))
	for _, e := range entries {
		ev := reflect.New(v.Type().Elem()).Elem()
		d.record(join(path, e.Key), e.KeyNode)
		d.decode(e.Value, ev, join(path, e.Key))
		out.SetMapIndex(reflect.ValueOf(e.Key).Convert(v.Type().Key()), ev)
	}
	v.Set(out)
}

// structFields maps yaml key names to field indexes.
func structFields(t reflect.Type) map[string]int {
	out := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "-" {
			continue
		}
		if tag == "" {
			tag = strings.ToLower(f.Name)
		}
		out[tag] = i
	}
	return out
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func name(path string) string {
	if path == "" {
		return "document"
	}
	return path
}

func in(path string) string {
	if path == "" {
		return ""
	}
	return " in " + path
}

func describe(n ast.Node, s string) string {
	if s != "" {
		return fmt.Sprintf("%s %q", KindOf(n), s)
	}
	return "a " + KindOf(n)
}
