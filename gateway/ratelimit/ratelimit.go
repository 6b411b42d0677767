// Package ratelimit implements the gateway's rate limits: limit-count (fixed and sliding
// windows) and limit-req (leaky bucket), kept in memory or shared across replicas on Redis.
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
	// Limit is the configured count per window (or burst for limit-req).
	Limit int
	// Remaining is what is left in the current window after this request (never negative).
	Remaining int
	// Reset is the time until the window (or bucket) frees capacity again.
	Reset time.Duration
}

// ErrUnavailable marks errors of a limiter whose shared store cannot be reached.
var ErrUnavailable = errors.New("rate limit store unavailable")
