package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// syncScript adds a replica's unpushed count to a window's counter and returns the total;
// with a zero delta it only reads. KEYS[1] counter. ARGV: delta, ttl ms.
var syncScript = redis.NewScript(`
local d = tonumber(ARGV[1])
if d > 0 then
  local c = redis.call('INCRBY', KEYS[1], d)
  if c == d then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return c
end
return tonumber(redis.call('GET', KEYS[1]) or '0')
`)

// syncCount is a Redis limit-count with fixed windows that decides locally and reconciles
// with Redis every SyncInterval (Kong's sync_rate): requests never wait for Redis and never
// fail because of it.
//
// Each replica admits while the last total it read from Redis plus what it admitted since
// stays below Count. Between two syncs the other replicas' admissions are unknown, so a window
// admits at most Count plus what the other replicas admit in one interval: with R replicas
// each admitting at rate q, the overshoot is at most × q × (SyncInterval plus one sync
// round trip), and never more than × Count. While Redis is unreachable each replica counts alone, i.e. up to R ×
// Count per window. The counters share the exact mode's Redis keys.
type syncCount struct {
	r        *Registry
	id       string
	count    int
	window   time.Duration
	interval time.Duration
	base     string
	spec     Spec
	// Its own store, not the Registry's shared ones: sync walks the keys of one limiter, and
	// the goroutine already costs more than the store.
	keys *store[syncCount, syncEntry]

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// syncEntry is one key's view of its window: the total last read from Redis (including this
// replica's pushed admissions) and the admissions not pushed yet.
type syncEntry struct {
	mu      sync.Mutex
	win     int64
	global  int64
	pending int64
	dead    bool
}

var _ sweeper = (*syncCount)(nil)

func newSyncCount(r *Registry, id string, spec Spec) *syncCount {
	l := &syncCount{
		r: r, id: id, count: spec.Count, window: spec.Window, interval: spec.SyncInterval,
		base: redisBase(id, spec), spec: spec, keys: newStore[syncCount, syncEntry](),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go l.run()
	return l
}

// Allow implements Limiter. It never fails.
func (l *syncCount) Allow(_ context.Context, key string) (Decision, error) {
	idx, elapsed := windowAt(l.r.now(), l.window)
	reset := l.window - elapsed
	for {
		e := l.keys.get(l, key)
		e.mu.Lock()
		if e.dead {
			e.mu.Unlock()
			continue
		}
		if e.win != idx {
			// A past window's unpushed admissions no longer matter.
			e.win, e.global, e.pending = idx, 0, 0
		}
		used := e.global + e.pending
		if used >= int64(l.count) {
			e.mu.Unlock()
			return Decision{Allowed: false, Limit: l.count, Remaining: 0, Reset: reset}, nil
		}
		e.pending++
		e.mu.Unlock()
		return Decision{Allowed: true, Limit: l.count, Remaining: l.count - int(used) - 1, Reset: reset}, nil
	}
}

func (l *syncCount) run() {
	defer close(l.done)
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if err := l.sync(context.Background()); err != nil {
				l.r.logger.Debug("rate limit sync failed", slog.String("limit", l.id), slog.Any("error", err))
			}
		}
	}
}

// sync pushes every current-window key's pending admissions and reads back the totals, in
// one pipelined round trip (go-redis splits it by node on a cluster).
func (l *syncCount) sync(ctx context.Context) error {
	idx, elapsed := windowAt(l.r.now(), l.window)
	ttl := ceilMillis(l.window - elapsed + ttlSlack)
	suffix := strconv.FormatInt(idx, 10)
	type push struct {
		e     *syncEntry
		delta int64
		cmd   *redis.Cmd
	}
	var pushes []push
	var keys []string
	for _, k := range l.keys.snapshot(nil) {
		k.e.mu.Lock()
		current, delta := k.e.win == idx && !k.e.dead, k.e.pending
		k.e.mu.Unlock()
		if current {
			pushes = append(pushes, push{e: k.e, delta: delta})
			keys = append(keys, l.base+escapeTag(k.key)+"}:"+suffix)
		}
	}
	if len(pushes) == 0 {
		return nil
	}
	err := l.r.call(ctx, "sync", func(ctx context.Context) error {
		pipe := l.r.rdb.Pipeline()
		for i := range pushes {
			// EVAL, not EVALSHA: a pipeline cannot fall back on NOSCRIPT, and this runs
			// once per interval, not per request.
			pushes[i].cmd = syncScript.Eval(ctx, pipe, keys[i:i+1], pushes[i].delta, ttl)
		}
		_, err := pipe.Exec(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("syncing limit %s: %w", l.id, err)
	}
	for _, p := range pushes {
		total, err := p.cmd.Int64()
		if err != nil {
			continue // Exec reported it already
		}
		p.e.mu.Lock()
		if p.e.win == idx {
			p.e.global = total
			p.e.pending -= p.delta // admissions made during the call stay pending
		}
		p.e.mu.Unlock()
	}
	return nil
}

// sweep evicts keys of past windows; their counts no longer matter.
func (l *syncCount) sweep(now time.Time) int {
	idx, _ := windowAt(now, l.window)
	return l.keys.sweep(func(_ *syncCount, e *syncEntry) bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.dead = e.win != idx
		return e.dead
	})
}

func (l *syncCount) config() Spec { return l.spec }

func (l *syncCount) close() {
	l.once.Do(func() {
		close(l.stop)
		<-l.done
	})
}
