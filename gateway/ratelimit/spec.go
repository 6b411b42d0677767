package ratelimit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Kinds of limit a Spec describes.
const (
	// KindCount is APISIX's limit-count: at most Count requests per Window.
	KindCount = "count"
	// KindReq is APISIX's limit-req with nodelay: a GCRA (leaky bucket) of Rate requests per
	// second that admits Burst requests above the rate at once and rejects the rest.
	KindReq = "req"
)

// Bounds of a Spec. Counts stay below 2^31 because a local fixed-window counter packs its
// count into 32 bits; the window and rate bounds keep the Redis arithmetic (milliseconds and
// microseconds) meaningful.
const (
	MaxCount  = math.MaxInt32
	MinWindow = time.Millisecond
	MaxRate   = 1e6
	// MaxDrain bounds limit-req's (Burst+1)/Rate, the time a full bucket takes to drain, so
	// that arrival times stay far from int64 nanosecond overflow.
	MaxDrain = 365 * 24 * time.Hour
)

// Spec is one configured limit, fully defaulted by the caller.
type Spec struct {
	// Kind is KindCount or KindReq.
	Kind string
	// Count is limit-count's number of requests per Window.
	Count int
	// Window is limit-count's time window. Windows are aligned to wall time (the Unix epoch),
	// so every replica sharing a Redis agrees on where a window starts.
	Window time.Duration
	// Sliding selects limit-count's sliding-window counter (window_type sliding): the previous
	// window's count weighted by how much of it still overlaps the sliding window, plus the
	// current window's count.
	Sliding bool
	// Rate is limit-req's sustained rate in requests per second.
	Rate float64
	// Burst is limit-req's number of requests admitted at once above the rate.
	Burst float64
	// Redis selects the shared store (policy redis); false keeps counters in this process.
	Redis bool
	// SyncInterval, for a Redis limit-count with fixed windows only, counts locally and
	// reconciles with Redis every interval instead of one Redis round trip per request (Kong's
	// sync_rate); requests then never wait for Redis, and a window may admit about
	// (replicas-1) × per-replica rate × SyncInterval more than Count (see syncCount). Zero is
	// exact counting.
	SyncInterval time.Duration
}

// Validate reports every problem of s, joined. It has no side effects, so configuration
// loading can call it before building anything.
func (s Spec) Validate() error {
	var errs []error
	switch s.Kind {
	case KindCount:
		if s.Count < 1 || s.Count > MaxCount {
			errs = append(errs, fmt.Errorf("count %d out of range [1, %d]", s.Count, MaxCount))
		}
		if s.Window < MinWindow {
			errs = append(errs, fmt.Errorf("window %s shorter than %s", s.Window, MinWindow))
		}
		if s.SyncInterval < 0 {
			errs = append(errs, fmt.Errorf("sync interval %s negative", s.SyncInterval))
		}
		if s.SyncInterval > 0 && !s.Redis {
			errs = append(errs, errors.New("sync interval needs the redis policy"))
		}
		if s.SyncInterval > 0 && s.Sliding {
			errs = append(errs, errors.New("sync interval supports fixed windows only"))
		}
	case KindReq:
		if !(s.Rate > 0 && s.Rate <= MaxRate) {
			errs = append(errs, fmt.Errorf("rate %g out of range (0, %g]", s.Rate, float64(MaxRate)))
		}
		if !(s.Burst >= 0 && s.Burst <= MaxCount) {
			errs = append(errs, fmt.Errorf("burst %g out of range [0, %d]", s.Burst, MaxCount))
		}
		if s.Rate > 0 && s.Burst >= 0 && (s.Burst+1)/s.Rate > MaxDrain.Seconds() {
			errs = append(errs, fmt.Errorf("burst %g at rate %g takes longer than %s to drain", s.Burst, s.Rate, MaxDrain))
		}
		if s.SyncInterval != 0 {
			errs = append(errs, errors.New("sync interval applies to limit-count only"))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown limit kind %q", s.Kind))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("validating rate limit: %w", err)
	}
	return nil
}

// hash is a short digest of the fields that give counters their meaning. Redis keys carry it,
// so a changed limit starts from fresh counters while an unchanged one (across reloads and
// replicas) keeps them; the policy and sync interval only change where counting happens.
func (s Spec) hash() string {
	b := make([]byte, 0, 64)
	b = append(b, s.Kind...)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(s.Count), 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(s.Window), 10)
	b = append(b, '|')
	b = strconv.AppendBool(b, s.Sliding)
	b = append(b, '|')
	b = strconv.AppendFloat(b, s.Rate, 'g', -1, 64)
	b = append(b, '|')
	b = strconv.AppendFloat(b, s.Burst, 'g', -1, 64)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:4])
}
