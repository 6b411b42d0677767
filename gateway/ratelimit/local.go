package ratelimit

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// limiter is what the Registry holds: a Limiter that knows its spec and can be stopped.
type limiter interface {
	Limiter
	// config returns the spec the limiter was built from.
	config() Spec
	// close stops the limiter's goroutines, if any.
	close()
}

var (
	_ limiter = (*localFixed)(nil)
	_ limiter = (*localSliding)(nil)
	_ limiter = (*localReq)(nil)
)

// localStores hold the keys of every in-memory limiter of a Registry, one store per kind
// shared by all limiters of that kind: an idle limiter then costs its spec and a few words,
// not a store of its own. A limiter's keys are told apart from others' by the limiter's
// address (see storeKey).
type localStores struct {
	now     func() time.Time
	fixed   *store[localFixed, fixedEntry]
	sliding *store[localSliding, slidingEntry]
	req     *store[localReq, reqEntry]
}

func newLocalStores(now func() time.Time) *localStores {
	return &localStores{
		now:     now,
		fixed:   newStore[localFixed, fixedEntry](),
		sliding: newStore[localSliding, slidingEntry](),
		req:     newStore[localReq, reqEntry](),
	}
}

// sweep evicts the keys whose state equals a fresh key's at now, so eviction never changes a
// decision, and returns how many it removed.
//
// Keys of limiters the Registry has dropped (Retain, a changed spec) are not removed at once:
// a snapshot still being served may use them, and removing a busy key would forget its
// count. They go like any other key, at the first sweep after they fall idle; until then
// they keep their limiter reachable.
func (s *localStores) sweep(now time.Time) (removed int) {
	removed += s.fixed.sweep(func(l *localFixed, e *fixedEntry) bool {
		idx, _ := windowAt(now, l.spec.Window)
		w := uint64(uint32(idx))
		old := e.state.Load()
		return old>>32 != w && e.state.CompareAndSwap(old, deadCount)
	})
	removed += s.sliding.sweep(func(l *localSliding, e *slidingEntry) bool {
		idx, _ := windowAt(now, l.spec.Window)
		e.mu.Lock()
		defer e.mu.Unlock()
		// Older than the previous window: both counts would read zero.
		e.dead = e.win < idx-1
		return e.dead
	})
	ns := now.UnixNano()
	removed += s.req.sweep(func(_ *localReq, e *reqEntry) bool {
		old := e.tat.Load()
		// A TAT in the past reads like a fresh key.
		return old <= ns && e.tat.CompareAndSwap(old, deadTAT)
	})
	return removed
}

// windowAt returns the index of the window of length w holding now (windows are aligned to the
// Unix epoch) and how far into that window now is.
func windowAt(now time.Time, w time.Duration) (idx int64, elapsed time.Duration) {
	ns := now.UnixNano()
	idx = ns / int64(w)
	if ns%int64(w) < 0 {
		idx--
	}
	return idx, time.Duration(ns - idx*int64(w))
}

// fixedEntry packs a fixed window's state into one word so that a check is a single CAS:
// the high 32 bits hold the window index (modulo 2^32), the low 32 bits the count.
// Aliasing of window indexes 2^32 windows apart is harmless because a key idle for a whole
// window is evicted long before.
type fixedEntry struct{ state atomic.Uint64 }

// deadCount marks an evicted fixedEntry; real counts stay below MaxCount+1.
const deadCount = math.MaxUint32

// localFixed is limit-count with fixed windows, in memory. Its keys live in the Registry's
// shared store.
type localFixed struct {
	spec Spec
	st   *localStores
}

func newLocalFixed(s Spec, st *localStores) *localFixed {
	return &localFixed{spec: s, st: st}
}

// Allow implements Limiter. It never fails.
func (l *localFixed) Allow(_ context.Context, key string) (Decision, error) {
	count, window := l.spec.Count, l.spec.Window
	idx, elapsed := windowAt(l.st.now(), window)
	w := uint64(uint32(idx))
	reset := window - elapsed
	for {
		e := l.st.fixed.get(l, key)
		for {
			old := e.state.Load()
			c := uint32(old)
			if c == deadCount {
				break // evicted under us: look the key up again
			}
			if old>>32 != w {
				c = 0
			}
			if int(c) >= count {
				return Decision{Allowed: false, Limit: count, Remaining: 0, Reset: reset}, nil
			}
			if e.state.CompareAndSwap(old, w<<32|uint64(c+1)) {
				return Decision{Allowed: true, Limit: count, Remaining: count - int(c) - 1, Reset: reset}, nil
			}
		}
	}
}

func (l *localFixed) config() Spec { return l.spec }
func (l *localFixed) close()       {}

// slidingEntry is a sliding-window counter: the counts of the current window and of the one
// before it. Three words don't fit one CAS, so each key has its own mutex; the shard lock is
// not held while it is taken.
type slidingEntry struct {
	mu        sync.Mutex
	win       int64 // index of the window cur counts
	prev, cur int64
	dead      bool
}

// localSliding is limit-count with the sliding-window counter, in memory. Its keys live in
// the Registry's shared store.
type localSliding struct {
	spec Spec
	st   *localStores
}

func newLocalSliding(s Spec, st *localStores) *localSliding {
	return &localSliding{spec: s, st: st}
}

