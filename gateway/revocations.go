package gateway

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis/portcullis/idp"
)

// RedisRevocations shares the browser sessions' logouts between replicas in Redis: a
// back-channel logout posted to one replica ends the session on all. Its client is set once
// the policy's redis block is known (the providers are built before); without one it is not
// Enabled and each replica keeps its own list.
type RedisRevocations struct {
	client atomic.Pointer[redisClientBox]
}

type redisClientBox struct{ c redis.UniversalClient }

var _ idp.RevocationStore = (*RedisRevocations)(nil)

// revocationPrefix keeps the keys apart from the rate-limit counters.
const revocationPrefix = "portcullis:revoked:"

// SetClient makes the store use c; nil turns it off.
func (s *RedisRevocations) SetClient(c redis.UniversalClient) {
	if c == nil {
		s.client.Store(nil)
		return
	}
	s.client.Store(&redisClientBox{c: c})
}

// Enabled reports whether a Redis client is set.
func (s *RedisRevocations) Enabled() bool { return s != nil && s.client.Load() != nil }

func (s *RedisRevocations) redis() (redis.UniversalClient, error) {
	b := s.client.Load()
	if b == nil {
		return nil, errors.New("no redis client")
	}
	return b.c, nil
}

// Revoke records key until ttl has passed.
func (s *RedisRevocations) Revoke(ctx context.Context, key string, value int64, ttl time.Duration) error {
	c, err := s.redis()
	if err != nil {
		return err
	}
	return c.Set(ctx, revocationPrefix+key, value, ttl).Err()
}

// Lookup returns the recorded keys' values. In a cluster the keys may live on several nodes,
// so each is asked on its own.
func (s *RedisRevocations) Lookup(ctx context.Context, keys ...string) (map[string]int64, error) {
	c, err := s.redis()
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, k := range keys {
		v, err := c.Get(ctx, revocationPrefix+k).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, err
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, errors.New("a revocation in redis is not a number")
		}
		out[k] = n
	}
	return out, nil
}
