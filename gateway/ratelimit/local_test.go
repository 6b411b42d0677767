package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// t0 starts an hour, so it starts every window that divides an hour.
var t0 = time.Unix(1_699_999_200, 0)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{now: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// step is one request of a scenario: advance the clock, take one unit for key, expect want.
type step struct {
	advance time.Duration
	key     string
	want    Decision
}

type scenario struct {
	name  string
	spec  Spec
	steps []step
}

// scenarios hold for every store: the Redis tests replay them against redis-server.
func scenarios() []scenario {
	ok := func(limit, remaining int, reset time.Duration) Decision {
		return Decision{Allowed: true, Limit: limit, Remaining: remaining, Reset: reset}
	}
	no := func(limit int, reset time.Duration) Decision {
		return Decision{Allowed: false, Limit: limit, Remaining: 0, Reset: reset}
	}
	return []scenario{
		{
			name: "fixed window counts, rejects, then starts a new window",
			spec: Spec{Kind: KindCount, Count: 3, Window: 10 * time.Second},
			steps: []step{
				{advance: time.Second, key: "a", want: ok(3, 2, 9*time.Second)},
				{key: "a", want: ok(3, 1, 9*time.Second)},
				{advance: 4 * time.Second, key: "a", want: ok(3, 0, 5*time.Second)},
				{key: "a", want: no(3, 5*time.Second)},
				{key: "b", want: ok(3, 2, 5*time.Second)}, // keys are independent
				{advance: 4500 * time.Millisecond, key: "a", want: no(3, 500*time.Millisecond)},
				{advance: 500 * time.Millisecond, key: "a", want: ok(3, 2, 10*time.Second)},
			},
		},
		{
			name: "fixed window of one",
			spec: Spec{Kind: KindCount, Count: 1, Window: time.Minute},
			steps: []step{
				{key: "", want: ok(1, 0, time.Minute)},
				{advance: 59 * time.Second, key: "", want: no(1, time.Second)},
				{advance: time.Second, key: "", want: ok(1, 0, time.Minute)},
			},
		},
		{
			name: "sliding window weighs the previous window",
			spec: Spec{Kind: KindCount, Count: 10, Window: 10 * time.Second, Sliding: true},
			steps: append(repeat(10, step{key: "a", want: Decision{Allowed: true, Limit: 10}}),
				// 25% into the next window: estimate 10*0.75 = 7.5, so two more fit.
				step{advance: 12500 * time.Millisecond, key: "a", want: ok(10, 1, 7500*time.Millisecond)},
				// Estimate 8.5 leaves no whole unit: Reset tells when 9 (room for one) is reached,
				// at 30% into the window.
				step{key: "a", want: ok(10, 0, 500*time.Millisecond)},
				step{key: "a", want: no(10, 500*time.Millisecond)},
				step{advance: 500 * time.Millisecond, key: "a", want: ok(10, 0, time.Second)},
			),
		},
		{
			name: "sliding window full in the current window waits into the next",
			spec: Spec{Kind: KindCount, Count: 2, Window: 10 * time.Second, Sliding: true},
			steps: []step{
				{key: "a", want: ok(2, 1, 10*time.Second)},
				// Estimate 2 needs half of this window to slide out of the next one.
				{key: "a", want: ok(2, 0, 15*time.Second)},
				{key: "a", want: no(2, 15*time.Second)},
				// Estimate 1 at half the next window; after this one, 2 is reached when the
				// previous window has slid out entirely.
				{advance: 15 * time.Second, key: "a", want: ok(2, 0, 5*time.Second)},
				// Two windows later nothing of the past counts.
				{advance: 20 * time.Second, key: "a", want: ok(2, 1, 5*time.Second)},
			},
		},
		{
			name: "limit-req admits burst+1 at once, then one per interval",
			spec: Spec{Kind: KindReq, Rate: 1, Burst: 2},
			steps: []step{
				{key: "a", want: ok(3, 2, 0)},
				{key: "a", want: ok(3, 1, 0)},
				{key: "a", want: ok(3, 0, time.Second)},
				{key: "a", want: no(3, time.Second)},
				{key: "b", want: ok(3, 2, 0)},
				{advance: time.Second, key: "a", want: ok(3, 0, time.Second)},
				{advance: 500 * time.Millisecond, key: "a", want: no(3, 500*time.Millisecond)},
				{advance: 10 * time.Second, key: "a", want: ok(3, 2, 0)},
			},
		},
		{
			name: "limit-req without burst spaces requests by the rate",
			spec: Spec{Kind: KindReq, Rate: 4},
			steps: []step{
				{key: "", want: ok(1, 0, 250*time.Millisecond)},
				{advance: 100 * time.Millisecond, key: "", want: no(1, 150*time.Millisecond)},
				{advance: 150 * time.Millisecond, key: "", want: ok(1, 0, 250*time.Millisecond)},
			},
		},
	}
}

// repeat returns n copies of s; a zero Reset and Remaining in want mean "don't check".
func repeat(n int, s step) []step {
	out := make([]step, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func runScenario(t *testing.T, sc scenario, opts RegistryOptions) {
	t.Helper()
	clk := newClock(t0)
	opts.Now = clk.Now
	opts.SweepInterval = -1
	r := NewRegistry(opts)
	defer r.Close()
	l := r.Limiter("test:"+t.Name(), sc.spec)
	for i, s := range sc.steps {
		clk.Add(s.advance)
		got, err := l.Allow(context.Background(), s.key)
		if err != nil {
			t.Fatalf("step %d: Allow(%q): %v", i, s.key, err)
		}
		want := s.want
		if want.Reset == 0 && want.Remaining == 0 && want.Allowed {
			want.Reset, want.Remaining = got.Reset, got.Remaining
		}
		if got != want {
			t.Fatalf("step %d: Allow(%q) at +%s: got %+v, want %+v", i, s.key, clk.Now().Sub(t0), got, want)
		}
	}
}

func TestLocalScenarios(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) { runScenario(t, sc, RegistryOptions{}) })
	}
}

