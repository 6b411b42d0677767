package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/redistest"
)

// The tests of this file run real gateway binaries against a real redis-server: limits with
// policy redis must hold for the whole fleet, and a failing Redis must be answered as the
// limit's allow_degradation says, without hanging requests, and recovered from without a restart.

// redisWindow is the time_window of the limit-count tests: long, so that a run rarely crosses
// a window boundary; runs that do are detected (windows are aligned to the Unix epoch) and
// repeated on fresh counters.
const redisWindow = 3600

// hangLimit is the client timeout of the Redis tests. It is a hang detector, not a speed
// assertion: with redis.timeout 100ms no request should come anywhere near it, but a request
// blocked on a dead or frozen Redis would.
const hangLimit = 3 * time.Second

// fetch sends one request with c; unlike do it returns the error, so goroutines can use it.
func fetch(c *http.Client, method, url string, header map[string]string) (response, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return response{}, fmt.Errorf("building request: %w", err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("reading %s %s: %w", method, url, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}, nil
}

// eventually polls cond until it holds, failing the test after a generous bound. cond
// returns what it saw, for the failure message.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: last saw %s", what, saw)
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a readiness check
	}
}

// sameWindow tells whether two instants fall in the same limit-count window of secs seconds.
func sameWindow(a, b time.Time, secs int) bool {
	w := int64(secs) * int64(time.Second)
	return a.UnixNano()/w == b.UnixNano()/w
}

// policyJSON marshals a policy built as maps; generated policies stay readable in Go.
func policyJSON(t *testing.T, p map[string]any) string {
	t.Helper()
	p["listen"], p["admin_listen"] = "127.0.0.1:0", "127.0.0.1:0"
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		t.Fatalf("encoding policy: %v", err)
	}
	return string(b)
}

// keyAuth is the binding of consumer name with API key name+"-key".
func keyAuth(name string) []any {
	return []any{map[string]any{"idp": "keys", "key": name + "-key"}}
}

func route(name, upstreamURL string, plugins map[string]any) map[string]any {
	r := map[string]any{
		"name": name, "paths": []string{"/" + name},
		"upstream": map[string]any{"targets": []any{map[string]any{"url": upstreamURL}}, "timeout": "5s"},
	}
	if plugins != nil {
		r["plugins"] = plugins
	}
	return r
}

func startReplicas(t *testing.T, n int, policy string) []*gatewayProc {
	t.Helper()
	gws := make([]*gatewayProc, n)
	for i := range gws {
		gws[i] = startGatewayArgs(t, policy, []string{"-access-log=false"})
	}
	return gws
}

// tally is what a burst of requests got.
type tally struct {
	mu         sync.Mutex
	admitted   int
	perReplica []int
	rejected   map[string]int // by "status message"
	// remaining lists X-RateLimit-Remaining of admitted responses in arrival order (meaningful
	// for sequential bursts only).
	remaining []string
	errs      []string
}

func newTally(replicas int) *tally {
	return &tally{perReplica: make([]int, replicas), rejected: map[string]int{}}
}

func (ta *tally) add(replica int, r response, err error) {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	switch {
	case err != nil:
		ta.errs = append(ta.errs, err.Error())
	case r.Status == http.StatusOK:
		ta.admitted++
		ta.perReplica[replica]++
		ta.remaining = append(ta.remaining, r.Header.Get("X-RateLimit-Remaining"))
	default:
		ta.rejected[fmt.Sprintf("%d %s", r.Status, r.errorMsg())]++ // every limit here sets rejected_msg
	}
}

// burst sends total requests for each of the consumers, spread round-robin over the replicas:
// sequentially, or from workers goroutines at once when workers > 1. Consumers take turns.
func burst(gws []*gatewayProc, path string, consumers []string, total, workers int) map[string]*tally {
	client := &http.Client{Timeout: hangLimit}
	out := map[string]*tally{}
	type job struct {
		replica  int
		consumer string
	}
	for _, c := range consumers {
		out[c] = newTally(len(gws))
	}
	// Round i sends consumer ci's request to replica i+ci: every consumer visits every replica.
	var jobs []job
	for i := range total {
		for ci, c := range consumers {
			jobs = append(jobs, job{replica: (i + ci) % len(gws), consumer: c})
		}
	}
	send := func(j job) {
		r, err := fetch(client, "GET", gws[j.replica].URL+path, map[string]string{"apikey": j.consumer + "-key"})
		out[j.consumer].add(j.replica, r, err)
	}
	if workers <= 1 {
		for _, j := range jobs {
			send(j)
		}
		return out
	}
	ch := make(chan job)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				send(j)
			}
		}()
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	return out
}