// Allow implements Limiter. It never fails.
func (l *localSliding) Allow(_ context.Context, key string) (Decision, error) {
	idx, elapsed := windowAt(l.st.now(), l.spec.Window)
	for {
		e := l.st.sliding.get(l, key)
		e.mu.Lock()
		if e.dead {
			e.mu.Unlock()
			continue
		}
		switch e.win {
		case idx:
		case idx - 1:
			e.prev, e.cur = e.cur, 0
		default:
			e.prev, e.cur = 0, 0
		}
		e.win = idx
		d := slidingDecision(l.spec.Count, e.prev, e.cur, elapsed, l.spec.Window)
		if d.Allowed {
			e.cur++
		}
		e.mu.Unlock()
		return d, nil
	}
}

func (l *localSliding) config() Spec { return l.spec }
func (l *localSliding) close()       {}

// slidingDecision decides one request of a sliding-window counter given the previous and
// current windows' counts before it and how far into the current window it comes: the
// estimate prev*(1-elapsed/window) + cur must leave room for one more.
func slidingDecision(limit int, prev, cur int64, elapsed, window time.Duration) Decision {
	est := float64(prev)*(1-float64(elapsed)/float64(window)) + float64(cur)
	return slidingDescribe(limit, prev, cur, elapsed, window, est+1 <= float64(limit))
}

// slidingDescribe fills in a sliding-window decision already taken (by Redis, or by
// slidingDecision). Reset is the time until the current window ends while there is room, and
// the time until the estimate leaves room for one request (if no other arrives) once there is
// none.
func slidingDescribe(limit int, prev, cur int64, elapsed, window time.Duration, allowed bool) Decision {
	if !allowed {
		return Decision{Allowed: false, Limit: limit, Remaining: 0, Reset: slidingRetry(limit, prev, cur, elapsed, window)}
	}
	est := float64(prev)*(1-float64(elapsed)/float64(window)) + float64(cur)
	d := Decision{Allowed: true, Limit: limit, Remaining: int(math.Floor(float64(limit) - est - 1)), Reset: window - elapsed}
	if d.Remaining <= 0 {
		d.Remaining = 0
		d.Reset = slidingRetry(limit, prev, cur+1, elapsed, window)
	}
	return d
}

// slidingRetry is how long after elapsed the estimate first leaves room for one request.
func slidingRetry(limit int, prev, cur int64, elapsed, window time.Duration) time.Duration {
	room := float64(limit - 1)
	w := float64(window)
	if float64(cur) <= room {
		// Within this window, once enough of the previous one has slid out.
		if prev == 0 {
			return 0
		}
		at := window - time.Duration(math.Floor(w*(room-float64(cur))/float64(prev)))
		return max(0, at-elapsed)
	}
	// Only in the next window, once enough of this one has slid out.
	at := window - time.Duration(math.Floor(w*room/float64(cur)))
	return window - elapsed + at
}

// gcra holds limit-req's parameters in units of unit (nanoseconds locally, microseconds on
// Redis): the emission interval T between two requests at the sustained rate and the burst
// tolerance tau = Burst*T. A key's state is its theoretical arrival time (TAT); a request at
// now is admitted when max(TAT, now)+T-now <= tau+T, so Burst+1 requests pass at once and then
// one every T.
type gcra struct {
	limit     int
	interval  int64
	tolerance int64
	unit      time.Duration
}

func newGCRA(s Spec, unit time.Duration) gcra {
	t := float64(time.Second/unit) / s.Rate
	return gcra{limit: int(s.Burst) + 1, interval: max(1, int64(t)), tolerance: int64(s.Burst * t), unit: unit}
}

// decide returns the decision for a request at now given the key's stored TAT, and the TAT
// to store when it is admitted.
func (g gcra) decide(now, tat int64) (Decision, int64) {
	tat = max(tat, now)
	next := tat + g.interval
	if next-now > g.tolerance+g.interval {
		return g.rejected(now, tat), 0
	}
	return g.admitted(now, next), next
}

// admitted describes an admitted request at now that moved the TAT to next.
func (g gcra) admitted(now, next int64) Decision {
	return Decision{
		Allowed:   true,
		Limit:     g.limit,
		Remaining: max(0, int((g.tolerance+g.interval-(next-now))/g.interval)),
		Reset:     time.Duration(max(0, next-g.tolerance-now)) * g.unit,
	}
}

// rejected describes a rejected request at now while the TAT is tat.
func (g gcra) rejected(now, tat int64) Decision {
	return Decision{Allowed: false, Limit: g.limit, Remaining: 0, Reset: time.Duration(max(0, tat-g.tolerance-now)) * g.unit}
}

// reqEntry is one key's TAT in Unix nanoseconds; deadTAT marks it evicted.
type reqEntry struct{ tat atomic.Int64 }

const deadTAT = math.MinInt64

// localReq is limit-req (GCRA, nodelay) in memory. Decision.Limit is Burst+1, the most
// requests admitted at once. Its keys live in the Registry's shared store.
type localReq struct {
	spec Spec
	g    gcra
	st   *localStores
}

func newLocalReq(s Spec, st *localStores) *localReq {
	return &localReq{spec: s, g: newGCRA(s, time.Nanosecond), st: st}
}

// Allow implements Limiter. It never fails.
func (l *localReq) Allow(_ context.Context, key string) (Decision, error) {
	now := l.st.now().UnixNano()
	for {
		e := l.st.req.get(l, key)
		for {
			old := e.tat.Load()
			if old == deadTAT {
				break
			}
			d, next := l.g.decide(now, old)
			if !d.Allowed || e.tat.CompareAndSwap(old, next) {
				return d, nil
			}
		}
	}
}

func (l *localReq) config() Spec { return l.spec }
func (l *localReq) close()       {}
