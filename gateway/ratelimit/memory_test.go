package ratelimit

import (
	"context"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestLimiterMemory bounds what a limit costs, so that a policy of a million consumers each
// with a limit fits in memory: a limiter that has seen one key (its registry slot, its id,
// the key's state) and the same limiter once its key has been evicted. Heap in use is
// measured after a GC, so the numbers are deterministic up to where map growth lands.
func TestLimiterMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates tens of megabytes")
	}
	const (
		n = 100_000
		// Measured: 248 to 280 bytes with a key (the id string, 32, is the caller's but
		// counted), about 130 idle. A store per limiter cost about 10 KB.
		maxWithKey = 400
		maxIdle    = 200
	)
	tests := []struct {
		name string
		spec Spec
		// distinct gives every limiter its own count, in case specs get shared.
		distinct bool
		// maxWithKey and maxIdle replace the bounds when set.
		maxWithKey, maxIdle int64
	}{
		{name: "fixed", spec: Spec{Kind: KindCount, Count: 10, Window: time.Minute}},
		{name: "fixed distinct specs", spec: Spec{Kind: KindCount, Count: 10, Window: time.Minute}, distinct: true},
		{name: "sliding", spec: Spec{Kind: KindCount, Count: 10, Window: time.Minute, Sliding: true}},
		{name: "req", spec: Spec{Kind: KindReq, Rate: 10, Burst: 5}},
		// Reconciled with Redis every hour: nothing is sent during the test. Measured: 400
		// bytes with a key, 284 idle (its Redis key prefix, its spec); with a store and a
		// goroutine per limit it was 11.7 KB.
		{name: "redis sync_interval", spec: Spec{Kind: KindCount, Count: 10, Window: time.Minute, Redis: true, SyncInterval: time.Hour},
			maxWithKey: 600, maxIdle: 400},
	}
	// A client that is never asked: limits with Redis need one to be built.
	idle := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer idle.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(t0)
			r := NewRegistry(RegistryOptions{Now: clk.Now, SweepInterval: -1, Redis: idle})
			defer r.Close()
			ctx := context.Background()
			before := heapInUse()
			for i := range n {
				name := strconv.Itoa(i)
				spec := tt.spec
				if tt.distinct {
					spec.Count += i
				}
				l := r.Limiter("consumer:"+name+"/limit", spec)
				if _, err := l.Allow(ctx, "consumer-"+name); err != nil {
					t.Fatal(err)
				}
			}
			withKey := (int64(heapInUse()) - int64(before)) / n
			clk.Add(time.Hour)
			if got := r.sweep(); got != n {
				t.Fatalf("sweep an hour later: removed %d, want %d", got, n)
			}
			idle := (int64(heapInUse()) - int64(before)) / n
			runtime.KeepAlive(r)
			t.Logf("bytes per limiter: %d with one key, %d idle", withKey, idle)
			wantWithKey, wantIdle := int64(maxWithKey), int64(maxIdle)
			if tt.maxWithKey > 0 {
				wantWithKey, wantIdle = tt.maxWithKey, tt.maxIdle
			}
			if withKey > wantWithKey {
				t.Errorf("heap per limiter with one key: got %d bytes, want at most %d", withKey, wantWithKey)
			}
			if idle > wantIdle {
				t.Errorf("heap per idle limiter: got %d bytes, want at most %d", idle, wantIdle)
			}
		})
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
