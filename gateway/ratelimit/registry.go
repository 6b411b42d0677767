package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RegistryOptions are a Registry's dependencies and tunables. Zero values take the defaults.
type RegistryOptions struct {
	Logger *slog.Logger
	// Redis is the shared store of limits with Redis set; nil when none is configured, and
	// then such limits fail with ErrUnavailable. The Registry does not close it. Build it with
	// ContextTimeoutEnabled so that RedisTimeout bounds socket reads, not only waits.
	Redis redis.UniversalClient
	// RedisTimeout bounds each Redis call (default 100ms).
	RedisTimeout time.Duration
	// Now is the clock (default time.Now). Windows, buckets and the breaker's cool-down use
	// it; the Redis scripts receive its reading too, so replicas need synchronised clocks.
	Now func() time.Time
	// SweepInterval is how often idle keys are evicted (default 30s; negative disables the
	// janitor).
	SweepInterval time.Duration
	// BreakerThreshold is how many consecutive Redis failures open the circuit breaker
	// (default 5); BreakerCooldown how long it stays open before a probe (default 1s).
	BreakerThreshold int
	BreakerCooldown  time.Duration

	// OnRedisCall, if set, observes every Redis call: op is "count", "sliding", "req",
	// "sync" or "ping"; err is nil on success. It runs on the request path: keep it cheap.
	OnRedisCall func(op string, d time.Duration, err error)
	// OnBreakerChange, if set, observes the breaker opening (true) and closing (false).
	OnBreakerChange func(open bool)
	// OnRoundTrip, if set, is told about each round trip of limit checks to Redis, with the
	// contexts of the checks it carries (under load one round trip carries the checks of many
	// requests), and returns what is told its end. Tracing makes it a span of each request.
	OnRoundTrip func(callers []context.Context, checks int) (end func(error))
}

// Registry builds and keeps the limiters of the loaded policy, so that counters survive a
// reload that leaves a limit unchanged. It is safe for concurrent use.
type Registry struct {
	logger   *slog.Logger
	rdb      redis.UniversalClient
	scripts  *scriptPipeline // nil without rdb
	timeout  time.Duration
	now      func() time.Time
	onCall   func(op string, d time.Duration, err error)
	breaker  *breaker
	errNoRdb error

	// local holds the keys of every in-memory limiter, syncs those of the sync_interval ones.
	local *localStores
	syncs *syncs

	mu       sync.Mutex
	limiters map[string]limiter
	closed   bool

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// NewRegistry returns a Registry; it starts the janitor that evicts idle keys.
func NewRegistry(opts RegistryOptions) *Registry {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RedisTimeout <= 0 {
		opts.RedisTimeout = 100 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = 30 * time.Second
	}
	if opts.BreakerThreshold <= 0 {
		opts.BreakerThreshold = 5
	}
	if opts.BreakerCooldown <= 0 {
		opts.BreakerCooldown = time.Second
	}
	r := &Registry{
		logger:   opts.Logger,
		rdb:      opts.Redis,
		timeout:  opts.RedisTimeout,
		now:      opts.Now,
		onCall:   opts.OnRedisCall,
		breaker:  newBreaker(opts.BreakerThreshold, opts.BreakerCooldown, opts.Logger, opts.OnBreakerChange),
		errNoRdb: fmt.Errorf("%w: no redis configured", ErrUnavailable),
		local:    newLocalStores(opts.Now),
		limiters: make(map[string]limiter),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	r.syncs = newSyncs(r)
	if r.rdb != nil {
		r.scripts = newScriptPipeline(r.rdb, r.timeout, opts.OnRoundTrip)
	}
	if r.rdb != nil && !contextTimeouts(r.rdb) {
		r.logger.Warn("redis client ignores context deadlines: a hung redis holds requests for the client's read timeout, not the rate limit timeout")
	}
	if opts.SweepInterval > 0 {
		go r.janitor(opts.SweepInterval)
	} else {
		close(r.done)
	}
	return r
}

func contextTimeouts(c redis.UniversalClient) bool {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	}
	return true // unknown kind: don't guess
}

// Limiter returns the limiter of id with spec. id names the limit's owner (e.g.
// "consumer:FetchBot/limit-count"); an unchanged spec returns the very limiter, counters
// included, returned before for id, and a changed one replaces it with a fresh limiter.
//
// Call Spec.Validate when loading configuration: an invalid spec yields a limiter whose every
// Allow fails (without ErrUnavailable). A Redis spec on a Registry without Redis fails with
// ErrUnavailable, so allow_degradation applies.
func (r *Registry) Limiter(id string, spec Spec) Limiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.limiters[id]; ok {
		if old.config() == spec {
			return old
		}
		old.close()
	}
	lim := r.build(id, spec)
	if r.closed {
		lim.close() // a late caller still gets a working limiter, without goroutines
	}
	r.limiters[id] = lim
	return lim
}

