package fleet

import (
	"sort"
	"time"
)

// Entry is one object under hosts/: its document, or why it could not be
// read.
type Entry struct {
	Key     string   `json:"key"`
	Doc     *HostDoc `json:"doc,omitempty"`
	Problem string   `json:"problem,omitempty"`
}

// Host is one host as `agentctl fleet` shows it.
type Host struct {
	Key string   `json:"key"`
	Doc *HostDoc `json:"host"`
	// Stale: the document missed StaleAfter heartbeats; the agent may be
	// down, or the host gone.
	Stale bool `json:"stale"`
	// Age is how long ago the document was written.
	Age time.Duration `json:"age_ns"`
	// Attention: failed, rolled back or needs an operator.
	Attention bool `json:"attention"`
}

// Version is how many hosts run one revision.
type Version struct {
	Version string `json:"version"`
	Hosts   int    `json:"hosts"`
	Healthy int    `json:"healthy"`
	Stale   int    `json:"stale"`
}

// View is the fleet of an app, or of one channel of it.
type View struct {
	Bucket  string    `json:"bucket"`
	Prefix  string    `json:"prefix"`
	App     string    `json:"app"`
	Channel string    `json:"channel,omitempty"`
	At      time.Time `json:"at"`
	Hosts   []Host    `json:"hosts"`
	// Versions sums the hosts by current revision, most hosts first.
	Versions []Version `json:"versions"`
	// Problems are documents that could not be read.
	Problems []string `json:"problems,omitempty"`
}

// Attention reports whether any host failed, was rolled back or needs an
// operator.
func (v *View) Attention() bool {
	for _, h := range v.Hosts {
		if h.Attention {
			return true
		}
	}
	return false
}

// NewView sums entries up at now, keeping the hosts of channel (all when
// empty). An instance with two documents (its role was made again, so
// its aws:userid changed) shows once, with the newer one.
func NewView(entries []Entry, channel string, now time.Time) *View {
	v := &View{Channel: channel, At: now, Hosts: []Host{}, Versions: []Version{}}
	newest := map[string]int{}
	for _, e := range entries {
		if e.Doc == nil {
			v.Problems = append(v.Problems, e.Key+": "+e.Problem)
			continue
		}
		if channel != "" && e.Doc.Channel != channel {
			continue
		}
		h := Host{Key: e.Key, Doc: e.Doc, Stale: e.Doc.Stale(now), Age: now.Sub(e.Doc.UpdatedAt), Attention: e.Doc.Problem()}
		if i, ok := newest[e.Doc.InstanceID]; ok {
			if v.Hosts[i].Doc.UpdatedAt.Before(e.Doc.UpdatedAt) {
				v.Hosts[i] = h
			}
			continue
		}
		newest[e.Doc.InstanceID] = len(v.Hosts)
		v.Hosts = append(v.Hosts, h)
	}
	sort.Slice(v.Hosts, func(i, j int) bool {
		a, b := v.Hosts[i].Doc, v.Hosts[j].Doc
		if a.Channel != b.Channel {
			return a.Channel < b.Channel
		}
		return a.InstanceID < b.InstanceID
	})
	byVersion := map[string]*Version{}
	for _, h := range v.Hosts {
		name := "-"
		if h.Doc.Current != nil {
			name = h.Doc.Current.Revision
		}
		c := byVersion[name]
		if c == nil {
			c = &Version{Version: name}
			byVersion[name] = c
		}
		c.Hosts++
		if h.Doc.Health != nil && h.Doc.Health.Healthy && !h.Stale {
			c.Healthy++
		}
		if h.Stale {
			c.Stale++
		}
	}
	for _, c := range byVersion {
		v.Versions = append(v.Versions, *c)
	}
	sort.SliceStable(v.Versions, func(i, j int) bool {
		if v.Versions[i].Hosts != v.Versions[j].Hosts {
			return v.Versions[i].Hosts > v.Versions[j].Hosts
		}
		return v.Versions[i].Version < v.Versions[j].Version
	})
	return v
}
