package cache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/defender-enricher/defender-enricher/breaker"
	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/cache"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/redistest"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// TestOneCallPerAlertForTheFleet is the figure of the shared cache: three
// replicas, each with the whole lookup stack (cache, client, breaker, the
// shared budget) on one Redis, look up the same 120 alerts all at once
// against the simulator over TLS, 12 of them unknown to the API. Each
// alert costs one call for the fleet, not one per replica.
func TestOneCallPerAlertForTheFleet(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		const alerts, replicas = 120, 3
		alertID := func(i int) string { return fmt.Sprintf("da638458473376270421_%d", 2_000_000+i) }
		sim, err := simulator.New(simulator.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sim.Close)
		sim.SetLatency(5 * time.Millisecond)
		for i := 0; i < alerts; i += alerts / 12 {
			sim.SetNotFound(alertID(i))
		}
		prefix := s.Prefix() + "{fleet}:"
		regs := make([]*prometheus.Registry, replicas)
		caches := make([]*cache.Cache, replicas)
		for r := range caches {
			regs[r] = prometheus.NewRegistry()
			caches[r] = newFleetStack(t, sim, s, prefix, regs[r])
		}
		var wg sync.WaitGroup
		for _, c := range caches {
			for i := range alerts {
				wg.Go(func() {
					_, err := c.Lookup(context.Background(), alertID(i))
					if err != nil && !errors.Is(err, defender.ErrNotFound) {
						t.Errorf("%s: %v", alertID(i), err)
					}
				})
			}
		}
		wg.Wait()
		for i := range alerts {
			if n := callsFor(sim, alertID(i)); n != 1 {
				t.Errorf("%s: %d calls, want 1", alertID(i), n)
			}
		}
		waits, shared := 0, 0
		for _, reg := range regs {
			waits += counterValue(t, reg, "enricher_cache_lock_waits_total")
			e := &env{reg: reg}
			shared += e.sharedHits(t, "hit") + e.sharedHits(t, "negative_hit")
		}
		t.Logf("%d replicas, %d alerts each: %d calls, %d lookups waited for another replica's lock, %d answered from Redis",
			replicas, alerts, len(sim.Calls()), waits, shared)
	})
}

// newFleetStack is one replica's lookup stack against sim, sharing the
// budget and the cache through s under prefix.
func newFleetStack(t *testing.T, sim *simulator.Server, s *redistest.Server, prefix string, reg *prometheus.Registry) *cache.Cache {
	t.Helper()
	rdb := s.Client(t)
	ls, err := budget.ParseLimits("100000/1s")
	if err != nil {
		t.Fatal(err)
	}
	bud, err := budget.NewRedis(rdb, ls, budget.RedisOptions{Prefix: prefix, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bud.Close)
	ep, err := defender.ResolveEndpoint(sim.URL(), sim.Scope(), sim.AuthorityHost())
	if err != nil {
		t.Fatal(err)
	}
	cred, err := sim.Credential()
	if err != nil {
		t.Fatal(err)
	}
	b, err := breaker.New(breaker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	client, err := defender.New(defender.Options{
		Endpoint: ep, Credential: cred, Budget: bud, Breaker: b, HTTPClient: sim.Client(),
		BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	shared, err := cache.NewRedis(rdb, cache.RedisOptions{Prefix: prefix, Timeout: 10 * time.Second, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(client, cache.Options{
		Store: cache.NewLRU(10_000, time.Hour), Users: cache.NewLRU(10_000, time.Hour), ReuseUser: true, Shared: shared, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