func (r *Registry) build(id string, spec Spec) limiter {
	if err := spec.Validate(); err != nil {
		r.logger.Error("invalid rate limit, every request to it fails", slog.String("limit", id), slog.Any("error", err))
		return &failing{spec: spec, err: fmt.Errorf("limit %s: %w", id, err)}
	}
	if spec.Redis {
		if r.rdb == nil {
			r.logger.Error("redis rate limit without redis configured", slog.String("limit", id))
			return &failing{spec: spec, err: fmt.Errorf("checking limit %s: %w", id, r.errNoRdb)}
		}
		if spec.Kind == KindCount && spec.SyncInterval > 0 {
			return newSyncCount(r, id, spec)
		}
		return newRedisLimiter(r, id, spec)
	}
	switch {
	case spec.Kind == KindReq:
		return newLocalReq(spec, r.local)
	case spec.Sliding:
		return newLocalSliding(spec, r.local)
	default:
		return newLocalFixed(spec, r.local)
	}
}

// Retain drops the limiters whose id is not in ids (after a reload) and stops their
// goroutines. Limiters still held by an old snapshot keep working, detached. The in-memory
// keys of dropped limiters are evicted by the janitor once idle, like any other key.
func (r *Registry) Retain(ids map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, l := range r.limiters {
		if !ids[id] {
			l.close()
			delete(r.limiters, id)
		}
	}
}

// Healthy is nil when no Redis is configured or Redis answers a PING within RedisTimeout.
// While the circuit breaker is open it fails at once; after the cool-down its PING is the
// probe that may close the breaker. Errors wrap ErrUnavailable.
func (r *Registry) Healthy(ctx context.Context) error {
	if r.rdb == nil {
		return nil
	}
	err := r.call(ctx, "ping", func(ctx context.Context) error {
		return r.rdb.Ping(ctx).Err()
	})
	if err != nil {
		return fmt.Errorf("checking redis health: %w", err)
	}
	return nil
}

// call runs one Redis call under the breaker and the timeout and reports it to the hook.
// Errors wrap ErrUnavailable, except when ctx itself ended.
func (r *Registry) call(ctx context.Context, op string, f func(ctx context.Context) error) error {
	probe, err := r.breaker.enter(r.now())
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	start := time.Now()
	err = f(cctx)
	elapsed := time.Since(start)
	cancel()
	if r.onCall != nil {
		r.onCall(op, elapsed, err)
	}
	switch {
	case err == nil:
		r.breaker.success(probe)
		return nil
	case ctx.Err() != nil:
		// The caller gave up (client went away): that says nothing about Redis.
		r.breaker.abandon(probe)
		return fmt.Errorf("calling redis: %w", ctx.Err())
	default:
		r.breaker.failure(r.now(), probe)
		return fmt.Errorf("calling redis: %w: %w", ErrUnavailable, err)
	}
}

func (r *Registry) janitor(every time.Duration) {
	defer close(r.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.sweep()
		}
	}
}

// sweep evicts idle keys of every limiter.
func (r *Registry) sweep() (removed int) { return r.sweepAt(r.now()) }

// sweepAt evicts the keys idle at now, those of dropped limiters included.
func (r *Registry) sweepAt(now time.Time) (removed int) {
	return r.local.sweep(now) + r.syncs.sweep(now)
}

// Close stops the janitor and every limiter's goroutines. It does not close the Redis
// client. Limiters keep answering after Close, without eviction.
func (r *Registry) Close() error {
	r.closeOnce.Do(func() {
		close(r.stop)
		<-r.done
		if r.scripts != nil {
			r.scripts.Close()
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, l := range r.limiters {
			l.close()
		}
		r.syncs.close()
		r.closed = true
	})
	return nil
}

// failing is the limiter of a spec that cannot work; it fails every check with err.
type failing struct {
	spec Spec
	err  error
}

var _ limiter = (*failing)(nil)

// Allow implements Limiter: it always fails.
func (f *failing) Allow(context.Context, string) (Decision, error) { return Decision{}, f.err }
func (f *failing) config() Spec                                    { return f.spec }
func (*failing) close()                                            {}
