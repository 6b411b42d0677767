package upstream

import (
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Balancer picks targets by smooth weighted round robin (nginx's algorithm): with weights 5,1,1
// it yields a a b a c a a rather than five a's in a row.
type Balancer struct {
	mu      sync.Mutex
	targets []*Target
	single  *Target
}

// Target is one upstream server of a route.
type Target struct {
	URL    *url.URL
	Weight int
	// Pool is the lean HTTP/1.1 client of a plain-http target (nil for https).
	Pool    *Pool
	current int
	// downUntil (Unix nanoseconds) keeps the balancer off a target that could not be
	// connected to, for FailTimeout (nginx's max_fails=1 fail_timeout=10s).
	downUntil atomic.Int64
}

// FailTimeout is how long a target that could not be connected to is passed over.
const FailTimeout = 10 * time.Second

// MarkDown passes the target over until FailTimeout after now.
func (t *Target) MarkDown(now time.Time) { t.downUntil.Store(now.Add(FailTimeout).UnixNano()) }

// NewBalancer balances over targets, which must not be empty.
func NewBalancer(targets []*Target) *Balancer {
	b := &Balancer{targets: targets}
	if len(targets) == 1 {
		b.single = targets[0]
	}
	return b
}

// Targets are the balanced targets, in policy order. The slice must not be changed.
func (b *Balancer) Targets() []*Target { return b.targets }

// Next picks a target by smooth weighted round-robin among those not marked down at now; when
// every target is down it picks among all of them, so that a recovered upstream is found.
func (b *Balancer) Next(now time.Time) *Target {
	if b.single != nil {
		return b.single
	}
	ns := now.UnixNano()
	b.mu.Lock()
	defer b.mu.Unlock()
	if t := b.pick(func(t *Target) bool { return t.downUntil.Load() <= ns }); t != nil {
		return t
	}
	return b.pick(func(*Target) bool { return true })
}

// pick is one round of smooth weighted round-robin over the targets ok accepts; nil when it
// accepts none. Called with b.mu held.
func (b *Balancer) pick(ok func(*Target) bool) *Target {
	total := 0
	var best *Target
	for _, t := range b.targets {
		if !ok(t) {
			continue
		}
		t.current += t.Weight
		total += t.Weight
		if best == nil || t.current > best.current {
			best = t
		}
	}
	if best != nil {
		best.current -= total
	}
	return best
}
