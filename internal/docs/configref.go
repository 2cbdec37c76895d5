package docs

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/config"
)

// key is one entry of agent.yaml, read from the schema by reflection.
type key struct {
	Path    string // checkpoint.before_deploy; list elements as checks[]
	Name    string // before_deploy
	Depth   int
	Section bool // a mapping of further keys
	Type    string
	Default string // "" when the schema has none
	Doc     string
}

// leafType names the types that decode from one YAML node although they
// are structs (or look like ints).
func leafType(t reflect.Type) (string, bool) {
	switch t {
	case reflect.TypeFor[time.Duration]():
		return "duration", true
	case reflect.TypeFor[config.ByteSize]():
		return "size", true
	case reflect.TypeFor[config.VolumeSelector]():
		return "all, data or list of volume ids", true
	case reflect.TypeFor[config.StatusRange]():
		return "status or range", true
	}
	return "", false
}

// configKeys walks config.Config in declaration order with the defaults
// of config.Default().
func configKeys() ([]key, error) {
	var keys []key
	extra := config.ReferenceDocs()
	var errs []string
	var walk func(t reflect.Type, v reflect.Value, prefix string, depth int)
	walk = func(t reflect.Type, v reflect.Value, prefix string, depth int) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			k := key{Path: prefix + name, Name: name, Depth: depth, Doc: f.Tag.Get("doc")}
			if e, ok := extra[k.Path]; ok {
				if k.Doc == "" {
					k.Doc = e.Doc
				}
				k.Default = e.Default
			}
			var fv reflect.Value
			if v.IsValid() {
				fv = v.Field(i)
			}
			ft := f.Type
			if lt, ok := leafType(ft); ok {
				k.Type = lt
				if fv.IsValid() {
					k.Default = formatValue(fv)
				}
				keys = append(keys, k)
				continue
			}
			switch {
			case ft.Kind() == reflect.Struct:
				k.Section = true
				keys = append(keys, k)
				walk(ft, fv, k.Path+".", depth+1)
				continue
			case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
				k.Section = true
				keys = append(keys, k)
				walk(ft.Elem(), reflect.Value{}, k.Path+".", depth+1)
				continue
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				k.Type = "list of " + name
				if fv.IsValid() {
					k.Default = formatValue(fv)
				}
				keys = append(keys, k)
				walk(ft.Elem(), reflect.Value{}, k.Path+"[].", depth+1)
				continue
			}
			k.Type = typeName(ft)
			if k.Type == "" {
				errs = append(errs, fmt.Sprintf("%s: no reference type for %s (teach internal/docs/configref.go)", k.Path, ft))
			}
			if fv.IsValid() {
				k.Default = formatValue(fv)
			}
			keys = append(keys, k)
		}
	}
	walk(reflect.TypeFor[config.Config](), reflect.ValueOf(*config.Default()), "", 0)
	for _, k := range keys {
		if !k.Section && k.Doc == "" {
			errs = append(errs, k.Path+": no doc (add a doc:\"...\" tag in internal/config/schema.go)")
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("config reference:\n  %s", strings.Join(errs, "\n  "))
	}
	return keys, nil
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int64:
		return "int"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String {
			return "list of strings"
		}
	}
	return ""
}

// formatValue writes a default the way agent.yaml would spell it.
func formatValue(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case time.Duration:
		return formatDuration(x)
	case config.ByteSize:
		return formatSize(int64(x))
	case config.VolumeSelector:
		return x.String()
	case config.StatusRange:
		return x.String()
	case string:
		if x == "" {
			return `""`
		}
		return x
	case []string:
		return "[" + strings.Join(x, ", ") + "]"
	case bool:
		return strconv.FormatBool(x)
	case int:
		return strconv.Itoa(x)
	}
	if v.Kind() == reflect.Slice {
		if v.Type().Elem().Kind() == reflect.String {
			// Named string types: checkpoint kinds, rung names.
			parts := make([]string, v.Len())
			for i := range parts {
				parts[i] = v.Index(i).String()
			}
			return "[" + strings.Join(parts, ", ") + "]"
		}
		if v.Len() == 0 {
			return "[]"
		}
		return fmt.Sprintf("%d entries", v.Len())
	}
	return fmt.Sprint(v.Interface())
}

// formatDuration drops Go's zero tails: 720h0m0s is 720h, 5m0s is 5m.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// formatSize uses the largest binary unit that divides the size.
func formatSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// ConfigReference is the README's table of every key of agent.yaml.
func ConfigReference() (string, error) {
	keys, err := configKeys()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("| key | type | default | what it does |\n|---|---|---|---|\n")
	for _, k := range keys {
		if k.Section {
			continue
		}
		def := "-"
		if k.Default != "" {
			def = "`" + cell(k.Default) + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", k.Path, k.Type, def, cell(k.Doc))
	}
	return b.String(), nil
}

// cell escapes a markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
