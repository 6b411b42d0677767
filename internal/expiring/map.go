// Package expiring is a bounded map whose entries expire, shared by the providers that remember
// verified credentials, seen nonces and IdP decisions.
package expiring

import (
	"sync"
	"time"
)

// Map is a bounded map whose entries expire. Providers use it to remember
// verified credentials and seen nonces. It starts no goroutine: expired entries are dropped when
// read, and swept when the map is full, so it needs no Close.
type Map[K comparable, V any] struct {
	mu        sync.Mutex
	max       int
	entries   map[K]entry[V]
	lastSweep time.Time
}

type entry[V any] struct {
	v     V
	until time.Time
}

// sweepEvery bounds how often a full map is scanned for expired entries, so that a full map of
// live entries does not cost a full scan on every insert.
const sweepEvery = time.Second

// New returns an empty map that holds at most max entries.
func New[K comparable, V any](max int) *Map[K, V] {
	return &Map[K, V]{max: max, entries: make(map[K]entry[V])}
}

// Get returns the live value stored under k.
func (m *Map[K, V]) Get(k K, now time.Time) (V, bool) {
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

// Put stores v under k until the given time. When the map is full of live entries an arbitrary
// one is evicted: a cache may forget, it must not grow.
func (m *Map[K, V]) Put(k K, v V, until, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, exists := m.entries[k]; !exists && !m.makeRoom(now) {
		for victim := range m.entries {
			delete(m.entries, victim)
			break
		}
	}
	m.entries[k] = entry[V]{v: v, until: until}
}

// AddIfAbsent stores v under k unless a live entry exists. Unlike Put it never evicts a live
// entry, because forgetting a nonce would let it be replayed: full reports that nothing was
// stored for lack of room.
func (m *Map[K, V]) AddIfAbsent(k K, v V, until, now time.Time) (added, full bool) {
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
	m.entries[k] = entry[V]{v: v, until: until}
	return true, false
}

// makeRoom reports whether one more entry fits, sweeping expired entries when the map is full.
// m.mu must be held.
func (m *Map[K, V]) makeRoom(now time.Time) bool {
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
