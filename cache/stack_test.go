package cache_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/breaker"
	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/cache"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// newStack is the pipeline's lookup stack against s: cache, breaker,
// client and a budget of limits.
func newStack(t *testing.T, s *simulator.Server, limits string) *cache.Cache {
	t.Helper()
	ls, err := budget.ParseLimits(limits)
	if err != nil {
		t.Fatal(err)
	}
	w, err := budget.New(ls, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	ep, err := defender.ResolveEndpoint(s.URL(), s.Scope(), s.AuthorityHost())
	if err != nil {
		t.Fatal(err)
	}
	cred, err := s.Credential()
	if err != nil {
		t.Fatal(err)
	}
	b, err := breaker.New(breaker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	client, err := defender.New(defender.Options{
		Endpoint: ep, Credential: cred, Budget: w, Breaker: b, HTTPClient: s.Client(),
		BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(client, cache.Options{Store: cache.NewLRU(1000, time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func callsFor(s *simulator.Server, id string) int {
	n := 0
	for _, c := range s.Calls() {
		if c.AlertID == id {
			n++
		}
	}
	return n
}

// TestStackFlights runs the flight rules through the real stack: a flight
// left by its callers while waiting for the budget makes no call, one left
// after its call was sent keeps the answer, and 404s are kept too.
func TestStackFlights(t *testing.T) {
	t.Parallel()
	const (
		alertA = "da637472900382838869_1364969609"
		alertB = "da637308392288907382_-880718168"
		alertC = "636688558380765161_2136280442"
	)

	t.Run("left while waiting for the budget", func(t *testing.T) {
		t.Parallel()
		s, err := simulator.New(simulator.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		c := newStack(t, s, "1/1h")
		if _, err := c.Lookup(context.Background(), alertB); err != nil { // spends the budget
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if _, err := c.Lookup(ctx, alertA); !errors.Is(err, defender.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want ErrUnavailable after the deadline", err)
		}
		waitFor(t, "the flight to be given up", func() bool { return c.InFlight() == 0 })
		if n := callsFor(s, alertA); n != 0 {
			t.Errorf("%d calls for a lookup nobody waited for", n)
		}
		if _, _, ok := c.Cached(alertA); ok {
			t.Error("an abandoned flight left an entry")
		}
	})

	t.Run("left after the call was sent", func(t *testing.T) {
		t.Parallel()
		// The call for alertC is held at the simulator until the caller has
		// left, whatever the time either takes.
		arrived, release := make(chan struct{}), make(chan struct{})
		var arrivedOnce, releaseOnce sync.Once
		s, err := simulator.New(simulator.Options{Users: func(id string) (map[string]any, bool) {
			if id == alertC {
				arrivedOnce.Do(func() { close(arrived) })
				<-release
			}
			return simulator.SyntheticUser(id), true
		}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before Close, which waits for Users
		c := newStack(t, s, "100/1s")
		if _, err := c.Lookup(context.Background(), alertB); err != nil { // a token
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, err := c.Lookup(ctx, alertC)
			errc <- err
		}()
		waitFor(t, "the call to reach the API", func() bool {
			select {
			case <-arrived:
				return true
			default:
				return false
			}
		})
		cancel()
		waitFor(t, "the caller to leave", func() bool { return len(errc) == 1 })
		if err := <-errc; !errors.Is(err, defender.ErrUnavailable) {
			t.Fatalf("got %v, want ErrUnavailable", err)
		}
		releaseOnce.Do(func() { close(release) })
		waitFor(t, "the call to end", func() bool { return c.InFlight() == 0 })
		u, err, ok := c.Cached(alertC)
		if !ok || err != nil || u.ID != simulator.SyntheticUser(alertC)["id"] {
			t.Fatalf("Cached = %v, %v, %v; want the answer of the call", u, err, ok)
		}
		if r, err := c.Lookup(context.Background(), alertC); err != nil || !r.Cached {
			t.Errorf("got %+v, %v; want a hit", r, err)
		}
		if n := callsFor(s, alertC); n != 1 {
			t.Errorf("%d calls, want 1", n)
		}
	})

	t.Run("404 kept", func(t *testing.T) {
		t.Parallel()
		s, err := simulator.New(simulator.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		c := newStack(t, s, "100/1s")
		s.SetNotFound(alertA)
		for i, wantCached := range []bool{false, true} {
			r, err := c.Lookup(context.Background(), alertA)
			if !errors.Is(err, defender.ErrNotFound) || r.Cached != wantCached {
				t.Errorf("lookup %d: %+v, %v", i, r, err)
			}
		}
		if n := callsFor(s, alertA); n != 1 {
			t.Errorf("%d calls, want 1", n)
		}
	})
}
