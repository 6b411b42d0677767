package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis/portcullis/internal/redistest"
)

// The Redis store on a real three-node Redis Cluster: the scripts' keys of one check share a
// slot, and the checks of concurrent requests, pipelined together, are split by node.

func newClusterClient(t testing.TB, addrs []string) *redis.ClusterClient {
	t.Helper()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestRedisClusterScenarios(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	rdb := newClusterClient(t, c.Addrs)
	for _, sc := range scenarios() {
		sc.spec = redisSpec(sc.spec)
		t.Run(sc.name, func(t *testing.T) { runScenario(t, sc, RegistryOptions{Redis: rdb}) })
	}
}

// TestRedisClusterSharedExact: racing goroutines on four registries, each with its own cluster
// client, check sixteen keys that live on every node; after SCRIPT FLUSH on every node halfway
// (a node restarted, say), exactly each key's limit gets through and no check fails.
func TestRedisClusterSharedExact(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	const keys, limit, tries = 16, 20, 30
	tests := []struct {
		name string
		spec Spec
	}{
		{name: "fixed", spec: Spec{Kind: KindCount, Count: limit, Window: time.Hour}},
		{name: "sliding", spec: Spec{Kind: KindCount, Count: limit, Window: time.Hour, Sliding: true}},
		{name: "req", spec: Spec{Kind: KindReq, Rate: 0.001, Burst: limit - 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var admitted [keys]atomic.Int64
			var failed atomic.Int64
			clk := newClock(t0.Add(30 * time.Second))
			var regs []*Registry
			for range 4 {
				r := NewRegistry(RegistryOptions{Redis: newClusterClient(t, c.Addrs), Now: clk.Now, RedisTimeout: 5 * time.Second, SweepInterval: -1})
				defer r.Close()
				regs = append(regs, r)
			}
			check := func(l Limiter, k int) {
				d, err := l.Allow(context.Background(), fmt.Sprintf("consumer-%d", k))
				switch {
				case err != nil:
					failed.Add(1)
					t.Error(err)
				case d.Allowed:
					admitted[k].Add(1)
				}
			}
			run := func(rounds int) {
				var wg sync.WaitGroup
				for _, r := range regs {
					l := r.Limiter("group:"+tt.name, redisSpec(tt.spec))
					for w := range 4 {
						wg.Go(func() {
							// every key, rounds times, each goroutine starting elsewhere
							for i := range rounds * keys {
								check(l, (w*keys/4+i)%keys)
							}
						})
					}
				}
				wg.Wait()
			}
			run(tries / 2)
			for _, n := range c.Nodes {
				nc := redis.NewClient(&redis.Options{Addr: n.Addr})
				err := nc.ScriptFlush(context.Background()).Err()
				_ = nc.Close()
				if err != nil {
					t.Fatalf("SCRIPT FLUSH on %s: %v", n.Addr, err)
				}
			}
			run(tries - tries/2)
			if got := failed.Load(); got != 0 {
				t.Fatalf("%d checks failed", got)
			}
			for k := range keys {
				if got := admitted[k].Load(); got != limit {
					t.Errorf("key consumer-%d: admitted %d of %d, want %d", k, got, 16*tries, limit)
				}
			}
			nodesWithKeys := 0
			for _, n := range c.Nodes {
				nc := redis.NewClient(&redis.Options{Addr: n.Addr})
				size, err := nc.DBSize(context.Background()).Result()
				_ = nc.Close()
				if err != nil {
					t.Fatalf("DBSIZE on %s: %v", n.Addr, err)
				}
				if size > 0 {
					nodesWithKeys++
				}
			}
			if nodesWithKeys < 2 {
				t.Errorf("the keys of %d consumers live on %d node(s), want them spread over the cluster", keys, nodesWithKeys)
			}
		})
	}
}

// TestRedisClusterNodeRestart: a cluster node that goes away fails the checks it holds with
// ErrUnavailable within the timeout, never a hang; restarted (empty, on its address, with its
// cluster identity), it is found again by the same registry, and every check succeeds.
func TestRedisClusterNodeRestart(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	clk := newClock(t0)
	r := NewRegistry(RegistryOptions{Redis: newClusterClient(t, c.Addrs), Now: clk.Now, RedisTimeout: 200 * time.Millisecond,
		SweepInterval: -1, BreakerThreshold: 1, BreakerCooldown: time.Second})
	defer r.Close()
	l := r.Limiter("group:g", redisSpec(Spec{Kind: KindCount, Count: 1000, Window: time.Hour}))
	const keys = 16
	checkAll := func() (failed int, err error) {
		for k := range keys {
			if _, e := l.Allow(context.Background(), fmt.Sprintf("consumer-%d", k)); e != nil {
				failed, err = failed+1, e
			}
		}
		return failed, err
	}
	if failed, err := checkAll(); failed > 0 {
		t.Fatalf("before the restart: %d checks failed: %v", failed, err)
	}
	var down *redistest.Server
	for _, n := range c.Nodes {
		nc := redis.NewClient(&redis.Options{Addr: n.Addr})
		size, err := nc.DBSize(context.Background()).Result()
		_ = nc.Close()
		if err == nil && size > 0 {
			down = n
			break
		}
	}
	if down == nil {
		t.Fatal("no node holds a counter")
	}

	down.Stop()
	failed, err := checkAll()
	if failed == 0 {
		t.Fatalf("with node %s down: every check succeeded, want those it holds to fail", down.Addr)
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("with node %s down: got %v, want ErrUnavailable", down.Addr, err)
	}

	down.Restart()
	deadline := time.Now().Add(30 * time.Second)
	for {
		clk.Add(time.Second) // past the breaker's cool-down: the next check probes
		failed, err = checkAll()
		if failed == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s restarted 30 s ago: %d checks still fail: %v", down.Addr, failed, err)
		}
		time.Sleep(100 * time.Millisecond) // poll interval while the cluster takes the node back
	}
}
