package ratelimit

import (
	"hash/maphash"
	"strings"
	"sync"
)

// shardCount spreads keys over enough locks that request goroutines rarely meet on one;
// a power of two so that picking a shard is a mask.
const shardCount = 64

// store is a sharded map from request key to per-key state. Lookups of existing keys take a
// shard's read lock only and never allocate; the per-key state itself is updated with atomics
// (or its own mutex), so the shard lock is never held while deciding.
//
// Eviction protocol: sweep removes an entry only under the shard's write lock and only after
// the idle callback has marked it dead. A goroutine that fetched the entry before that sees
// the mark when it tries to update it and looks the key up again, so no request is ever
// counted on an entry that has left the map.
type store[T any] struct {
	seed   maphash.Seed
	shards [shardCount]shard[T]
}

type shard[T any] struct {
	mu sync.RWMutex
	m  map[string]*T
	// Keeps neighbouring shards' locks off one cache line.
	_ [64]byte
}

func newStore[T any]() *store[T] {
	s := &store[T]{seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].m = make(map[string]*T)
	}
	return s
}

// get returns key's entry, creating a zero one when absent.
func (s *store[T]) get(key string) *T {
	sh := &s.shards[maphash.String(s.seed, key)&(shardCount-1)]
	sh.mu.RLock()
	e := sh.m[key]
	sh.mu.RUnlock()
	if e != nil {
		return e
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e = sh.m[key]; e == nil {
		e = new(T)
		// The caller's key may be a slice of a large request buffer: don't pin it.
		sh.m[strings.Clone(key)] = e
	}
	return e
}

// sweep removes the entries for which markDead returns true. markDead runs under the shard's
// write lock and must, when it returns true, have marked the entry dead atomically with
// checking that it is idle.
func (s *store[T]) sweep(markDead func(*T) bool) (removed int) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if markDead(e) {
				delete(sh.m, k)
				removed++
			}
		}
		sh.mu.Unlock()
	}
	return removed
}

// len counts the keys held.
func (s *store[T]) len() (n int) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// snapshot appends every key and entry held to dst, for a pass over all keys that must not
// hold shard locks while it works.
func (s *store[T]) snapshot(dst []keyed[T]) []keyed[T] {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		for k, e := range sh.m {
			dst = append(dst, keyed[T]{key: k, e: e})
		}
		sh.mu.RUnlock()
	}
	return dst
}

type keyed[T any] struct {
	key string
	e   *T
}
