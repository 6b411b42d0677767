package gateway

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis/portcullis/idp/oidc"
)

// RedisSessions keeps what the browser sessions of all replicas share in Redis: the logouts (a
// back-channel logout posted to one replica ends the session on all), and, for a session with
// store "redis", the sessions themselves. Its client is set once the policy's redis block is
// known (the providers are built before); without one it is not Enabled, each replica keeps its
// own logouts, and a stored session cannot be read (503).
type RedisSessions struct {
	client atomic.Pointer[redisClientBox]
}

type redisClientBox struct{ c redis.UniversalClient }

var (
	_ oidc.RevocationStore = (*RedisSessions)(nil)
	_ oidc.SessionStore    = (*RedisSessions)(nil)
)

// The key prefixes keep sessions and logouts apart from the rate-limit counters.
const (
	revocationPrefix = "portcullis:revoked:"
	sessionPrefix    = "portcullis:session:"
)

// SetClient makes the store use c; nil turns it off.
func (s *RedisSessions) SetClient(c redis.UniversalClient) {
	if c == nil {
		s.client.Store(nil)
		return
	}
	s.client.Store(&redisClientBox{c: c})
}

// Enabled reports whether a Redis client is set.
func (s *RedisSessions) Enabled() bool { return s != nil && s.client.Load() != nil }

func (s *RedisSessions) redis() (redis.UniversalClient, error) {
	b := s.client.Load()
	if b == nil {
		return nil, errors.New("no redis client")
	}
	return b.c, nil
}

// Revoke records key until ttl has passed.
func (s *RedisSessions) Revoke(ctx context.Context, key string, value int64, ttl time.Duration) error {
	c, err := s.redis()
	if err != nil {
		return err
	}
	return c.Set(ctx, revocationPrefix+key, value, ttl).Err()
}

// Lookup returns the recorded keys' values. In a cluster the keys may live on several nodes,
// so each is asked on its own.
func (s *RedisSessions) Lookup(ctx context.Context, keys ...string) (map[string]int64, error) {
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

// Get returns a stored session.
func (s *RedisSessions) Get(ctx context.Context, key string) (string, bool, error) {
	c, err := s.redis()
	if err != nil {
		return "", false, err
	}
	v, err := c.Get(ctx, sessionPrefix+key).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return v, true, nil
}

// Set stores a session for ttl.
func (s *RedisSessions) Set(ctx context.Context, key, value string, ttl time.Duration) error {
	c, err := s.redis()
	if err != nil {
		return err
	}
	return c.Set(ctx, sessionPrefix+key, value, ttl).Err()
}

// Delete removes a stored session.
func (s *RedisSessions) Delete(ctx context.Context, key string) error {
	c, err := s.redis()
	if err != nil {
		return err
	}
	return c.Del(ctx, sessionPrefix+key).Err()
}
