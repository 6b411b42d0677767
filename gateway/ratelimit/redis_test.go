package ratelimit

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis/portcullis/internal/redistest"
)

func newClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func redisSpec(s Spec) Spec {
	s.Redis = true
	return s
}

func TestRedisScenarios(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newClient(t, srv.Addr)
	for _, sc := range scenarios() {
		sc.spec = redisSpec(sc.spec)
		t.Run(sc.name, func(t *testing.T) { runScenario(t, sc, RegistryOptions{Redis: rdb}) })
	}
}

// TestRedisSharedExact runs racing goroutines on several registries (as several gateway
// replicas would be) sharing one Redis: exactly the limit gets through.
func TestRedisSharedExact(t *testing.T) {
	srv := redistest.Start(t)
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
			clk := newClock(t0.Add(30 * time.Second))
			var admitted atomic.Int64
			var wg sync.WaitGroup
			for range 4 {
				r := NewRegistry(RegistryOptions{Redis: newClient(t, srv.Addr), Now: clk.Now, RedisTimeout: 5 * time.Second, SweepInterval: -1})
				defer r.Close()
				l := r.Limiter("group:bots", redisSpec(tt.spec))
				for range 4 {
					wg.Go(func() {
						for range 20 {
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
			}
			wg.Wait()
			if got := admitted.Load(); got != int64(tt.want) {
				t.Fatalf("admitted %d of 320, want %d", got, tt.want)
			}
		})
	}
}

// TestRedisCountersSurvive checks that a second registry (another replica, or this one after
// a restart) continues the counters of an unchanged spec, and that a changed spec starts afresh.
func TestRedisCountersSurvive(t *testing.T) {
	srv := redistest.Start(t)
	clk := newClock(t0)
	spec := redisSpec(Spec{Kind: KindCount, Count: 3, Window: time.Minute})
	allow := func(spec Spec) Decision {
		t.Helper()
		r := NewRegistry(RegistryOptions{Redis: newClient(t, srv.Addr), Now: clk.Now, SweepInterval: -1})
		defer r.Close()
		d, err := r.Limiter("consumer:FetchBot", spec).Allow(context.Background(), "FetchBot")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	allow(spec)
	if got := allow(spec).Remaining; got != 1 {
		t.Fatalf("same spec on another registry: remaining %d, want 1", got)
	}
	changed := spec
	changed.Count = 4
	if got := allow(changed).Remaining; got != 3 {
		t.Fatalf("changed spec: remaining %d, want 3", got)
	}
}

func TestRedisKeysShareSlot(t *testing.T) {
	tests := []struct{ id, key string }{
		{id: "route:petstore", key: ""},
		{id: "consumer:a}b", key: "x}y{z"},
		{id: "}", key: "}"},
		{id: "route:%7D", key: "%"},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.id+"/"+tt.key, func(t *testing.T) {
			l := newRedisLimiter(&Registry{}, tt.id, redisSpec(Spec{Kind: KindCount, Count: 1, Window: time.Second, Sliding: true}))
			cur, prev := l.redisKey(tt.key, "10"), l.redisKey(tt.key, "9")
			if !strings.HasPrefix(cur, KeyPrefix) {
				t.Fatalf("key %q: want prefix %q", cur, KeyPrefix)
			}
			tc, tp := hashTag(cur), hashTag(prev)
			if tc == "" || tc != tp {
				t.Fatalf("hash tags of %q and %q: got %q and %q, want one non-empty tag", cur, prev, tc, tp)
			}
			if other, ok := seen[tc]; ok {
				t.Fatalf("tag %q of %s/%s also names %s", tc, tt.id, tt.key, other)
			}
			seen[tc] = tt.id + "/" + tt.key
		})
	}
}

// hashTag is Redis Cluster's rule: the text between the first '{' and the next '}', if any.
func hashTag(key string) string {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return ""
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return ""
	}
	return key[i+1 : i+1+j]
}

// TestRedisOutage stops Redis: checks fail with ErrUnavailable, the breaker opens after the
// threshold and then refuses without calling Redis; after a restart and the cool-down a
// probe closes it again.
func TestRedisOutage(t *testing.T) {
	srv := redistest.Start(t)
	clk := newClock(t0)
	var calls atomic.Int64
	var breakerOpen atomic.Bool
	r := NewRegistry(RegistryOptions{
		Redis: newClient(t, srv.Addr), Now: clk.Now, SweepInterval: -1,
		BreakerThreshold: 3, BreakerCooldown: 2 * time.Second,
		OnRedisCall:     func(string, time.Duration, error) { calls.Add(1) },
		OnBreakerChange: func(open bool) { breakerOpen.Store(open) },
	})
	defer r.Close()
	l := r.Limiter("route:x", redisSpec(Spec{Kind: KindCount, Count: 100, Window: time.Minute}))
	ctx := context.Background()
	if _, err := l.Allow(ctx, ""); err != nil {
		t.Fatalf("before the outage: %v", err)
	}

	srv.Stop()
	for i := range 3 {
		_, err := l.Allow(ctx, "")
		if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("failure %d: got %v, want ErrUnavailable from a Redis call", i, err)
		}
	}
	if !breakerOpen.Load() {
		t.Fatal("breaker after threshold failures: got closed, want open")
	}
	before := calls.Load()
	for range 100 {
		_, err := l.Allow(ctx, "")
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("while open: got %v, want ErrUnavailable and ErrCircuitOpen", err)
		}
	}
	if err := r.Healthy(ctx); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("Healthy while open: got %v, want ErrCircuitOpen", err)
	}
	if got := calls.Load() - before; got != 0 {
		t.Fatalf("Redis calls while open: got %d, want 0", got)
	}

	// Cool-down over, Redis still down: one probe, which fails and reopens.
	clk.Add(2 * time.Second)
	if _, err := l.Allow(ctx, ""); errors.Is(err, ErrCircuitOpen) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("probe: got %v, want a failed Redis call", err)
	}
	if _, err := l.Allow(ctx, ""); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("after failed probe: got %v, want ErrCircuitOpen", err)
	}
	if got := calls.Load() - before; got != 1 {
		t.Fatalf("Redis calls around the probe: got %d, want 1", got)
	}

	srv.Restart()
	clk.Add(2 * time.Second)
	d, err := l.Allow(ctx, "")
	if err != nil {
		t.Fatalf("after restart: got %v, want nil", err)
	}
	// The restarted Redis is empty: the count starts over.
	if d.Remaining != 99 {
		t.Fatalf("after restart: remaining %d, want 99", d.Remaining)
	}
	if breakerOpen.Load() {
		t.Fatal("breaker after a successful probe: got open, want closed")
	}
	if err := r.Healthy(ctx); err != nil {
		t.Fatalf("Healthy after recovery: got %v, want nil", err)
	}
}

