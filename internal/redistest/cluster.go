package redistest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// Cluster is a Redis Cluster of real redis-server processes: masters only, each serving an
// equal share of the hash slots, so that keys of different hash tags land on different nodes.
type Cluster struct {
	// Addrs are the nodes' host:port, the seed list a cluster client takes.
	Addrs []string
	// Nodes are the servers, in slot order: Nodes[0] serves the first slots.
	Nodes []*Server
}

// StartCluster starts n nodes, joins them into one cluster and waits until every node reports
// the cluster ok with all n nodes known. Like Start, it skips the test without redis-server
// (fails it under CI) and stops the nodes when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("a cluster needs at least one node, got %d", n)
	}
	bin := lookPath(t)
	// The cluster bus port is given explicitly: the default, port+10000, may be taken or above
	// 65535.
	clusterArgs := func(int) ([]string, error) {
		bus, err := freePort()
		if err != nil {
			return nil, err
		}
		return []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(bus), "--cluster-node-timeout", "5000"}, nil
	}
	c := &Cluster{}
	for range n {
		s := startWith(t, bin, clusterArgs)
		c.Nodes = append(c.Nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}
	if err := c.join(); err != nil {
		t.Fatalf("forming a redis cluster of %v: %v", c.Addrs, err)
	}
	return c
}

// join gives each node its share of the slots, introduces every node to the first one, and
// waits for the cluster to converge.
func (c *Cluster) join() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clients := make([]*redis.Client, len(c.Nodes))
	for i, s := range c.Nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: s.Addr})
		defer clients[i].Close()
	}
	n := len(c.Nodes)
	for i, rc := range clients {
		lo, hi := i*clusterSlots/n, (i+1)*clusterSlots/n-1
		if err := rc.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			return fmt.Errorf("assigning slots %d-%d to %s: %w", lo, hi, c.Nodes[i].Addr, err)
		}
	}
	first := c.Nodes[0]
	bus := busPort(first.args)
	for i := 1; i < n; i++ {
		if err := clients[i].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", first.port, bus).Err(); err != nil {
			return fmt.Errorf("introducing %s to %s: %w", c.Nodes[i].Addr, first.Addr, err)
		}
	}
	want := "cluster_known_nodes:" + strconv.Itoa(n)
	for i, rc := range clients {
		for {
			info, err := rc.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, want) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("node %s did not see the cluster ok with %d nodes: %v\n%s", c.Nodes[i].Addr, n, err, info)
			case <-time.After(50 * time.Millisecond): // readiness poll interval
			}
		}
	}
	return nil
}

func busPort(args []string) string {
	for i, a := range args {
		if a == "--cluster-port" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}
