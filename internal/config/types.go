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
