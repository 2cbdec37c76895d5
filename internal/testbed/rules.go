package testbed

import (
	"fmt"
	"os"
	"time"
)

// Rules are the timings of the AWS behaviours the bed plays on top of
// moto that AWS always shows, so they are on by default in every test
// (motogaps.go lists them, each with its AWS source). A test may change
// them with SetRules, never to make the bed more lenient than AWS
// without saying why.
type Rules struct {
	// ConsistencyWindow is how long a snapshot, image, volume or instance
	// created through the proxy stays unknown to the calls that name it
	// (they answer its *.NotFound) and absent from filtered lists. AWS
	// gives no bound ("eventually"); the bed's default is short so the
	// suite stays fast, and TESTBED_CONSISTENCY_WINDOW (a Go duration)
	// sets it for a whole run.
	ConsistencyWindow time.Duration
	// UdevDelay is how long after AttachVolume the volume's by-id link
	// appears (the attachment is "attaching" until then), and how long
	// after a detach the old link stays, pointing at a device that is
	// gone or, once the kernel reuses its number, at another volume.
	UdevDelay time.Duration
}

// DefaultConsistencyWindow is the bed's consistency window unless
// TESTBED_CONSISTENCY_WINDOW says otherwise.
const DefaultConsistencyWindow = 300 * time.Millisecond

// defaultRules are the rules a new bed starts with.
func defaultRules() Rules {
	r := Rules{ConsistencyWindow: DefaultConsistencyWindow, UdevDelay: 200 * time.Millisecond}
	if v := os.Getenv("TESTBED_CONSISTENCY_WINDOW"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d >= 0 {
			r.ConsistencyWindow = d
		}
	}
	return r
}

// Rules returns the rules in force.
func (b *Bed) Rules() Rules {
	b.sim.mu.Lock()
	defer b.sim.mu.Unlock()
	return b.sim.rules
}

// SetRules puts r in force and returns a function that restores the
// rules that were in force before.
func (b *Bed) SetRules(r Rules) (restore func()) {
	b.sim.mu.Lock()
	old := b.sim.rules
	b.sim.rules = r
	b.sim.mu.Unlock()
	return func() {
		b.sim.mu.Lock()
		b.sim.rules = old
		b.sim.mu.Unlock()
	}
}

func (s *sim) currentRules() Rules {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rules
}

// compose runs outer's hooks around inner's: outer's Answer and Before
// first (outer's Before also gates an Answer of inner: a rule refuses
// calls the proxy answers itself too), outer's After last (it sees the
// answer inner made).
func compose(outer, inner *hooks) *hooks {
	switch {
	case outer == nil:
		return inner
	case inner == nil:
		return outer
	}
	ran := fmt.Sprintf("before %p", outer)
	before := func(c *call) *reply {
		if outer.Before == nil || c.stash[ran] != nil {
			return nil
		}
		c.stash[ran] = true
		return outer.Before(c)
	}
	return &hooks{
		Answer: func(c *call) *reply {
			if outer.Answer != nil {
				if r := outer.Answer(c); r != nil {
					return r
				}
			}
			if inner.Answer == nil {
				return nil
			}
			if r := before(c); r != nil {
				return r
			}
			return inner.Answer(c)
		},
		Before: func(c *call) *reply {
			if r := before(c); r != nil {
				return r
			}
			if inner.Before != nil {
				return inner.Before(c)
			}
			return nil
		},
		After: func(c *call, r *reply) *reply {
			if inner.After != nil {
				r = inner.After(c, r)
			}
			if outer.After != nil {
				r = outer.After(c, r)
			}
			return r
		},
	}
}
