package ratelimit

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// ErrCircuitOpen marks a check refused without calling Redis because Redis failed repeatedly
// and is cooling down. Such errors also wrap ErrUnavailable.
var ErrCircuitOpen = errors.New("circuit breaker open")

// breaker stops calling a failing Redis so that each request doesn't pay the timeout: after
// threshold consecutive failures it opens for cooldown, then lets one probe call through
// (half-open); the probe's success closes it, its failure opens it again.
//
// The common case (closed) costs one uncontended mutex; that is noise next to the network
// round trip it guards.
type breaker struct {
	threshold int
	cooldown  time.Duration
	logger    *slog.Logger
	onChange  func(open bool)
	errOpen   error // preallocated: refusing must be cheap

	mu        sync.Mutex
	failures  int
	open      bool
	openUntil time.Time
	probing   bool
}

func newBreaker(threshold int, cooldown time.Duration, logger *slog.Logger, onChange func(open bool)) *breaker {
	return &breaker{
		threshold: threshold, cooldown: cooldown, logger: logger, onChange: onChange,
		errOpen: fmt.Errorf("%w: %w", ErrUnavailable, ErrCircuitOpen),
	}
}

// enter asks to call Redis at now. It returns errOpen when the call must not be made; probe
// tells that this call is the half-open probe, whose outcome decides the state.
func (b *breaker) enter(now time.Time) (probe bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return false, nil
	}
	if now.Before(b.openUntil) || b.probing {
		return false, b.errOpen
	}
	b.probing = true
	return true, nil
}

// success records a call that Redis answered.
func (b *breaker) success(probe bool) {
	b.mu.Lock()
	b.failures = 0
	wasOpen := b.open
	if probe {
		b.probing = false
	}
	b.open = false
	b.mu.Unlock()
	if wasOpen {
		b.logger.Info("redis reachable again, rate limit circuit breaker closed")
		if b.onChange != nil {
			b.onChange(false)
		}
	}
}

// failure records a call that failed because of Redis.
func (b *breaker) failure(now time.Time, probe bool) {
	b.mu.Lock()
	b.failures++
	opened := false
	switch {
	case probe:
		b.probing = false
		b.openUntil = now.Add(b.cooldown)
	case !b.open && b.failures >= b.threshold:
		b.open, opened = true, true
		b.openUntil = now.Add(b.cooldown)
	}
	failures := b.failures
	b.mu.Unlock()
	if opened {
		b.logger.Warn("redis failing, rate limit circuit breaker open",
			slog.Int("consecutive_failures", failures), slog.Duration("cooldown", b.cooldown))
		if b.onChange != nil {
			b.onChange(true)
		}
	}
}

// abandon releases a probe whose call ended for a reason that says nothing about Redis (the
// caller gave up).
func (b *breaker) abandon(probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}
