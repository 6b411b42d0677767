package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/redistest"
)

// TestSyncCount plays two replicas that reconcile by hand (the interval is too long to tick).
func TestSyncCount(t *testing.T) {
	srv := redistest.Start(t)
	clk := newClock(t0)
	spec := redisSpec(Spec{Kind: KindCount, Count: 10, Window: time.Minute, SyncInterval: time.Hour})
	replica := func() *syncCount {
		r := NewRegistry(RegistryOptions{Redis: newClient(t, srv.Addr), Now: clk.Now, SweepInterval: -1})
		t.Cleanup(func() { _ = r.Close() })
		return r.Limiter("group:bots", spec).(*syncCount)
	}
	a, b := replica(), replica()
	ctx := context.Background()
	admit := func(l *syncCount, n int) (last Decision) {
		t.Helper()
		for range n {
			d, err := l.Allow(ctx, "bots")
			if err != nil {
				t.Fatal(err)
			}
			last = d
		}
		return last
	}
	sync := func(l *syncCount) {
		t.Helper()
		if err := l.sync(ctx); err != nil {
			t.Fatal(err)
		}
	}

	if got := admit(a, 4).Remaining; got != 6 {
		t.Fatalf("a before any sync: remaining %d, want 6", got)
	}
	if got := admit(b, 3).Remaining; got != 7 {
		t.Fatalf("b before any sync: remaining %d, want 7 (it cannot know a's)", got)
	}
	sync(a) // pushes 4
	sync(b) // pushes 3, reads 7
	sync(a) // reads 7
	if got := admit(a, 1).Remaining; got != 2 {
		t.Fatalf("a after sync: remaining %d, want 2 (7 counted by both replicas)", got)
	}
	if got := admit(b, 1).Remaining; got != 2 {
		t.Fatalf("b after sync: remaining %d, want 2", got)
	}
	// Both fill what they believe is left: the window overshoots by what the other admitted
	// since the last sync, the documented bound.
	admit(a, 2)
	admit(b, 2)
	if d := admit(a, 1); d.Allowed {
		t.Fatalf("a when full: got %+v, want rejected", d)
	}
	sync(a)
	sync(b)
	total, err := newClient(t, srv.Addr).Get(ctx, a.base+"bots}:"+windowName(t0, time.Minute)).Int64()
	if err != nil {
		t.Fatal(err)
	}
	if total != 13 {
		t.Fatalf("Redis total: got %d, want 13 (10 plus b's 3 unseen by a)", total)
	}

	// A new window starts from zero everywhere.
	clk.Add(time.Minute)
	if got := admit(a, 1).Remaining; got != 9 {
		t.Fatalf("next window: remaining %d, want 9", got)
	}

	// Redis down: requests keep being decided locally; the sync reports the outage.
	srv.Stop()
	if got := admit(a, 1).Remaining; got != 8 {
		t.Fatalf("Redis down: remaining %d, want 8", got)
	}
	if err := a.sync(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("sync with Redis down: got %v, want ErrUnavailable", err)
	}
}

func windowName(now time.Time, w time.Duration) string {
	idx, _ := windowAt(now, w)
	return strconv.FormatInt(idx, 10)
}

// TestSyncCountTicks checks that the interval really pushes: the Redis counter reaches what
// was admitted without a manual sync.
func TestSyncCountTicks(t *testing.T) {
	srv := redistest.Start(t)
	clk := newClock(t0)
	rdb := newClient(t, srv.Addr)
	r := NewRegistry(RegistryOptions{Redis: rdb, Now: clk.Now, SweepInterval: -1})
	defer r.Close()
	l := r.Limiter("route:x", redisSpec(Spec{Kind: KindCount, Count: 10, Window: time.Minute, SyncInterval: 5 * time.Millisecond})).(*syncCount)
	for range 3 {
		if _, err := l.Allow(context.Background(), ""); err != nil {
			t.Fatal(err)
		}
	}
	key := l.base + "}:" + windowName(t0, time.Minute)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := rdb.Get(context.Background(), key).Int64()
		if got == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis counter: got %d, want 3 pushed by the sync goroutine", got)
		}
		time.Sleep(5 * time.Millisecond) // readiness poll
	}
	r.Retain(nil)
	r.syncs.mu.Lock()
	loops := len(r.syncs.loops)
	r.syncs.mu.Unlock()
	if loops != 0 {
		t.Fatalf("sync loops after Retain dropped the only sync limit: got %d, want 0", loops)
	}
}

