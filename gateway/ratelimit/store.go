package ratelimit

import (
	"hash/maphash"
	"maps"
	"strings"
	"sync"
)

// shardBits spreads keys over enough locks that request goroutines rarely meet on one.
const (
	shardBits  = 6
	shardCount = 1 << shardBits
)

// storeKey names one request key of one owner (a limiter). The owner pointer both keeps the
// keys of limiters sharing a store apart and gives the sweep the owner's parameters (its
// window) without storing them per key.
type storeKey[O any] struct {
	owner *O
	key   string
}

// store is a sharded map from (owner, request key) to per-key state. A Registry keeps one
// store per kind of local limit, shared by all its limiters of that kind, so that a limiter
// costs only its spec however many there are: with one store per limiter a million consumer
// limits cost gigabytes of empty shards.
//
// Lookups of existing keys take a shard's read lock only and never allocate; the per-key state
// itself is updated with atomics (or its own mutex), so the shard lock is never held while
// deciding.
//
// Eviction protocol: sweep removes an entry only under the shard's write lock and only after
// the idle callback has marked it dead. A goroutine that fetched the entry before that sees
// the mark when it tries to update it and looks the key up again, so no request is ever
// counted on an entry that has left the map.
type store[O, T any] struct {
	seed   maphash.Seed
	shards [shardCount]shard[O, T]
}

type shard[O, T any] struct {
	mu sync.RWMutex
	m  map[storeKey[O]]*T
	// peak is the most keys m has held since it was made: a Go map never gives back its
	// table, so sweep remakes one that has shrunk well below it.
	peak int
	// Keeps neighbouring shards' locks off one cache line.
	_ [64]byte
}

func newStore[O, T any]() *store[O, T] {
	s := &store[O, T]{seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].m = make(map[storeKey[O]]*T)
	}
	return s
}

// shard picks the shard of owner's key. Hashing the owner too spreads one request key used by
// many limiters (a client address on every route) over the shards.
func (s *store[O, T]) shard(owner *O, key string) *shard[O, T] {
	h := maphash.String(s.seed, key) ^ maphash.Comparable(s.seed, owner)
	return &s.shards[h>>(64-shardBits)]
}

// get returns owner's entry for key, creating a zero one when absent.
func (s *store[O, T]) get(owner *O, key string) *T {
	sh := s.shard(owner, key)
	sh.mu.RLock()
	e := sh.m[storeKey[O]{owner, key}]
	sh.mu.RUnlock()
	if e != nil {
		return e
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e = sh.m[storeKey[O]{owner, key}]; e == nil {
		e = new(T)
		// The caller's key may be a slice of a large request buffer: don't pin it.
		sh.m[storeKey[O]{owner, strings.Clone(key)}] = e
		sh.peak = max(sh.peak, len(sh.m))
	}
	return e
}

// sweep removes the entries for which markDead returns true. markDead runs under the shard's
// write lock and must, when it returns true, have marked the entry dead atomically with
// checking that it is idle.
//
// A shard left with under a quarter of its peak keys gets a fresh map, so that memory follows
// the keys in use (after a burst of clients, or a reload that dropped many limits); the copy
// is of the few keys left.
func (s *store[O, T]) sweep(markDead func(owner *O, e *T) bool) (removed int) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if markDead(k.owner, e) {
				delete(sh.m, k)
				removed++
			}
		}
		if len(sh.m) < sh.peak/4 {
			// Not maps.Clone: it copies the table, size and all.
			m := make(map[storeKey[O]]*T, len(sh.m))
			maps.Copy(m, sh.m)
			sh.m, sh.peak = m, len(m)
		}
		sh.mu.Unlock()
	}
	return removed
}

// len counts owner's keys held, or every key when owner is nil.
func (s *store[O, T]) len(owner *O) (n int) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		if owner == nil {
			n += len(sh.m)
		} else {
			for k := range sh.m {
				if k.owner == owner {
					n++
				}
			}
		}
		sh.mu.RUnlock()
	}
	return n
}

// snapshot appends every key and entry held, with its owner, to dst: for a pass over all keys
// that must not hold shard locks while it works.
func (s *store[O, T]) snapshot(dst []keyed[O, T]) []keyed[O, T] {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		for k, e := range sh.m {
			dst = append(dst, keyed[O, T]{owner: k.owner, key: k.key, e: e})
		}
		sh.mu.RUnlock()
	}
	return dst
}

type keyed[O, T any] struct {
	owner *O
	key   string
	e     *T
}
