package redistest

import (
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	if err := Ping(s.Addr); err != nil {
		t.Fatalf("ping after Start: got %v, want nil", err)
	}
	s.Stop()
	if err := Ping(s.Addr); err == nil {
		t.Fatal("ping after Stop: got nil, want an error")
	}
	s.Restart()
	if err := Ping(s.Addr); err != nil {
		t.Fatalf("ping after Restart: got %v, want nil", err)
	}
}

// The nodes form one cluster: a cluster client writes keys of many hash tags, which land on
// every node, and reads them back.
func TestCluster(t *testing.T) {
	c := StartCluster(t, 3)
	ctx := t.Context()
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	defer rc.Close()
	for i := range 64 {
		key := fmt.Sprintf("{tag%d}:k", i)
		if err := rc.Set(ctx, key, i, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		if got, err := rc.Get(ctx, key).Int(); err != nil || got != i {
			t.Fatalf("GET %s: got %d, %v; want %d", key, got, err, i)
		}
	}
	for _, s := range c.Nodes {
		nc := redis.NewClient(&redis.Options{Addr: s.Addr})
		n, err := nc.DBSize(ctx).Result()
		_ = nc.Close()
		if err != nil {
			t.Fatalf("DBSIZE on %s: %v", s.Addr, err)
		}
		if n == 0 {
			t.Errorf("node %s holds no key of 64 hash tags: the slots are not spread", s.Addr)
		}
	}
}
