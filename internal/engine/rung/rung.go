// Package rung names the rungs of the rollback ladder and fixes their
// climbing order. It belongs to the engine, which climbs them; config
// imports it to validate rollback.ladder, and nothing else decides what
// a rung is.
package rung

import (
	"slices"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// The rungs, fastest first.
const (
	// Revision reinstalls the last good revision from releases/ (seconds).
	Revision api.RungName = "revision"
	// Volumes swaps the data volumes for new ones from the checkpoint's
	// snapshots (minutes).
	Volumes api.RungName = "volumes"
	// Root replaces the root volume from the checkpoint (minutes, reboots).
	Root api.RungName = "root"
)

// Ladder returns every rung in climbing order.
func Ladder() []api.RungName { return []api.RungName{Revision, Volumes, Root} }

// Index is the position of r in the climbing order, -1 when r is not a
// rung.
func Index(r api.RungName) int { return slices.Index(Ladder(), r) }

// From lists the rungs of allowed, in climbing order, from `from` on.
func From(allowed []api.RungName, from api.RungName) []api.RungName {
	var out []api.RungName
	for _, r := range Ladder()[max(Index(from), 0):] {
		if slices.Contains(allowed, r) {
			out = append(out, r)
		}
	}
	return out
}
