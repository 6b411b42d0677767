package idp

import (
	"net/http"
	"sync"
	"time"
)

// expiringMap is a bounded map whose entries expire. The local providers use it to remember
// verified credentials and seen nonces. It starts no goroutine: expired entries are dropped when
// read, and swept when the map is full, so it needs no Close.
type expiringMap[K comparable, V any] struct {
	mu        sync.Mutex
	max       int
	entries   map[K]expiringEntry[V]
	lastSweep time.Time
}

type expiringEntry[V any] struct {
	v     V
	until time.Time
}

// sweepEvery bounds how often a full map is scanned for expired entries, so that a full map of
// live entries does not cost a full scan on every insert.
const sweepEvery = time.Second

func newExpiringMap[K comparable, V any](max int) *expiringMap[K, V] {
	return &expiringMap[K, V]{max: max, entries: make(map[K]expiringEntry[V])}
}

// get returns the live value stored under k.
func (m *expiringMap[K, V]) get(k K, now time.Time) (V, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[k]
	if !ok {
		var zero V
		return zero, false
	}
	if !now.Before(e.until) {
		delete(m.entries, k)
		var zero V
		return zero, false
	}
	return e.v, true
}

// put stores v under k until the given time. When the map is full of live entries an arbitrary
// one is evicted: a cache may forget, it must not grow.
func (m *expiringMap[K, V]) put(k K, v V, until, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, exists := m.entries[k]; !exists && !m.makeRoom(now) {
		for victim := range m.entries {
			delete(m.entries, victim)
			break
		}
	}
	m.entries[k] = expiringEntry[V]{v: v, until: until}
}

// addIfAbsent stores v under k unless a live entry exists. Unlike put it never evicts a live
// entry, because forgetting a nonce would let it be replayed: full reports that nothing was
// stored for lack of room.
func (m *expiringMap[K, V]) addIfAbsent(k K, v V, until, now time.Time) (added, full bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[k]; ok {
		if now.Before(e.until) {
			return false, false
		}
		delete(m.entries, k)
	}
	if !m.makeRoom(now) {
		return false, true
	}
	m.entries[k] = expiringEntry[V]{v: v, until: until}
	return true, false
}

// makeRoom reports whether one more entry fits, sweeping expired entries when the map is full.
// m.mu must be held.
func (m *expiringMap[K, V]) makeRoom(now time.Time) bool {
	if len(m.entries) < m.max {
		return true
	}
	if now.Sub(m.lastSweep) >= sweepEvery || now.Before(m.lastSweep) {
		m.lastSweep = now
		for k, e := range m.entries {
			if !now.Before(e.until) {
				delete(m.entries, k)
			}
		}
	}
	return len(m.entries) < m.max
}

// deleteHeaderValues removes the values of the named header that ours accepts and keeps the others.
func deleteHeaderValues(r *http.Request, name string, ours func(string) bool) {
	vs := r.Header.Values(name)
	if len(vs) == 0 {
		return
	}
	keep := make([]string, 0, len(vs))
	for _, v := range vs {
		if !ours(v) {
			keep = append(keep, v)
		}
	}
	if len(keep) == 0 {
		r.Header.Del(name)
		return
	}
	r.Header[http.CanonicalHeaderKey(name)] = keep
}
