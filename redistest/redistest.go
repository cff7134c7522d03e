// Package redistest provides Redis servers for tests, in the spirit of
// net/http/httptest and kafkatest: an in-process miniredis that every test
// starts on its own, or the real Redis named by ENRICHER_TEST_REDIS_URL
// (started with scripts/redis.sh start). [Each] runs one test body against
// both. Every test gets a key prefix of its own, whose keys are deleted at
// cleanup, so that tests of several packages share one real Redis.
//
// [Server.Proxy] puts a TCP proxy on 127.0.0.1 in front of either kind,
// which a test can take down or stall to see what a client does when
// Redis is away or slow.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// EnvURL names the environment variable holding the real Redis's URL.
const EnvURL = "ENRICHER_TEST_REDIS_URL"

// Kinds reported by [Server.Kind]; they are also the subtest names of [Each].
const (
	KindMini  = "miniredis"
	KindRedis = "redis"
)

const skipReal = EnvURL + " is not set, so the real-Redis variant is skipped; " +
	"run it with: scripts/redis.sh start, then " + EnvURL + "=<the REDIS_URL it prints> go test ./... " +
	"(scripts/redis.sh stop when done)"

// Server is a Redis for one test.
type Server struct {
	kind   string
	url    string
	addr   string
	prefix string
	mini   *miniredis.Miniredis
}

// NewMini starts a miniredis on 127.0.0.1 and stops it at t.Cleanup.
func NewMini(t testing.TB) *Server {
	t.Helper()
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		t.Fatalf("redistest: starting miniredis: %v", err)
	}
	t.Cleanup(m.Close)
	return &Server{kind: KindMini, url: "redis://" + m.Addr() + "/0", addr: m.Addr(), prefix: newPrefix(), mini: m}
}

// NewReal returns the Redis named by ENRICHER_TEST_REDIS_URL, or skips the
// test with a message telling how to start one. A named Redis that does
// not answer fails the test. The test's keys are deleted at cleanup.
func NewReal(t testing.TB) *Server {
	t.Helper()
	u := strings.TrimSpace(os.Getenv(EnvURL))
	if u == "" {
		t.Skip(skipReal)
	}
	opts, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("redistest: %s is not a Redis URL: %v", EnvURL, err)
	}
	s := &Server{kind: KindRedis, url: u, addr: opts.Addr, prefix: newPrefix()}
	c := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("redistest: %s does not answer (scripts/redis.sh status tells whether it runs): %v", EnvURL, err)
	}
	t.Cleanup(func() {
		c := redis.NewClient(opts)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, s.prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return s
}

// New is NewReal when ENRICHER_TEST_REDIS_URL is set, NewMini otherwise.
func New(t testing.TB) *Server {
	t.Helper()
	if os.Getenv(EnvURL) != "" {
		return NewReal(t)
	}
	return NewMini(t)
}

// Each runs f once per kind as subtests "miniredis" and "redis", each with
// a server of its own. The "redis" subtest is skipped, with a message
// telling how to start one, when ENRICHER_TEST_REDIS_URL is unset.
func Each(t *testing.T, f func(t *testing.T, s *Server)) {
	t.Helper()
	t.Run(KindMini, func(t *testing.T) { f(t, NewMini(t)) })
	t.Run(KindRedis, func(t *testing.T) { f(t, NewReal(t)) })
}

func newPrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "test-" + hex.EncodeToString(b[:]) + ":"
}

// Kind returns [KindMini] or [KindRedis].
func (s *Server) Kind() string { return s.kind }

// URL returns the server's redis:// URL.
func (s *Server) URL() string { return s.url }

// Addr returns the server's host:port.
func (s *Server) Addr() string { return s.addr }

// Prefix returns the key prefix of this test: keys under it are the
// test's own, and those of the real Redis are deleted at cleanup.
func (s *Server) Prefix() string { return s.prefix }

// Mini returns the miniredis, for its clock (SetTime) and its restarts, or
// nil on the real Redis.
func (s *Server) Mini() *miniredis.Miniredis { return s.mini }

// Client returns a client of the server, closed at cleanup.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	return clientFor(t, s.url)
}

func clientFor(t testing.TB, u string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	// As the connector's client: the context bounds every command, and a
	// failed command is not retried behind the caller's back.
	opts.ContextTimeoutEnabled = true
	opts.MaxRetries = -1
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Lose makes the server lose the test's data, as a Redis restarted without
// persistence, or failed over to a replica that had not caught up, does.
// A miniredis is stopped, emptied and started again on the same address,
// so that open connections are cut; on the real Redis, which other tests
// share, the test's keys are deleted.
func (s *Server) Lose(t testing.TB) {
	t.Helper()
	if s.mini != nil {
		s.mini.Close()
		s.mini.FlushAll()
		if err := s.mini.StartAddr(s.addr); err != nil {
			t.Fatalf("redistest: starting miniredis again on %s: %v", s.addr, err)
		}
		return
	}
	c := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, err := c.Keys(ctx, s.prefix+"*").Result()
	if err != nil {
		t.Fatalf("redistest: listing the test's keys: %v", err)
	}
	if len(keys) > 0 {
		if err := c.Del(ctx, keys...).Err(); err != nil {
			t.Fatalf("redistest: deleting the test's keys: %v", err)
		}
	}
}
