package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
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
//
// Its keys live in the Registry's sync store and are reconciled by the Registry's loop for
// its interval (syncs), with those of every other limit of that interval.
type syncCount struct {
	r        *Registry
	id       string
	count    int
	window   time.Duration
	interval time.Duration
	base     string
	spec     Spec
	closed   atomic.Bool
	once     sync.Once
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

func newSyncCount(r *Registry, id string, spec Spec) *syncCount {
	l := &syncCount{
		r: r, id: id, count: spec.Count, window: spec.Window, interval: spec.SyncInterval,
		base: redisBase(id, spec), spec: spec,
	}
	r.syncs.join(l.interval)
	return l
}

// Allow implements Limiter. It never fails.
func (l *syncCount) Allow(_ context.Context, key string) (Decision, error) {
	idx, elapsed := windowAt(l.r.now(), l.window)
	reset := l.window - elapsed
	for {
		e := l.r.syncs.keys.get(l, key)
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

// sync reconciles this limiter's keys now, outside its interval's loop.
func (l *syncCount) sync(ctx context.Context) error {
	return l.r.syncs.sync(ctx, func(o *syncCount) bool { return o == l })
}

func (l *syncCount) config() Spec { return l.spec }

// close takes the limiter out of the syncs: its keys are no longer pushed, and its interval's
// loop stops with its last limiter. A snapshot still serving it keeps deciding locally.
func (l *syncCount) close() {
	l.once.Do(func() {
		l.closed.Store(true)
		l.r.syncs.leave(l.interval)
	})
}

// syncs is a Registry's machinery for sync_interval limits: one store for the keys of all of
// them, and one goroutine per distinct interval that reconciles the keys of all its limits in
// pipelined round trips. (A goroutine and a store per limit cost a policy of 20k consumers with
// their own sync limits 58 % of a core while idle, and ~6 KB per limit.)
type syncs struct {
	r    *Registry
	keys *store[syncCount, syncEntry]

	mu     sync.Mutex
	loops  map[time.Duration]*syncLoop
	closed bool
}

// syncLoop is the goroutine of one interval and the number of limits it serves.
type syncLoop struct {
	limits int
	stop   chan struct{}
	done   chan struct{}
}

// syncBatch bounds the keys of one round trip, so that one pipeline stays well within the
// Redis timeout.
const syncBatch = 1000

func newSyncs(r *Registry) *syncs {
	return &syncs{r: r, keys: newStore[syncCount, syncEntry](), loops: map[time.Duration]*syncLoop{}}
}

// join counts a limit of interval, starting the interval's loop for its first one.
func (s *syncs) join(interval time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return // a late limiter of a closed Registry decides locally, without a loop
	}
	lp := s.loops[interval]
	if lp == nil {
		lp = &syncLoop{stop: make(chan struct{}), done: make(chan struct{})}
		s.loops[interval] = lp
		go s.run(interval, lp)
	}
	lp.limits++
}

// leave uncounts a limit of interval, stopping the loop with its last one.
func (s *syncs) leave(interval time.Duration) {
	s.mu.Lock()
	lp := s.loops[interval]
	if lp == nil {
		s.mu.Unlock()
		return
	}
	lp.limits--
	if lp.limits > 0 {
		s.mu.Unlock()
		return
	}
	delete(s.loops, interval)
	s.mu.Unlock()
	close(lp.stop)
	<-lp.done
}

// close stops every loop.
func (s *syncs) close() {
	s.mu.Lock()
	loops := s.loops
	s.loops, s.closed = map[time.Duration]*syncLoop{}, true
	s.mu.Unlock()
	for _, lp := range loops {
		close(lp.stop)
		<-lp.done
	}
}

func (s *syncs) run(interval time.Duration, lp *syncLoop) {
	defer close(lp.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-lp.stop:
			return
		case <-t.C:
			err := s.sync(context.Background(), func(l *syncCount) bool { return l.interval == interval })
			if err != nil {
				s.r.logger.Debug("rate limit sync failed", slog.Duration("sync_interval", interval), slog.Any("error", err))
			}
		}
	}
}

// syncPush is one key's reconciliation: its unpushed admissions go to Redis, the total comes
// back.
type syncPush struct {
	e     *syncEntry
	win   int64
	delta int64
	key   string
	ttl   int64
	cmd   *redis.Cmd
}

// sync pushes the pending admissions of the current-window keys of the open limits that match
// and reads their totals back, syncBatch keys per pipelined round trip (go-redis splits a
// pipeline by node on a cluster).
func (s *syncs) sync(ctx context.Context, match func(*syncCount) bool) error {
	now := s.r.now()
	var pushes []syncPush
	for _, k := range s.keys.snapshot(nil) {
		l := k.owner
		if l.closed.Load() || !match(l) {
			continue
		}
		idx, elapsed := windowAt(now, l.window)
		k.e.mu.Lock()
		current, delta := k.e.win == idx && !k.e.dead, k.e.pending
		k.e.mu.Unlock()
		if current {
			pushes = append(pushes, syncPush{e: k.e, win: idx, delta: delta,
				key: l.base + escapeTag(k.key) + "}:" + strconv.FormatInt(idx, 10),
				ttl: ceilMillis(l.window - elapsed + ttlSlack)})
		}
	}
	var errs []error
	for len(pushes) > 0 {
		n := min(len(pushes), syncBatch)
		if err := s.push(ctx, pushes[:n]); err != nil {
			errs = append(errs, err)
		}
		pushes = pushes[n:]
	}
	return errors.Join(errs...)
}

// push runs one batch as a pipeline of EVALSHA (EVAL for a script Redis does not know, after a
// restart or SCRIPT FLUSH) and records the totals.
func (s *syncs) push(ctx context.Context, batch []syncPush) error {
	err := s.r.call(ctx, "sync", func(ctx context.Context) error {
		run := func(eval bool) error {
			pipe := s.r.rdb.Pipeline()
			n := 0
			for i := range batch {
				p := &batch[i]
				switch {
				case eval && (p.cmd == nil || !redis.HasErrorPrefix(p.cmd.Err(), "NOSCRIPT")):
					continue
				case eval:
					p.cmd = syncScript.Eval(ctx, pipe, []string{p.key}, p.delta, p.ttl)
				default:
					p.cmd = syncScript.EvalSha(ctx, pipe, []string{p.key}, p.delta, p.ttl)
				}
				n++
			}
			if n == 0 {
				return nil
			}
			_, err := pipe.Exec(ctx)
			return err
		}
		if err := run(false); err == nil || !redis.HasErrorPrefix(err, "NOSCRIPT") {
			return err
		}
		return run(true)
	})
	if err != nil {
		return fmt.Errorf("syncing %d rate limit keys: %w", len(batch), err)
	}
	for i := range batch {
		p := &batch[i]
		total, err := p.cmd.Int64()
		if err != nil {
			continue
		}
		p.e.mu.Lock()
		if p.e.win == p.win {
			p.e.global = total
			p.e.pending -= p.delta // admissions made during the call stay pending
		}
		p.e.mu.Unlock()
	}
	return nil
}

// sweep evicts keys of past windows; their counts no longer matter.
func (s *syncs) sweep(now time.Time) int {
	return s.keys.sweep(func(l *syncCount, e *syncEntry) bool {
		idx, _ := windowAt(now, l.window)
		e.mu.Lock()
		defer e.mu.Unlock()
		e.dead = e.win != idx
		return e.dead
	})
}
