package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// KeyPrefix starts every Redis key of this package.
const KeyPrefix = "portcullis:rl:"

// The scripts make each check one atomic round trip. Every key of one call shares the hash
// tag {id|spec hash|request key}, so they live in one slot of a Redis Cluster.
//
// Time is the client's clock, passed as an argument (not Redis TIME): fixed windows are
// named by their index, which the client computes, and tests inject a clock. Replicas
// therefore need synchronised clocks; a skew shifts a replica's window boundaries by as much.
var (
	// KEYS[1] counter of the current window. ARGV: limit, ttl ms. Returns {admitted, count}.
	// Rejected requests are not counted, so the counter never exceeds the limit.
	fixedScript = redis.NewScript(`
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
if c >= tonumber(ARGV[1]) then return {0, c} end
c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, c}
`)

	// KEYS[1] current window's counter, KEYS[2] previous window's. ARGV: limit, window ms,
	// elapsed ms into the current window, ttl ms. Returns {admitted, prev, cur before}.
	slidingScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
local w = tonumber(ARGV[2])
if prev * (w - tonumber(ARGV[3])) / w + cur + 1 > tonumber(ARGV[1]) then return {0, prev, cur} end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return {1, prev, cur}
`)

	// KEYS[1] the key's theoretical arrival time in Unix µs. ARGV: now µs, emission interval
	// µs, burst tolerance µs. Returns {admitted, TAT} (the new TAT when admitted).
	gcraScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local t = tonumber(ARGV[2])
local tau = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local nxt = tat + t
if nxt - now > tau + t then return {0, tat} end
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.floor((nxt - now) / 1000) + 1000)
return {1, nxt}
`)
)

// ttlSlack keeps a counter a little past its last use, so a replica whose clock lags still
// finds it.
const ttlSlack = time.Second

// redisLimiter is a limit whose state lives in Redis: limit-count (fixed or sliding) or
// limit-req. One script call per check, pipelined with the concurrent ones (scriptPipeline).
// Redis expires idle keys itself, so there is nothing to sweep.
type redisLimiter struct {
	r    *Registry
	id   string
	op   string
	spec Spec
	g    gcra
	base string // KeyPrefix + "{" + id + "|" + spec hash + "|"
}

var _ limiter = (*redisLimiter)(nil)

func newRedisLimiter(r *Registry, id string, spec Spec) *redisLimiter {
	l := &redisLimiter{r: r, id: id, spec: spec, base: redisBase(id, spec)}
	switch {
	case spec.Kind == KindReq:
		l.op, l.g = "req", newGCRA(spec, time.Microsecond)
	case spec.Sliding:
		l.op = "sliding"
	default:
		l.op = "count"
	}
	return l
}

func redisBase(id string, spec Spec) string {
	return KeyPrefix + "{" + escapeTag(id) + "|" + spec.hash() + "|"
}

// escapeTag keeps s from ending the hash tag early (a '}' would) while staying injective.
func escapeTag(s string) string {
	if !strings.ContainsAny(s, "%}") {
		return s
	}
	return strings.NewReplacer("%", "%25", "}", "%7D").Replace(s)
}

// redisKey is the Redis key of request key; suffix names the window or the TAT.
func (l *redisLimiter) redisKey(key string, suffix string) string {
	return l.base + escapeTag(key) + "}:" + suffix
}

// Allow implements Limiter. Errors wrap ErrUnavailable (and ErrCircuitOpen while the breaker
// refuses calls), except when ctx ended.
func (l *redisLimiter) Allow(ctx context.Context, key string) (Decision, error) {
	now := l.r.now()
	var d Decision
	err := l.r.call(ctx, l.op, func(ctx context.Context) error {
		var err error
		switch l.op {
		case "req":
			d, err = l.req(ctx, now, key)
		case "sliding":
			d, err = l.sliding(ctx, now, key)
		default:
			d, err = l.fixed(ctx, now, key)
		}
		return err
	})
	if err != nil {
		return Decision{}, fmt.Errorf("checking limit %s: %w", l.id, err)
	}
	return d, nil
}

func (l *redisLimiter) fixed(ctx context.Context, now time.Time, key string) (Decision, error) {
	idx, elapsed := windowAt(now, l.spec.Window)
	reset := l.spec.Window - elapsed
	res, err := l.r.scripts.run(ctx, fixedScript, []string{l.redisKey(key, strconv.FormatInt(idx, 10))},
		l.spec.Count, ceilMillis(reset+ttlSlack))
	if err != nil {
		return Decision{}, err
	}
	if len(res) != 2 {
		return Decision{}, fmt.Errorf("unexpected script reply %v", res)
	}
	if res[0] == 0 {
		return Decision{Allowed: false, Limit: l.spec.Count, Remaining: 0, Reset: reset}, nil
	}
	return Decision{Allowed: true, Limit: l.spec.Count, Remaining: max(0, l.spec.Count-int(res[1])), Reset: reset}, nil
}

func (l *redisLimiter) sliding(ctx context.Context, now time.Time, key string) (Decision, error) {
	w := l.spec.Window
	idx, elapsed := windowAt(now, w)
	// The previous window's counter is read as the current one for a whole window more.
	ttl := w - elapsed + w + ttlSlack
	res, err := l.r.scripts.run(ctx, slidingScript,
		[]string{l.redisKey(key, strconv.FormatInt(idx, 10)), l.redisKey(key, strconv.FormatInt(idx-1, 10))},
		l.spec.Count, w.Milliseconds(), elapsed.Milliseconds(), ceilMillis(ttl))
	if err != nil {
		return Decision{}, err
	}
	if len(res) != 3 {
		return Decision{}, fmt.Errorf("unexpected script reply %v", res)
	}
	return slidingDescribe(l.spec.Count, res[1], res[2], elapsed, w, res[0] == 1), nil
}

func (l *redisLimiter) req(ctx context.Context, now time.Time, key string) (Decision, error) {
	us := now.UnixMicro()
	res, err := l.r.scripts.run(ctx, gcraScript, []string{l.redisKey(key, "tat")},
		us, l.g.interval, l.g.tolerance)
	if err != nil {
		return Decision{}, err
	}
	if len(res) != 2 {
		return Decision{}, fmt.Errorf("unexpected script reply %v", res)
	}
	if res[0] == 0 {
		return l.g.rejected(us, res[1]), nil
	}
	return l.g.admitted(us, res[1]), nil
}

func (l *redisLimiter) config() Spec { return l.spec }
func (l *redisLimiter) close()       {}

func ceilMillis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}
