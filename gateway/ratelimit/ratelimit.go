// Package ratelimit implements the gateway's rate limits: limit-count (fixed and sliding
// windows) and limit-req (leaky bucket), kept in memory or shared across replicas on Redis.
//
// A Registry builds the limiters of a loaded policy from their Specs and keeps them across
// reloads. Windows are aligned to wall time (multiples of the window since the Unix epoch),
// so replicas agree on them. In memory, the keys of all limits of one kind share sharded maps
// (so that a limit costs its spec, not maps of its own), their per-key state updated with
// atomics; a janitor evicts keys whose state has returned to a fresh key's.
// On Redis, each check is one atomic Lua script whose keys share a Cluster hash tag; the
// client's clock is passed to the scripts. A circuit breaker stops calling a failing Redis
// for a cool-down so that an outage costs requests nothing but an immediate ErrUnavailable.
package ratelimit

import (
	"context"
	"errors"
	"time"
)

// Limiter decides whether one more request fits a limit.
//
// Allow takes one unit for key. The returned Decision is the answer: Allowed false is a
// negative answer (reject with the limit's rejected_code). An error means the limiter could not
// decide (its store is unreachable); the caller applies the limit's allow_degradation. Errors
// of an unreachable store wrap ErrUnavailable.
type Limiter interface {
	Allow(ctx context.Context, key string) (Decision, error)
}

// Decision is a limiter's answer, with what the X-RateLimit-* headers report.
type Decision struct {
	Allowed bool
	// Limit is the configured count per window (for limit-req burst+1, the most requests
	// admitted at once).
	Limit int
	// Remaining is what is left in the current window after this request (never negative).
	Remaining int
	// Reset is the time until the window (or bucket) frees capacity again: for limit-count
	// the end of the current window (for a sliding window with nothing left, the time until
	// one more request fits), for limit-req the time until one more request would be admitted
	// (zero while there is room).
	Reset time.Duration
}

// ErrUnavailable marks errors of a limiter whose shared store cannot be reached.
var ErrUnavailable = errors.New("rate limit store unavailable")
