package config

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"

	"github.com/rollback-agent/rollback-agent/internal/yamlx"
)

// Volume selection modes of checkpoint.volumes.
const (
	VolumesAll  = "all"
	VolumesData = "data"
	VolumesList = "list"
)

// VolumeSelector is checkpoint.volumes: "all", "data" or a list of volume ids.
type VolumeSelector struct {
	Mode string
	IDs  []string
}

// DecodeYAMLNode implements yamlx.NodeDecoder.
func (v *VolumeSelector) DecodeYAMLNode(n ast.Node, p *yamlx.Problems) {
	if yamlx.IsNull(n) {
		return
	}
	if s, ok := yamlx.Scalar(n); ok {
		switch s {
		case VolumesAll, VolumesData:
			*v = VolumeSelector{Mode: s}
		default:
			p.Errorf(n, "checkpoint.volumes: want all, data or a list of volume ids, got %q", s)
		}
		return
	}
	items, ok := yamlx.Sequence(n)
	if !ok {
		p.Errorf(n, "checkpoint.volumes: want all, data or a list of volume ids, got a %s", yamlx.KindOf(n))
		return
	}
	sel := VolumeSelector{Mode: VolumesList}
	for _, it := range items {
		id, ok := yamlx.Scalar(it)
		if !ok || !volumeIDPattern.MatchString(id) {
			p.Errorf(it, "checkpoint.volumes: %q is not a volume id (vol-0123456789abcdef0)", id)
			continue
		}
		sel.IDs = append(sel.IDs, id)
	}
	if len(sel.IDs) == 0 && len(items) == 0 {
		p.Errorf(n, "checkpoint.volumes: an empty list selects nothing; use before_deploy: [] to take no checkpoint")
		return
	}
	*v = sel
}

func (v VolumeSelector) String() string {
	if v.Mode == VolumesList {
		return "[" + strings.Join(v.IDs, ", ") + "]"
	}
	return v.Mode
}

// StatusRange is an expected HTTP status: a single code or "lo-hi".
type StatusRange struct {
	Lo, Hi int
}

// Contains reports whether code is in the range.
func (r StatusRange) Contains(code int) bool { return code >= r.Lo && code <= r.Hi }

func (r StatusRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// DecodeYAMLNode implements yamlx.NodeDecoder.
func (r *StatusRange) DecodeYAMLNode(n ast.Node, p *yamlx.Problems) {
	if yamlx.IsNull(n) {
		return
	}
	s, ok := yamlx.Scalar(n)
	if !ok {
		p.Errorf(n, "expect_status: want a status such as 200 or a range such as 200-299, got a %s", yamlx.KindOf(n))
		return
	}
	lo, hi, found := strings.Cut(s, "-")
	if !found {
		hi = lo
	}
	l, err1 := strconv.Atoi(strings.TrimSpace(lo))
	h, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil || l < 100 || h > 599 || l > h {
		p.Errorf(n, "expect_status: %q is not an HTTP status (100-599) or range such as 200-299", s)
		return
	}
	*r = StatusRange{Lo: l, Hi: h}
}

// ByteSize is a size in bytes, written as a number or with a unit
// (KiB, MiB, GiB, KB, MB, GB).
type ByteSize int64

// DecodeYAMLNode implements yamlx.NodeDecoder.
func (b *ByteSize) DecodeYAMLNode(n ast.Node, p *yamlx.Problems) {
	if yamlx.IsNull(n) {
		return
	}
	s, ok := yamlx.Scalar(n)
	if !ok {
		p.Errorf(n, "want a size such as 512MiB or 2GiB, got a %s", yamlx.KindOf(n))
		return
	}
	v, err := ParseByteSize(s)
	if err != nil {
		p.Errorf(n, "%v", err)
		return
	}
	*b = ByteSize(v)
}

// ParseByteSize parses "1048576", "512MiB", "2GiB", "10MB".
func ParseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (use a number of bytes or a unit: 512MiB, 2GiB)", s)
	}
	return v * mult, nil
}