// TestSyncLoopsPerInterval: every sync limit of one interval is reconciled by one loop, in
// shared round trips; a loop ends with the last limit of its interval.
func TestSyncLoopsPerInterval(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newClient(t, srv.Addr)
	clk := newClock(t0)
	r := NewRegistry(RegistryOptions{Redis: rdb, Now: clk.Now, SweepInterval: -1})
	defer r.Close()
	loops := func() int {
		r.syncs.mu.Lock()
		defer r.syncs.mu.Unlock()
		return len(r.syncs.loops)
	}
	const limits = 1500 // more than one round trip's keys
	fast := redisSpec(Spec{Kind: KindCount, Count: 10, Window: time.Minute, SyncInterval: 5 * time.Millisecond})
	slow := fast
	slow.SyncInterval = time.Hour
	ids := map[string]bool{}
	var keys []string
	for i := range limits {
		id := "consumer:c" + strconv.Itoa(i)
		ids[id] = true
		l := r.Limiter(id, fast).(*syncCount)
		for range 2 {
			if _, err := l.Allow(context.Background(), "c"); err != nil {
				t.Fatal(err)
			}
		}
		keys = append(keys, l.base+"c}:"+windowName(t0, time.Minute))
	}
	r.Limiter("group:slow", slow)
	if got := loops(); got != 2 {
		t.Fatalf("loops for %d limits of one interval and one of another: got %d, want 2", limits, got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		vals, err := rdb.MGet(context.Background(), keys...).Result()
		if err != nil {
			t.Fatal(err)
		}
		pushed := 0
		for _, v := range vals {
			if v == "2" {
				pushed++
			}
		}
		if pushed == limits {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis counters at 2: got %d of %d, want all pushed by the loop", pushed, limits)
		}
		time.Sleep(5 * time.Millisecond) // readiness poll
	}
	delete(ids, "consumer:c0")
	r.Retain(ids) // the slow limit goes, and one fast one
	if got := loops(); got != 1 {
		t.Fatalf("loops after the slow limit was dropped: got %d, want 1", got)
	}
}

// TestSyncAfterScriptFlush: a sync after Redis forgot its scripts (a restart, SCRIPT FLUSH)
// sends them again and succeeds.
func TestSyncAfterScriptFlush(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newClient(t, srv.Addr)
	clk := newClock(t0)
	r := NewRegistry(RegistryOptions{Redis: rdb, Now: clk.Now, SweepInterval: -1})
	defer r.Close()
	l := r.Limiter("group:g", redisSpec(Spec{Kind: KindCount, Count: 10, Window: time.Minute, SyncInterval: time.Hour})).(*syncCount)
	ctx := context.Background()
	for i, step := range []func() error{
		func() error { _, err := l.Allow(ctx, "k"); return err },
		func() error { return l.sync(ctx) }, // loads the script
		func() error { return rdb.ScriptFlush(ctx).Err() },
		func() error { _, err := l.Allow(ctx, "k"); return err },
		func() error { return l.sync(ctx) }, // NOSCRIPT, then EVAL
	} {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i+1, err)
		}
	}
	got, err := rdb.Get(ctx, l.base+"k}:"+windowName(t0, time.Minute)).Int64()
	if err != nil || got != 2 {
		t.Fatalf("Redis counter: got %d, %v; want 2", got, err)
	}
}