func TestSlidingDecision(t *testing.T) {
	const w = 10 * time.Second
	tests := []struct {
		name          string
		limit         int
		prev, cur     int64
		elapsed       time.Duration
		wantAllowed   bool
		wantRemaining int
	}{
		{name: "empty", limit: 5, wantAllowed: true, wantRemaining: 4},
		{name: "previous window fully weighted at its end", limit: 5, prev: 5, wantAllowed: false},
		{name: "half the previous window slid out", limit: 5, prev: 4, elapsed: w / 2, wantAllowed: true, wantRemaining: 2},
		{name: "estimate exactly at the limit after this one", limit: 5, prev: 4, cur: 2, elapsed: w / 2, wantAllowed: true, wantRemaining: 0},
		{name: "estimate over", limit: 5, prev: 4, cur: 3, elapsed: w / 2, wantAllowed: false},
		{name: "current window alone full", limit: 5, cur: 5, elapsed: w - 1, wantAllowed: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := slidingDecision(tt.limit, tt.prev, tt.cur, tt.elapsed, w)
			if got.Allowed != tt.wantAllowed || got.Remaining != tt.wantRemaining {
				t.Fatalf("got allowed=%v remaining=%d, want allowed=%v remaining=%d", got.Allowed, got.Remaining, tt.wantAllowed, tt.wantRemaining)
			}
			if !got.Allowed {
				// Reset must be exactly when one more fits: not before, and by then yes.
				at := tt.elapsed + got.Reset
				prev, cur := tt.prev, tt.cur
				if at >= w {
					prev, cur, at = cur, 0, at-w
				}
				if d := slidingDecision(tt.limit, prev, cur, at, w); !d.Allowed {
					t.Fatalf("after Reset %s: got rejected, want admitted", got.Reset)
				}
				before := at - time.Millisecond
				if before >= 0 {
					if d := slidingDecision(tt.limit, prev, cur, before, w); d.Allowed {
						t.Fatalf("1ms before Reset %s: got admitted, want rejected", got.Reset)
					}
				}
			}
		})
	}
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want []string // substrings of the error; none means valid
	}{
		{name: "count", spec: Spec{Kind: KindCount, Count: 1, Window: time.Second}},
		{name: "sliding redis", spec: Spec{Kind: KindCount, Count: 1, Window: time.Second, Sliding: true, Redis: true}},
		{name: "req", spec: Spec{Kind: KindReq, Rate: 0.5}},
		{name: "sync", spec: Spec{Kind: KindCount, Count: 1, Window: time.Second, Redis: true, SyncInterval: time.Second}},
		{name: "unknown kind", spec: Spec{Kind: "leaky"}, want: []string{`unknown limit kind "leaky"`}},
		{name: "all count problems", spec: Spec{Kind: KindCount, Window: time.Microsecond, SyncInterval: time.Second},
			want: []string{"count 0 out of range", "window 1µs shorter", "sync interval needs the redis policy"}},
		{name: "req problems", spec: Spec{Kind: KindReq, Rate: 0, Burst: -1},
			want: []string{"rate 0 out of range", "burst -1 out of range"}},
		{name: "req draining too long", spec: Spec{Kind: KindReq, Rate: 1e-6, Burst: 100}, want: []string{"to drain"}},
		{name: "sync sliding", spec: Spec{Kind: KindCount, Count: 1, Window: time.Second, Sliding: true, Redis: true, SyncInterval: time.Second},
			want: []string{"fixed windows only"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got nil, want an error containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestEviction(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		// keptAfter: the key survives a sweep this long after its last use; goneAfter: it is evicted.
		keptAfter, goneAfter time.Duration
	}{
		{name: "fixed", spec: Spec{Kind: KindCount, Count: 5, Window: 10 * time.Second}, keptAfter: 9 * time.Second, goneAfter: 10 * time.Second},
		// The previous window still counts during the next one.
		{name: "sliding", spec: Spec{Kind: KindCount, Count: 5, Window: 10 * time.Second, Sliding: true}, keptAfter: 19 * time.Second, goneAfter: 20 * time.Second},
		// Three requests at rate 1 with burst 2 drain after 3s.
		{name: "req", spec: Spec{Kind: KindReq, Rate: 1, Burst: 2}, keptAfter: 2 * time.Second, goneAfter: 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(t0)
			r := NewRegistry(RegistryOptions{Now: clk.Now, SweepInterval: -1})
			defer r.Close()
			l := r.Limiter("consumer:x", tt.spec).(limiter)
			for i := range 100 {
				for range 3 {
					if _, err := l.Allow(context.Background(), fmt.Sprintf("k%d", i)); err != nil {
						t.Fatal(err)
					}
				}
			}
			if got := keyCount(l); got != 100 {
				t.Fatalf("keys before sweep: got %d, want 100", got)
			}
			clk.Add(tt.keptAfter)
			if got := r.sweep(); got != 0 {
				t.Fatalf("sweep after %s: removed %d, want 0", tt.keptAfter, got)
			}
			clk.Add(tt.goneAfter - tt.keptAfter)
			if got := r.sweep(); got != 100 {
				t.Fatalf("sweep after %s: removed %d, want 100", tt.goneAfter, got)
			}
			if got := keyCount(l); got != 0 {
				t.Fatalf("keys after sweep: got %d, want 0", got)
			}
			// Eviction never changes a decision: an evicted key answers like a new one.
			got, err := l.Allow(context.Background(), "k0")
			if err != nil {
				t.Fatal(err)
			}
			want, _ := l.Allow(context.Background(), "never-seen")
			if got != want {
				t.Fatalf("evicted key: got %+v, want %+v (a new key's)", got, want)
			}
		})
	}
}

func keyCount(l limiter) int {
	switch l := l.(type) {
	case *localFixed:
		return l.st.fixed.len(l)
	case *localSliding:
		return l.st.sliding.len(l)
	case *localReq:
		return l.st.req.len(l)
	}
	panic(fmt.Sprintf("no keys in %T", l))
}

func TestJanitorEvicts(t *testing.T) {
	clk := newClock(t0)
	r := NewRegistry(RegistryOptions{Now: clk.Now, SweepInterval: time.Millisecond})
	defer r.Close()
	l := r.Limiter("route:x", Spec{Kind: KindCount, Count: 5, Window: time.Second})
	if _, err := l.Allow(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	// Readiness poll: the janitor runs on its own ticker.
	deadline := time.Now().Add(10 * time.Second)
	for keyCount(l.(limiter)) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("janitor did not evict the idle key")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRegistryLifecycle(t *testing.T) {
	spec := Spec{Kind: KindCount, Count: 2, Window: time.Minute}
	clk := newClock(t0)
	r := NewRegistry(RegistryOptions{Now: clk.Now, SweepInterval: -1})
	defer r.Close()
	ctx := context.Background()

	remaining := func(l Limiter) int {
		t.Helper()
		d, err := l.Allow(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		return d.Remaining
	}

	a := r.Limiter("consumer:a", spec)
	if got := remaining(a); got != 1 {
		t.Fatalf("first request: remaining %d, want 1", got)
	}
	t.Run("same id and spec keeps the counters", func(t *testing.T) {
		again := r.Limiter("consumer:a", spec)
		if again != a {
			t.Fatal("got a new limiter, want the same")
		}
		if got := remaining(again); got != 0 {
			t.Fatalf("remaining %d, want 0", got)
		}
	})
	t.Run("another id has its own counters", func(t *testing.T) {
		if got := remaining(r.Limiter("consumer:b", spec)); got != 1 {
			t.Fatalf("remaining %d, want 1", got)
		}
	})
	t.Run("changed spec starts afresh", func(t *testing.T) {
		changed := spec
		changed.Count = 3
		if got := remaining(r.Limiter("consumer:a", changed)); got != 2 {
			t.Fatalf("remaining %d, want 2", got)
		}
	})
	t.Run("retain drops the others", func(t *testing.T) {
		b := r.Limiter("consumer:b", spec)
		r.Retain(map[string]bool{"consumer:a": true})
		if r.Limiter("consumer:b", spec) == b {
			t.Fatal("got the dropped limiter back, want a fresh one")
		}
		changed := spec
		changed.Count = 3
		if got := remaining(r.Limiter("consumer:a", changed)); got != 1 {
			t.Fatalf("kept limiter: remaining %d, want 1", got)
		}
	})
}

// TestDroppedLimiterKeys follows the keys of a limiter that Retain dropped: a snapshot still
// holding it keeps counting on them, and once they are idle the janitor evicts them.
func TestDroppedLimiterKeys(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
	}{
		{name: "fixed", spec: Spec{Kind: KindCount, Count: 3, Window: time.Minute}},
		{name: "sliding", spec: Spec{Kind: KindCount, Count: 3, Window: time.Minute, Sliding: true}},
		{name: "req", spec: Spec{Kind: KindReq, Rate: 1, Burst: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(t0)
			r := NewRegistry(RegistryOptions{Now: clk.Now, SweepInterval: -1})
			defer r.Close()
			ctx := context.Background()
			l := r.Limiter("consumer:gone", tt.spec).(limiter)
			for range 2 {
				if _, err := l.Allow(ctx, "k"); err != nil {
					t.Fatal(err)
				}
			}
			r.Retain(nil)
			if got := r.sweep(); got != 0 {
				t.Fatalf("sweep while busy: removed %d, want 0", got)
			}
			got, err := l.Allow(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if want := (Decision{Allowed: true, Limit: 3, Remaining: 0, Reset: got.Reset}); got != want {
				t.Fatalf("dropped limiter's third request: got %+v, want %+v", got, want)
			}
			clk.Add(time.Hour)
			if got := r.sweep(); got != 1 {
				t.Fatalf("sweep once idle: removed %d, want 1", got)
			}
			if got := keyCount(l); got != 0 {
				t.Fatalf("keys left: got %d, want 0", got)
			}
		})
	}
}

func TestRegistryFailingLimiters(t *testing.T) {
	r := NewRegistry(RegistryOptions{SweepInterval: -1})
	defer r.Close()
	tests := []struct {
		name            string
		spec            Spec
		wantUnavailable bool
	}{
		{name: "invalid spec", spec: Spec{Kind: KindCount}, wantUnavailable: false},
		{name: "redis without redis", spec: Spec{Kind: KindCount, Count: 1, Window: time.Second, Redis: true}, wantUnavailable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.Limiter("route:"+tt.name, tt.spec).Allow(context.Background(), "")
			if err == nil {
				t.Fatal("got nil error, want one")
			}
			if got := errors.Is(err, ErrUnavailable); got != tt.wantUnavailable {
				t.Fatalf("errors.Is(%v, ErrUnavailable): got %v, want %v", err, got, tt.wantUnavailable)
			}
		})
	}
	if err := r.Healthy(context.Background()); err != nil {
		t.Fatalf("Healthy without redis: got %v, want nil", err)
	}
}

// TestLocalConcurrentExact checks that racing goroutines admit exactly the limit.
func TestLocalConcurrentExact(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want int
	}{
		{name: "fixed", spec: Spec{Kind: KindCount, Count: 100, Window: time.Minute}, want: 100},
		{name: "sliding", spec: Spec{Kind: KindCount, Count: 100, Window: time.Minute, Sliding: true}, want: 100},
		{name: "req", spec: Spec{Kind: KindReq, Rate: 1, Burst: 99}, want: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(t0)
			r := NewRegistry(RegistryOptions{Now: clk.Now, SweepInterval: -1})
			defer r.Close()
			l := r.Limiter("route:x", tt.spec)
			var admitted atomic.Int64
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for range 50 {
						d, err := l.Allow(context.Background(), "")
						if err != nil {
							t.Error(err)
							return
						}
						if d.Allowed {
							admitted.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if got := admitted.Load(); got != int64(tt.want) {
				t.Fatalf("admitted %d, want %d", got, tt.want)
			}
		})
	}
}

// TestSweepRacesAllow exercises the dead-entry protocol: sweeps that evict every key race
// requests; afterwards each key must count from a consistent state (never above the limit).
func TestSweepRacesAllow(t *testing.T) {
	clk := newClock(t0)
	r := NewRegistry(RegistryOptions{Now: clk.Now, SweepInterval: -1})
	defer r.Close()
	for _, spec := range []Spec{
		{Kind: KindCount, Count: 1000, Window: time.Minute},
		{Kind: KindCount, Count: 1000, Window: time.Minute, Sliding: true},
		{Kind: KindReq, Rate: 1, Burst: 999},
	} {
		l := r.Limiter(fmt.Sprintf("route:%+v", spec), spec).(limiter)
		var wg sync.WaitGroup
		stop := make(chan struct{})
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					r.sweepAt(t0.Add(time.Hour)) // pretends every key is idle
				}
			}
		})
		var admitted atomic.Int64
		var workers sync.WaitGroup
		for range 4 {
			workers.Go(func() {
				for i := range 200 {
					if d, _ := l.Allow(context.Background(), fmt.Sprint(i%3)); d.Allowed {
						admitted.Add(1)
					}
				}
			})
		}
		workers.Wait()
		close(stop)
		wg.Wait()
		if got := admitted.Load(); got != 800 {
			t.Fatalf("%s: admitted %d, want all 800 (limit 1000 per key)", spec.Kind, got)
		}
	}
}

