package ratelimit

// newSyncCount is a placeholder until the sync mode exists: exact Redis counting.
func newSyncCount(r *Registry, id string, spec Spec) limiter { return newRedisLimiter(r, id, spec) }
