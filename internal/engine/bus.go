package engine

import (
	"sync"
	"time"

	"github.com/rollback-agent/rollback-agent/internal/api"
)

// bus fans progress events out to subscribers (agentctl --wait, the
// inbox). A subscriber that does not keep up loses events rather than
// slowing the deployment down; it can re-read the record.
type bus struct {
	mu   sync.Mutex
	subs map[*subscription]struct{}
}

type subscription struct {
	ch     chan api.Event
	filter string // deployment id, or "" for all
}

func newBus() *bus { return &bus{subs: map[*subscription]struct{}{}} }

// Subscribe returns a channel of events for deployment id ("" for all)
// and a function to stop.
func (b *bus) Subscribe(id string) (<-chan api.Event, func()) {
	s := &subscription{ch: make(chan api.Event, 256), filter: id}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, s)
			b.mu.Unlock()
			close(s.ch)
		})
	}
}

func (b *bus) publish(ev api.Event) {
	ev.SchemaVersion = api.SchemaVersion
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		if s.filter != "" && s.filter != ev.DeploymentID {
			continue
		}
		select {
		case s.ch <- ev:
		default:
		}
	}
}