func TestLocalAllowDoesNotAllocate(t *testing.T) {
	for _, spec := range []Spec{
		{Kind: KindCount, Count: 1 << 30, Window: time.Minute},
		{Kind: KindCount, Count: 1 << 30, Window: time.Minute, Sliding: true},
		{Kind: KindReq, Rate: 1e6, Burst: 1e6},
	} {
		r := NewRegistry(RegistryOptions{SweepInterval: -1})
		l := r.Limiter("route:x", spec)
		ctx := context.Background()
		key := strings.Repeat("k", 20)
		if _, err := l.Allow(ctx, key); err != nil {
			t.Fatal(err)
		}
		if got := testing.AllocsPerRun(100, func() { _, _ = l.Allow(ctx, key) }); got != 0 {
			t.Errorf("%+v: allocations per Allow of an existing key: got %v, want 0", spec, got)
		}
		r.Close()
	}
}

func BenchmarkLocalCount(b *testing.B) {
	r := NewRegistry(RegistryOptions{SweepInterval: -1})
	defer r.Close()
	l := r.Limiter("route:bench", Spec{Kind: KindCount, Count: MaxCount, Window: time.Hour})
	keys := benchKeys(1024)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_, _ = l.Allow(context.Background(), keys[i&1023])
			i++
		}
	})
}

func BenchmarkLocalReq(b *testing.B) {
	r := NewRegistry(RegistryOptions{SweepInterval: -1})
	defer r.Close()
	l := r.Limiter("route:bench", Spec{Kind: KindReq, Rate: 1e6, Burst: 1e6})
	keys := benchKeys(1024)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_, _ = l.Allow(context.Background(), keys[i&1023])
			i++
		}
	})
}

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("consumer-%d", i)
	}
	return keys
}
