package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// stepTimes collects, over repeated operations, how long each step took
// and the time between steps (journal writes, set-up, the final record):
// where an operation's time goes, from the agent's own record.
type stepTimes struct {
	order []string
	by    map[string]stats
}

func (s *stepTimes) add(d *api.Deployment) {
	if s.by == nil {
		s.by = map[string]stats{}
	}
	var inSteps time.Duration
	for _, st := range d.Steps {
		t := st.EndedAt.Sub(st.StartedAt)
		inSteps += t
		s.put(st.Name, t)
	}
	s.put("(between steps)", took(d)-inSteps)
}

func (s *stepTimes) put(name string, t time.Duration) {
	if _, ok := s.by[name]; !ok {
		s.order = append(s.order, name)
	}
	s.by[name] = append(s.by[name], t)
}

// all lists every step's median, in the order the steps ran.
func (s *stepTimes) all() string {
	var parts []string
	for _, n := range s.order {
		parts = append(parts, fmt.Sprintf("%s %s", n, round(s.by[n].median())))
	}
	return strings.Join(parts, ", ")
}

// String lists the steps by median time, longest first, down to those
// that together make 95 % of the total.
func (s *stepTimes) String() string {
	type kv struct {
		name string
		t    time.Duration
	}
	var all []kv
	var total time.Duration
	for _, n := range s.order {
		m := s.by[n].median()
		all = append(all, kv{n, m})
		total += m
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].t > all[j].t })
	var parts []string
	var sum time.Duration
	for _, e := range all {
		if sum >= total*95/100 {
			break
		}
		sum += e.t
		parts = append(parts, fmt.Sprintf("%s %s", e.name, round(e.t)))
	}
	return strings.Join(parts, ", ")
}