func TestRedisLimitsSharedAcrossReplicas(t *testing.T) {
	rd := redistest.Start(t)
	up := newUpstream(t, nil)

	// Every case counts on its own consumer, so cases (and repeats of a case that crossed a
	// window boundary) never share counters.
	const consumers = 40
	var cons []any
	for i := range consumers {
		name := fmt.Sprintf("c%02d", i)
		cons = append(cons, map[string]any{"username": name, "idps": keyAuth(name)})
	}
	countLimit := func(windowType, msg string) map[string]any {
		return map[string]any{"limit-count": map[string]any{
			"count": 10, "time_window": redisWindow, "key": "consumer", "policy": "redis",
			"window_type": windowType, "rejected_msg": msg,
		}}
	}
	policy := policyJSON(t, map[string]any{
		"redis":     map[string]any{"addr": rd.Addr, "timeout": "100ms"},
		"idps":      []any{map[string]any{"name": "keys", "type": "key-auth"}},
		"consumers": cons,
		"routes": []any{
			route("fixed", up.URL, countLimit("fixed", "fixed limit")),
			route("sliding", up.URL, countLimit("sliding", "sliding limit")),
			// 0.01/s: the bucket takes 100 s to free one slot, far longer than a case runs, so
			// exactly burst+1 = 10 requests are admitted.
			route("req", up.URL, map[string]any{"limit-req": map[string]any{
				"rate": 0.01, "burst": 9, "nodelay": true, "key": "consumer", "policy": "redis",
				"rejected_msg": "req limit",
			}}),
		},
	})
	gws := startReplicas(t, 3, policy)

	next := 0
	nextConsumer := func(t *testing.T) string {
		t.Helper()
		if next == consumers {
			t.Fatalf("out of fresh consumers")
		}
		next++
		return fmt.Sprintf("c%02d", next-1)
	}

	kinds := []struct {
		path     string
		windowed bool
		reject   string // status and message of a rejection
	}{
		{"fixed", true, "429 fixed limit"},
		{"sliding", true, "429 sliding limit"},
		{"req", false, "503 req limit"},
	}
	for _, replicas := range []int{2, 3} {
		for _, workers := range []int{1, 6} {
			for _, k := range kinds {
				mode := "sequential"
				if workers > 1 {
					mode = fmt.Sprintf("%d goroutines", workers)
				}
				t.Run(fmt.Sprintf("%s/%d replicas/%s", k.path, replicas, mode), func(t *testing.T) {
					var ta *tally
					for attempt := 0; ; attempt++ {
						c := nextConsumer(t)
						before := time.Now()
						ta = burst(gws[:replicas], "/"+k.path, []string{c}, 30, workers)[c]
						if !k.windowed || sameWindow(before, time.Now(), redisWindow) {
							break
						}
						if attempt == 1 {
							t.Fatalf("two runs crossed a %d s window boundary", redisWindow)
						}
						t.Logf("the run crossed a window boundary; repeating on a fresh consumer")
					}
					if len(ta.errs) > 0 {
						t.Fatalf("requests failed: %v", ta.errs)
					}
					if ta.admitted != 10 {
						t.Errorf("admitted: got %d, want exactly 10 (per replica %v, rejected %v)", ta.admitted, ta.perReplica, ta.rejected)
					}
					if got := ta.rejected[k.reject]; got != 20 || len(ta.rejected) != 1 {
						t.Errorf("rejections: got %v, want 20 × %q", ta.rejected, k.reject)
					}
					if workers > 1 {
						return
					}
					// Round-robin sends the first requests to every replica: each admits some,
					// and the counts they report continue one another's.
					for i, n := range ta.perReplica {
						if n == 0 {
							t.Errorf("replica %d admitted nothing (per replica %v)", i, ta.perReplica)
						}
					}
					if k.windowed {
						var want []string
						for i := range 10 {
							want = append(want, strconv.Itoa(9-i))
						}
						if got := strings.Join(ta.remaining, ","); got != strings.Join(want, ",") {
							t.Errorf("X-RateLimit-Remaining of the admitted requests: got %s, want %s", got, strings.Join(want, ","))
						}
					}
				})
			}
		}
	}
}