// TestRedisHealthyProbes checks that /readyz's Healthy closes the breaker once Redis is back,
// even when no request comes.
func TestRedisHealthyProbes(t *testing.T) {
	srv := redistest.Start(t)
	clk := newClock(t0)
	r := NewRegistry(RegistryOptions{Redis: newClient(t, srv.Addr), Now: clk.Now, SweepInterval: -1, BreakerThreshold: 1})
	defer r.Close()
	ctx := context.Background()
	if err := r.Healthy(ctx); err != nil {
		t.Fatalf("Healthy: got %v, want nil", err)
	}
	srv.Stop()
	if err := r.Healthy(ctx); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("Healthy with Redis down: got %v, want a failed PING", err)
	}
	if err := r.Healthy(ctx); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("Healthy with the breaker open: got %v, want ErrCircuitOpen", err)
	}
	srv.Restart()
	clk.Add(time.Second)
	if err := r.Healthy(ctx); err != nil {
		t.Fatalf("Healthy after restart and cool-down: got %v, want nil", err)
	}
}

// TestRedisHungTimesOut freezes Redis: a check must end by the registry's timeout (the error
// carries context.DeadlineExceeded), not by the client's much longer read timeout.
func TestRedisHungTimesOut(t *testing.T) {
	srv := redistest.Start(t)
	r := NewRegistry(RegistryOptions{Redis: newClient(t, srv.Addr), RedisTimeout: 50 * time.Millisecond, SweepInterval: -1})
	defer r.Close()
	ctx := context.Background()
	l := r.Limiter("route:x", redisSpec(Spec{Kind: KindReq, Rate: 100, Burst: 100}))
	if _, err := l.Allow(ctx, ""); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	defer srv.Resume()
	_, err := l.Allow(ctx, "")
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung Redis: got %v, want ErrUnavailable with context.DeadlineExceeded", err)
	}
}

// TestRedisCallerCancel checks that a caller that gives up gets its own error, which does not
// count against Redis.
func TestRedisCallerCancel(t *testing.T) {
	srv := redistest.Start(t)
	r := NewRegistry(RegistryOptions{Redis: newClient(t, srv.Addr), SweepInterval: -1, BreakerThreshold: 1})
	defer r.Close()
	l := r.Limiter("route:x", redisSpec(Spec{Kind: KindCount, Count: 10, Window: time.Minute}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := l.Allow(ctx, "")
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("canceled caller: got %v, want context.Canceled without ErrUnavailable", err)
	}
	if _, err := l.Allow(context.Background(), ""); err != nil {
		t.Fatalf("next caller: got %v, want nil (breaker untouched)", err)
	}
}

func BenchmarkRedisCount(b *testing.B) {
	srv := redistest.Start(b)
	r := NewRegistry(RegistryOptions{Redis: newClient(b, srv.Addr), RedisTimeout: time.Second, SweepInterval: -1})
	defer r.Close()
	l := r.Limiter("route:bench", redisSpec(Spec{Kind: KindCount, Count: MaxCount, Window: time.Hour}))
	keys := benchKeys(1024)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := l.Allow(context.Background(), keys[i&1023]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// TestRedisScriptsReloaded: after Redis forgets its scripts (a restart, SCRIPT FLUSH), racing
// checks, batched into pipelines of EVALSHA, still run, and exactly the limit gets through.
func TestRedisScriptsReloaded(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newClient(t, srv.Addr)
	r := NewRegistry(RegistryOptions{Redis: rdb, RedisTimeout: 5 * time.Second, SweepInterval: -1})
	defer r.Close()
	l := r.Limiter("group:bots", redisSpec(Spec{Kind: KindCount, Count: 50, Window: time.Hour}))
	if _, err := l.Allow(context.Background(), "warm"); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	var admitted, failed atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				d, err := l.Allow(context.Background(), "k")
				switch {
				case err != nil:
					failed.Add(1)
				case d.Allowed:
					admitted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := failed.Load(); got != 0 {
		t.Errorf("got %d failed checks, want 0", got)
	}
	if got := admitted.Load(); got != 50 {
		t.Errorf("got %d admitted of 80, want 50", got)
	}
}

func TestRedisClosedRegistry(t *testing.T) {
	srv := redistest.Start(t)
	r := NewRegistry(RegistryOptions{Redis: newClient(t, srv.Addr), SweepInterval: -1})
	l := r.Limiter("route:r", redisSpec(Spec{Kind: KindCount, Count: 5, Window: time.Minute}))
	r.Close()
	if _, err := l.Allow(context.Background(), "k"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
}
