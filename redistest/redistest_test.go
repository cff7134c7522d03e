package redistest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/redistest"
)

func TestServerAnswersUnderItsPrefix(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		if (s.Mini() != nil) != (s.Kind() == redistest.KindMini) {
			t.Fatalf("Kind %q with Mini %v", s.Kind(), s.Mini())
		}
		if !strings.HasPrefix(s.URL(), "redis://127.0.0.1:") || !strings.HasPrefix(s.Prefix(), "test-") {
			t.Fatalf("URL %q, prefix %q", s.URL(), s.Prefix())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := s.Client(t)
		if err := c.Set(ctx, s.Prefix()+"k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if v, err := c.Get(ctx, s.Prefix()+"k").Result(); err != nil || v != "v" {
			t.Fatalf("Get = %q, %v", v, err)
		}
	})
}

// TestProxy: a client through the proxy fails while it is down or
// stalled, and works again once it is up.
func TestProxy(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		p := s.Proxy(t)
		c := p.Client(t, s)
		ping := func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			return c.Ping(ctx).Err()
		}
		pingEventually := func(what string) {
			t.Helper()
			deadline := time.Now().Add(30 * time.Second) // guards against a hang only
			for err := ping(); err != nil; err = ping() {
				if time.Now().After(deadline) {
					t.Fatalf("%s: %v", what, err)
				}
			}
		}
		pingEventually("through the proxy")
		for _, cut := range []struct {
			name string
			do   func()
		}{{"down", p.Down}, {"stalled", p.Stall}} {
			cut.do()
			if err := ping(); err == nil {
				t.Fatalf("PING answered through a proxy %s", cut.name)
			}
			p.Up()
			pingEventually("up again after " + cut.name)
		}
	})
}

// TestLose: after Lose the test's keys are gone and the server answers
// again on the same address.
func TestLose(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := s.Client(t)
		if err := c.Set(ctx, s.Prefix()+"k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		addr := s.Addr()
		s.Lose(t)
		if s.Addr() != addr {
			t.Fatalf("the server moved from %s to %s", addr, s.Addr())
		}
		deadline := time.Now().Add(30 * time.Second) // guards against a hang only
		for {
			n, err := c.Exists(ctx, s.Prefix()+"k").Result()
			if err == nil {
				if n != 0 {
					t.Fatalf("the key is still there after Lose")
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the server does not answer after Lose: %v", err)
			}
		}
	})
}
