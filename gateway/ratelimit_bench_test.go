package gateway

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis/portcullis/gateway/ratelimit"
	"github.com/portcullis/portcullis/internal/redistest"
	"github.com/portcullis/portcullis/policies"
)

// newLimitGateway is newTestGateway with a rate-limit registry on rdb (nil: no Redis), built
// as cmd/portcullis builds it. policy's %[1]s is the upstream URL.
func newLimitGateway(tb testing.TB, policy string, rdb redis.UniversalClient) *Gateway {
	tb.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(make([]byte, 1024)) }))
	tb.Cleanup(up.Close)
	snap := loadPolicy(tb, policy, up.URL)
	reg := ratelimit.NewRegistry(ratelimit.RegistryOptions{Redis: rdb, RedisTimeout: 100 * time.Millisecond})
	tb.Cleanup(func() { reg.Close() })
	gw, err := New(snap, Options{Limiters: reg, Metrics: NewMetrics()})
	if err != nil {
		tb.Fatalf("building gateway: %v", err)
	}
	tb.Cleanup(func() { gw.Close() })
	return gw
}

// newBenchRedis starts a redis-server and returns its address and the client `portcullis run`
// would build for it.
func newBenchRedis(tb testing.TB) (string, redis.UniversalClient) {
	tb.Helper()
	srv := redistest.Start(tb)
	rdb := NewRedisClient(&policies.Redis{Addr: srv.Addr})
	tb.Cleanup(func() { rdb.Close() })
	return srv.Addr, rdb
}

// benchLimits are the limits measured on the request path: high enough never to reject.
var benchLimits = []struct {
	name   string
	plugin string // %s is the policy: local or redis
}{
	{"count-fixed", `"limit-count": { "count": 1000000000, "time_window": 60, "policy": "%s" }`},
	{"count-sliding", `"limit-count": { "count": 1000000000, "time_window": 60, "window_type": "sliding", "policy": "%s" }`},
	{"req", `"limit-req": { "rate": 1000000, "burst": 1000000, "policy": "%s" }`},
}

// benchRequestPath measures the in-process pipeline (key-auth, one consumer limit, proxy to a
// loopback upstream) with each limit kind on policy, serially and from parallel goroutines.
// redisAddr is the policy's redis block (validation wants one for policy redis); the registry
// uses rdb.
func benchRequestPath(b *testing.B, policy, redisAddr string, rdb redis.UniversalClient) {
	redisBlock := ""
	if redisAddr != "" {
		redisBlock = fmt.Sprintf(`"redis": { "addr": %q },`, redisAddr)
	}
	for _, bl := range benchLimits {
		gw := newLimitGateway(b, `{ `+redisBlock+`
  "idps": [ { "name": "keys", "type": "key-auth" } ],
  "consumers": [ { "username": "alice", "idps": [ { "idp": "keys", "key": "ka" } ],
    "plugins": { `+fmt.Sprintf(bl.plugin, policy)+` } } ],
  "routes": [ { "name": "r", "paths": ["/r"], "upstream": { "targets": [ { "url": "%[1]s" } ] } } ]
}`, rdb)
		one := func() int {
			req := httptest.NewRequest("GET", "/r", nil)
			req.Header.Set("apikey", "ka")
			rec := httptest.NewRecorder()
			gw.ServeHTTP(rec, req)
			return rec.Code
		}
		if code := one(); code != 200 {
			b.Fatalf("%s: status %d", bl.name, code)
		}
		b.Run(bl.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if code := one(); code != 200 {
					b.Fatalf("status %d", code)
				}
			}
		})
		b.Run(bl.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if code := one(); code != 200 {
						b.Errorf("status %d", code)
						return
					}
				}
			})
		})
	}
}

// BenchmarkRequestPathLocal is the baseline of BenchmarkRequestPathRedis: counters in memory.
func BenchmarkRequestPathLocal(b *testing.B) {
	benchRequestPath(b, "local", "", nil)
}

// BenchmarkRequestPathRedis costs one Redis round trip (a Lua script) per request on top of
// the local path.
func BenchmarkRequestPathRedis(b *testing.B) {
	addr, rdb := newBenchRedis(b)
	benchRequestPath(b, "redis", addr, rdb)
}