// TestRedisGroupAndConsumerLimits: a consumer group's limit is one counter for all its members
// on all replicas, while each member's own limit counts that member alone.
func TestRedisGroupAndConsumerLimits(t *testing.T) {
	rd := redistest.Start(t)
	up := newUpstream(t, nil)

	// Group limit 10, each member's own limit 4, three members: 12 requests pass the members'
	// own limits and the group admits 10 of them, whatever the interleaving.
	modes := []struct {
		name    string
		workers int
	}{{"sequential", 1}, {"6 goroutines", 6}}
	member := func(mode, attempt, i int) string { return fmt.Sprintf("m%d-%d-%d", mode, attempt, i) }
	var groups, cons []any
	for mode := range modes {
		for attempt := range 2 {
			group := fmt.Sprintf("team-%d-%d", mode, attempt)
			groups = append(groups, map[string]any{"name": group, "plugins": map[string]any{"limit-count": map[string]any{
				"count": 10, "time_window": redisWindow, "policy": "redis", "rejected_msg": "group limit",
			}}})
			for i := range 3 {
				name := member(mode, attempt, i)
				cons = append(cons, map[string]any{"username": name, "group": group, "idps": keyAuth(name),
					"plugins": map[string]any{"limit-count": map[string]any{
						"count": 4, "time_window": redisWindow, "policy": "redis", "rejected_msg": "consumer limit",
					}}})
			}
		}
	}
	policy := policyJSON(t, map[string]any{
		"redis":           map[string]any{"addr": rd.Addr},
		"idps":            []any{map[string]any{"name": "keys", "type": "key-auth"}},
		"consumer_groups": groups,
		"consumers":       cons,
		"routes":          []any{route("api", up.URL, nil)},
	})
	gws := startReplicas(t, 3, policy)

	for mode, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			var got map[string]*tally
			var names []string
			for attempt := 0; ; attempt++ {
				names = []string{member(mode, attempt, 0), member(mode, attempt, 1), member(mode, attempt, 2)}
				before := time.Now()
				got = burst(gws, "/api", names, 10, m.workers)
				if sameWindow(before, time.Now(), redisWindow) {
					break
				}
				if attempt == 1 {
					t.Fatalf("two runs crossed a %d s window boundary", redisWindow)
				}
				t.Logf("the run crossed a window boundary; repeating on fresh consumers")
			}
			total, groupRejections, consumerRejections := 0, 0, 0
			for _, n := range names {
				ta := got[n]
				if len(ta.errs) > 0 {
					t.Fatalf("%s: requests failed: %v", n, ta.errs)
				}
				if ta.admitted > 4 {
					t.Errorf("%s: admitted %d, want at most its own limit 4", n, ta.admitted)
				}
				total += ta.admitted
				for k, v := range ta.rejected {
					switch k {
					case "429 group limit":
						groupRejections += v
					case "429 consumer limit":
						consumerRejections += v
					default:
						t.Errorf("%s: unexpected rejection %q ×%d", n, k, v)
					}
				}
			}
			if total != 10 {
				t.Errorf("admitted in total: got %d, want exactly the group's 10", total)
			}
			// Each member's own limit lets exactly 4 of its 10 requests on to the group's.
			if consumerRejections != 18 || groupRejections != 2 {
				t.Errorf("rejections: got %d by the consumer limits and %d by the group's, want 18 and 2", consumerRejections, groupRejections)
			}
			if m.workers > 1 {
				return
			}
			// Taking turns, three rounds admit 9; the group's last slot goes to the first member's
			// fourth request, and the other two members' fourth requests find the group exhausted.
			for i, n := range names {
				want := 3
				if i == 0 {
					want = 4
				}
				if got[n].admitted != want {
					t.Errorf("%s: admitted %d, want %d", n, got[n].admitted, want)
				}
			}
		})
	}
}

// readiness returns /readyz's status and its redis problem.
func readiness(c *http.Client, gw *gatewayProc) (int, string, error) {
	r, err := fetch(c, "GET", gw.AdminURL+"/readyz", nil)
	if err != nil {
		return 0, "", err
	}
	var body struct {
		Problems map[string]string `json:"problems"`
	}
	if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
		return r.Status, "", fmt.Errorf("decoding /readyz %q: %w", r.Body, err)
	}
	return r.Status, body.Problems["redis"], nil
}

// TestRedisOutage freezes, then kills Redis under two replicas: limits without
// allow_degradation answer 503, those with it forward and count the bypass, no request waits
// past the Redis timeout for long, /readyz says Redis is down, and once Redis is back the
// limits count again without a gateway restart.
func TestRedisOutage(t *testing.T) {
	rd := redistest.Start(t)
	up := newUpstream(t, nil)
	big := map[string]any{"count": 1000000, "time_window": redisWindow, "key": "route", "policy": "redis"}
	with := func(m map[string]any, k string, v any) map[string]any {
		out := map[string]any{k: v}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	fast := map[string]any{"rate": 1000, "burst": 1000, "key": "route", "policy": "redis"}
	policy := policyJSON(t, map[string]any{
		"redis":     map[string]any{"addr": rd.Addr, "timeout": "100ms"},
		"idps":      []any{map[string]any{"name": "keys", "type": "key-auth"}},
		"consumers": []any{map[string]any{"username": "u", "idps": keyAuth("u")}},
		"routes": []any{
			route("strict", up.URL, map[string]any{"limit-count": big}),
			route("lenient", up.URL, map[string]any{"limit-count": with(big, "allow_degradation", true)}),
			route("strict-req", up.URL, map[string]any{"limit-req": fast}),
			route("lenient-req", up.URL, map[string]any{"limit-req": with(fast, "allow_degradation", true)}),
			// Three requests per consumer, then 429 for 100 s: shows whether Redis counts.
			route("bucket", up.URL, map[string]any{"limit-req": map[string]any{
				"rate": 0.01, "burst": 2, "key": "consumer", "policy": "redis", "rejected_code": 429,
			}}),
		},
	})
	gws := startReplicas(t, 2, policy)
	client := &http.Client{Timeout: hangLimit}
	key := map[string]string{"apikey": "u-key"}

	get := func(t *testing.T, gw *gatewayProc, path string) response {
		t.Helper()
		r, err := fetch(client, "GET", gw.URL+path, key)
		if err != nil {
			t.Fatalf("no answer within the %s hang limit: %v", hangLimit, err)
		}
		return r
	}
	// bucketCounts checks that Redis counts again: a fresh bucket admits 3 requests spread
	// over the replicas, then rejects.
	bucketCounts := func(t *testing.T) {
		t.Helper()
		for i, want := range []int{200, 200, 200, 429, 429} {
			if r := get(t, gws[i%len(gws)], "/bucket"); r.Status != want {
				t.Fatalf("/bucket request %d: got %d %q, want %d", i+1, r.Status, r.Body, want)
			}
		}
	}
	ready := func(t *testing.T) {
		t.Helper()
		for i, gw := range gws {
			eventually(t, fmt.Sprintf("replica %d ready", i), func() (bool, string) {
				st, problem, err := readiness(client, gw)
				return err == nil && st == 200, fmt.Sprintf("%d %q %v", st, problem, err)
			})
		}
	}
	// recovered polls until a fail-closed limit admits a request on every replica: its 200
	// can only come from Redis, so Redis counts again. The breaker's cool-down is about 1 s.
	recovered := func(t *testing.T) {
		t.Helper()
		for i, gw := range gws {
			eventually(t, fmt.Sprintf("replica %d counting on redis again", i), func() (bool, string) {
				r := get(t, gw, "/strict")
				return r.Status == 200 && r.Header.Get("X-RateLimit-Remaining") != "", fmt.Sprintf("%d %q", r.Status, r.Body)
			})
		}
		ready(t)
		for i, gw := range gws {
			if got := gw.metric("portcullis_redis_breaker_open"); got != 0 {
				t.Errorf("replica %d: portcullis_redis_breaker_open got %v, want 0", i, got)
			}
		}
	}
	// down checks every replica's answers while Redis is unusable.
	down := func(t *testing.T) {
		t.Helper()
		const n = 12 // more than the breaker's threshold of 5 consecutive failures
		for i, gw := range gws {
			before := map[string]float64{
				"limit-count": gw.metric("portcullis_ratelimit_degraded_total", `limit="route:lenient"`, `plugin="limit-count"`),
				"limit-req":   gw.metric("portcullis_ratelimit_degraded_total", `limit="route:lenient-req"`, `plugin="limit-req"`),
			}
			for j := range n {
				for _, path := range []string{"/strict", "/strict-req"} {
					r := get(t, gw, path)
					if r.Status != 503 || r.message() != "rate limiting unavailable" {
						t.Fatalf("replica %d %s request %d: got %d %q, want 503 rate limiting unavailable", i, path, j+1, r.Status, r.Body)
					}
				}
				for _, path := range []string{"/lenient", "/lenient-req"} {
					if r := get(t, gw, path); r.Status != 200 {
						t.Fatalf("replica %d %s request %d: got %d %q, want 200 (allow_degradation)", i, path, j+1, r.Status, r.Body)
					}
				}
			}
			for plugin, owner := range map[string]string{"limit-count": "route:lenient", "limit-req": "route:lenient-req"} {
				got := gw.metric("portcullis_ratelimit_degraded_total", `limit="`+owner+`"`, `plugin="`+plugin+`"`) - before[plugin]
				if got != n {
					t.Errorf("replica %d: degraded_total of %s grew by %v, want %d", i, owner, got, n)
				}
			}
			if got := gw.metric("portcullis_redis_breaker_open"); got != 1 {
				t.Errorf("replica %d: portcullis_redis_breaker_open got %v, want 1 after %d failures", i, got, 2*n)
			}
			if got := gw.metric("portcullis_redis_duration_seconds_count", `outcome="error"`); got < 5 {
				t.Errorf("replica %d: redis errors recorded: got %v, want at least the breaker's threshold 5", i, got)
			}
			st, problem, err := readiness(client, gw)
			if err != nil {
				t.Fatalf("replica %d: /readyz: %v", i, err)
			}
			if st != 503 || problem == "" {
				t.Errorf("replica %d: /readyz got %d with redis problem %q, want 503 naming redis", i, st, problem)
			}
		}
	}

	t.Run("healthy", func(t *testing.T) {
		ready(t)
		for i, gw := range gws {
			for _, path := range []string{"/strict", "/lenient", "/strict-req", "/lenient-req"} {
				if r := get(t, gw, path); r.Status != 200 {
					t.Fatalf("replica %d %s: got %d %q, want 200", i, path, r.Status, r.Body)
				}
			}
		}
		bucketCounts(t)
	})
	if t.Failed() {
		return
	}
	t.Run("frozen redis", func(t *testing.T) {
		// A frozen Redis accepts connections and never answers: only the timeout frees requests.
		rd.Pause()
		down(t)
		rd.Resume()
		recovered(t)
	})
	if t.Failed() {
		return
	}
	t.Run("killed and restarted redis", func(t *testing.T) {
		rd.Stop()
		down(t)
		// The restarted Redis is empty: the bucket starts full again, on the same gateways.
		rd.Restart()
		recovered(t)
		bucketCounts(t)
	})
}

// TestRedisClusterLimitsSharedAcrossReplicas: two gateway binaries share limits on a real
// three-node Redis Cluster (policy redis.addrs). The consumers' counters live on different
// nodes, and every consumer still gets exactly its limit across both replicas.
func TestRedisClusterLimitsSharedAcrossReplicas(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	up := newUpstream(t, nil)
	const consumers = 24 // two sets of 12: a run that crosses a window boundary is repeated
	var cons []any
	for i := range consumers {
		name := fmt.Sprintf("c%02d", i)
		cons = append(cons, map[string]any{"username": name, "idps": keyAuth(name)})
	}
	policy := policyJSON(t, map[string]any{
		"redis":     map[string]any{"addrs": rc.Addrs, "timeout": "500ms"},
		"idps":      []any{map[string]any{"name": "keys", "type": "key-auth"}},
		"consumers": cons,
		"routes": []any{
			route("fixed", up.URL, map[string]any{"limit-count": map[string]any{
				"count": 10, "time_window": redisWindow, "key": "consumer", "policy": "redis",
			}}),
			route("req", up.URL, map[string]any{"limit-req": map[string]any{
				"rate": 0.01, "burst": 9, "nodelay": true, "key": "consumer", "policy": "redis",
			}}),
		},
	})
	gws := startReplicas(t, 2, policy)

	for _, tc := range []struct {
		path     string
		windowed bool
		reject   int
	}{{"fixed", true, 429}, {"req", false, 503}} {
		t.Run(tc.path, func(t *testing.T) {
			var tallies map[string]*tally
			for set := 0; ; set++ {
				var names []string
				for i := range consumers / 2 {
					names = append(names, fmt.Sprintf("c%02d", set*consumers/2+i))
				}
				before := time.Now()
				tallies = burst(gws, "/"+tc.path, names, 30, 6)
				if !tc.windowed || sameWindow(before, time.Now(), redisWindow) {
					break
				}
				if set == 1 {
					t.Fatalf("two runs crossed a %d s window boundary", redisWindow)
				}
			}
			for name, ta := range tallies {
				if len(ta.errs) > 0 {
					t.Fatalf("%s: requests failed: %v", name, ta.errs)
				}
				rejected := 0
				for what, n := range ta.rejected {
					if !strings.HasPrefix(what, strconv.Itoa(tc.reject)+" ") {
						t.Errorf("%s: unexpected answer %q ×%d", name, what, n)
					}
					rejected += n
				}
				if ta.admitted != 10 || rejected != 20 {
					t.Errorf("%s: admitted %d, rejected %d; want exactly 10 and 20 (per replica %v)", name, ta.admitted, rejected, ta.perReplica)
				}
			}
		})
	}

	nodesWithKeys := 0
	for _, n := range rc.Nodes {
		if size := dbSize(t, n.Addr); size > 0 {
			nodesWithKeys++
		}
	}
	if nodesWithKeys < 2 {
		t.Errorf("the counters of %d consumers live on %d node(s), want them spread over the cluster", consumers, nodesWithKeys)
	}
}

// dbSize asks one Redis node, over its plain protocol, how many keys it holds.
func dbSize(t *testing.T, addr string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("dialing redis %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "DBSIZE\r\n"); err != nil {
		t.Fatalf("DBSIZE on %s: %v", addr, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, ":") {
		t.Fatalf("DBSIZE on %s: got %q, %v", addr, line, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil {
		t.Fatalf("DBSIZE on %s: %q: %v", addr, line, err)
	}
	return n
}

// TestRedisSyncIntervalAcrossReplicas: with sync_interval a replica decides locally and
// reconciles with Redis in the background; what one replica admitted reaches the other, which
// then refuses the consumer too.
func TestRedisSyncIntervalAcrossReplicas(t *testing.T) {
	rd := redistest.Start(t)
	up := newUpstream(t, nil)
	policy := policyJSON(t, map[string]any{
		"redis": map[string]any{"addr": rd.Addr, "timeout": "500ms"},
		"idps":  []any{map[string]any{"name": "keys", "type": "key-auth"}},
		"consumers": []any{map[string]any{"username": "c00", "idps": keyAuth("c00"),
			"plugins": map[string]any{"limit-count": map[string]any{
				"count": 10, "time_window": redisWindow, "policy": "redis", "sync_interval": "50ms",
			}}}},
		"routes": []any{route("api", up.URL, nil)},
	})
	gws := startReplicas(t, 2, policy)
	client := &http.Client{Timeout: hangLimit}
	get := func(gw *gatewayProc) int {
		t.Helper()
		r, err := fetch(client, "GET", gw.URL+"/api", map[string]string{"apikey": "c00-key"})
		if err != nil {
			t.Fatal(err)
		}
		return r.Status
	}
	start := time.Now()
	for i := range 10 {
		if got := get(gws[0]); got != 200 {
			t.Fatalf("replica 0, request %d: got %d, want 200", i+1, got)
		}
	}
	if got := get(gws[0]); got != 429 {
		t.Fatalf("replica 0 after 10: got %d, want 429", got)
	}
	// Replica 1 has admitted nothing itself: it refuses once a sync has brought it replica 0's
	// ten. Each admission on the way counts too, so it admits at most a few.
	admitted := 0
	eventually(t, "replica 1 refusing the consumer", func() (bool, string) {
		switch got := get(gws[1]); got {
		case 429:
			return true, ""
		case 200:
			admitted++
			return false, fmt.Sprintf("admitted %d", admitted)
		default:
			t.Fatalf("replica 1: got %d", got)
			return false, ""
		}
	})
	if !sameWindow(start, time.Now(), redisWindow) {
		t.Skip("the run crossed a window boundary")
	}
	if admitted >= 10 {
		t.Errorf("replica 1 admitted %d before refusing: it never learnt replica 0's ten", admitted)
	}
}
