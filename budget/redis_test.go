package budget

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/defender-enricher/defender-enricher/redistest"
)

// newShared returns a Redis budget on s under the test's prefix, closed at
// cleanup. Every budget of one test shares the prefix: they are replicas
// of one fleet.
func newShared(t *testing.T, s *redistest.Server, limits Limits, opts RedisOptions) *Redis {
	t.Helper()
	return newSharedOn(t, s.Client(t), s.Prefix(), limits, opts)
}

func newSharedOn(t *testing.T, rdb redis.Scripter, prefix string, limits Limits, opts RedisOptions) *Redis {
	t.Helper()
	opts.Prefix = prefix + "{fleet}:"
	if opts.Timeout == 0 {
		// Long enough for a loaded machine: these tests are about the
		// budget, not about a slow Redis.
		opts.Timeout = 10 * time.Second
	}
	r, err := NewRedis(rdb, limits, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// mustTry asks once and fails the test on an error.
func mustTry(t *testing.T, r *Redis, p Priority) tryResult {
	t.Helper()
	res, err := r.try(p)
	if err != nil {
		t.Fatalf("try(%v): %v", p, err)
	}
	return res
}

// grantNowRedis takes a call at once and returns its grant instant on
// Redis's clock.
func grantNowRedis(t *testing.T, r *Redis, p Priority) tryResult {
	t.Helper()
	res := mustTry(t, r, p)
	if !res.granted {
		t.Fatalf("a %v call was refused (wait %v), want it granted at once", p, res.wait)
	}
	return res
}

func refused(t *testing.T, r *Redis, p Priority) tryResult {
	t.Helper()
	res := mustTry(t, r, p)
	if res.granted {
		t.Fatalf("a %v call was granted at %v, want it refused", p, res.now)
	}
	return res
}

func endCall(t *testing.T, r *Redis, id string) time.Time {
	t.Helper()
	at := r.end(id)
	if at.IsZero() {
		t.Fatalf("the end of call %s was not recorded", id)
	}
	return at
}

// TestRedisExactWait: a refused caller is told the exact instant the
// windows allow its call, on Redis's clock: a window after the call that
// must age out ended.
func TestRedisExactWait(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		const per = 30 * time.Second
		a := newShared(t, s, Limits{{2, per}, {3, 2 * per}}, RedisOptions{})
		b := newShared(t, s, Limits{{2, per}, {3, 2 * per}}, RedisOptions{})
		first := endCall(t, a, grantNowRedis(t, a, PriorityLow).id)
		endCall(t, b, grantNowRedis(t, b, PriorityLow).id)
		res := refused(t, a, PriorityLow)
		if got, want := res.now.Add(res.wait), first.Add(per); !got.Equal(want) {
			t.Fatalf("refused at %v with a wait of %v, granted at %v; want the first call's end plus %v, %v", res.now, res.wait, got, per, want)
		}
		// The other replica is told the same instant.
		res = refused(t, b, PriorityHigh)
		if got, want := res.now.Add(res.wait), first.Add(per); !got.Equal(want) {
			t.Fatalf("the other replica: granted at %v, want %v", got, want)
		}
	})
}

// TestRedisRunningCallCountsUntilDone: a running call holds its slot in
// every replica until it ends; the wait told meanwhile is a full window,
// the earliest it could end, and once it ended the exact instant.
func TestRedisRunningCallCountsUntilDone(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		const per = 20 * time.Second
		a := newShared(t, s, Limits{{1, per}}, RedisOptions{})
		b := newShared(t, s, Limits{{1, per}}, RedisOptions{})
		call := grantNowRedis(t, a, PriorityHigh)
		res := refused(t, b, PriorityHigh)
		if res.wait != per {
			t.Fatalf("wait behind a running call = %v, want the window, %v", res.wait, per)
		}
		end := endCall(t, a, call.id)
		res = refused(t, b, PriorityHigh)
		if got, want := res.now.Add(res.wait), end.Add(per); !got.Equal(want) {
			t.Fatalf("after the call ended at %v: granted at %v, want %v", end, got, want)
		}
	})
}

// TestRedisLeaseReleasesADeadReplicasCall: a replica that dies mid-call
// never reports its end; its call counts as ended when its lease ends, and
// the others go a window after that, not before.
func TestRedisLeaseReleasesADeadReplicasCall(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		const per, lease = 200 * time.Millisecond, 300 * time.Millisecond
		dead := newShared(t, s, Limits{{1, per}}, RedisOptions{Lease: lease})
		call := grantNowRedis(t, dead, PriorityHigh)
		dead.Close() // no done: the process is gone
		alive := newShared(t, s, Limits{{1, per}}, RedisOptions{Lease: lease})
		leaseEnd := call.now.Add(lease)
		for {
			res := mustTry(t, alive, PriorityHigh)
			if res.granted {
				if res.now.Before(leaseEnd.Add(per)) {
					t.Fatalf("granted at %v, before the lease's end %v plus the window", res.now, leaseEnd)
				}
				return
			}
			if res.now.After(leaseEnd) {
				if got, want := res.now.Add(res.wait), leaseEnd.Add(per); !got.Equal(want) {
					t.Fatalf("after the lease: told %v, want the lease's end plus the window, %v", got, want)
				}
			}
			time.Sleep(res.wait) // as the budget does: it sleeps as told
		}
	})
}

// TestRedisSharedPause: a Retry-After seen by one replica holds every
// replica until it ends; a shorter one never shortens it.
func TestRedisSharedPause(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		limits := Limits{{100, time.Minute}}
		a := newShared(t, s, limits, RedisOptions{})
		b := newShared(t, s, limits, RedisOptions{})
		a.PauseUntil(time.Now().Add(time.Minute))
		first := refused(t, b, PriorityHigh)
		end := first.now.Add(first.wait)
		if first.wait <= 50*time.Second {
			t.Fatalf("a minute's pause leaves a wait of %v", first.wait)
		}
		b.PauseUntil(time.Now().Add(time.Second))
		// The script answers on Redis's clock in microseconds and the wait
		// in whole milliseconds: the same end, read twice, may differ by
		// less than a millisecond.
		if res := refused(t, a, PriorityHigh); res.now.Add(res.wait).Sub(end).Abs() >= time.Millisecond {
			t.Fatalf("a shorter pause moved the end from %v to %v", end, res.now.Add(res.wait))
		}
		b.PauseUntil(time.Now().Add(2 * time.Minute))
		if res := refused(t, a, PriorityHigh); !res.now.Add(res.wait).After(end.Add(30 * time.Second)) {
			t.Fatalf("a longer pause did not move the end past %v", end)
		}
	})
}

// TestRedisPauseHoldsAcquire: Acquire on one replica sleeps through the
// pause another replica wrote, and is granted after its end.
func TestRedisPauseHoldsAcquire(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		limits := Limits{{100, time.Minute}}
		a := newShared(t, s, limits, RedisOptions{})
		b := newShared(t, s, limits, RedisOptions{})
		a.PauseUntil(time.Now().Add(300 * time.Millisecond))
		res := refused(t, b, PriorityHigh)
		end := res.now.Add(res.wait)
		g, err := b.acquire(WithPriority(context.Background(), PriorityHigh))
		if err != nil {
			t.Fatal(err)
		}
		defer b.end(g.id)
		if g.at.Before(end) {
			t.Fatalf("granted at %v, before the pause's end %v", g.at, end)
		}
	})
}

// TestRedisReserveAcrossReplicas: what one replica's Low calls spent
// counts against another's, and the reserve stays for High and Medium.
func TestRedisReserveAcrossReplicas(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		const per = 30 * time.Second
		limits := Limits{{5, per}}
		a := newShared(t, s, limits, RedisOptions{Reserve: 0.2})
		b := newShared(t, s, limits, RedisOptions{Reserve: 0.2})
		var first time.Time
		for i := range 4 {
			r := []*Redis{a, b}[i%2]
			end := endCall(t, r, grantNowRedis(t, r, PriorityLow).id)
			if i == 0 {
				first = end
			}
		}
		for _, p := range []Priority{PriorityLow, PriorityInformational, PriorityDeferred} {
			res := refused(t, b, p)
			if got, want := res.now.Add(res.wait), first.Add(per); !got.Equal(want) {
				t.Fatalf("a %v call held by the reserve is told %v, want %v", p, got, want)
			}
		}
		grantNowRedis(t, a, PriorityMedium)
		refused(t, b, PriorityHigh)
	})
}

// TestRedisHigherWaiterHoldsLowerReplicas: a replica whose High waiter was
// refused registers it, and until a little after the instant it asks
// again, a Low caller of another replica is refused even when the windows
// would let it go; the High one then takes the call.
func TestRedisHigherWaiterHoldsLowerReplicas(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		const per, hold = 200 * time.Millisecond, 30 * time.Second
		limits := Limits{{1, per}}
		high := newShared(t, s, limits, RedisOptions{hold: hold})
		low := newShared(t, s, limits, RedisOptions{hold: hold})
		endCall(t, low, grantNowRedis(t, low, PriorityLow).id)
		res := refused(t, high, PriorityHigh)
		due := res.now.Add(res.wait)
		time.Sleep(res.wait)
		held := refused(t, low, PriorityLow)
		if held.wait != hold/10 {
			t.Fatalf("the Low caller held back after the High one's due instant %v waits %v, want a tenth of the hold, %v", due, held.wait, hold/10)
		}
		grantNowRedis(t, high, PriorityHigh)
		// Granted, the High replica no longer holds anyone: the Low one is
		// refused by the window alone, a full window after now.
		if res := refused(t, low, PriorityLow); res.wait != per {
			t.Fatalf("after the High grant the Low caller waits %v, want the window, %v", res.wait, per)
		}
	})
}

// TestRedisHoldEndsWithADeadReplica: a registered waiter whose replica
// died holds the others for the hold past its due instant, not longer.
func TestRedisHoldEndsWithADeadReplica(t *testing.T) {
	s := redistest.NewMini(t)
	m := s.Mini()
	start := time.Unix(1_800_000_000, 0)
	m.SetTime(start)
	const per, hold = time.Second, 5 * time.Second
	limits := Limits{{1, per}}
	dead := newShared(t, s, limits, RedisOptions{hold: hold})
	low := newShared(t, s, limits, RedisOptions{hold: hold})
	endCall(t, low, grantNowRedis(t, low, PriorityLow).id)
	res := refused(t, dead, PriorityHigh)
	due := res.now.Add(res.wait)
	m.SetTime(due)
	refused(t, low, PriorityLow)
	m.SetTime(due.Add(hold))
	grantNowRedis(t, low, PriorityLow)
}

// TestRedisNeverExceeds drives several replicas of one budget at once,
// each with callers of random priority and calls of random length, and
// checks the guarantee over every interval and the reserve, on Redis's
// clock: the instants the grants and the ends were recorded at.
func TestRedisNeverExceeds(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		limits := Limits{{3, 50 * time.Millisecond}, {8, 250 * time.Millisecond}}
		const replicas, callers, calls = 3, 3, 10
		var bs []*Redis
		for range replicas {
			bs = append(bs, newShared(t, s, limits, RedisOptions{Reserve: 0.25, hold: 200 * time.Millisecond}))
		}
		var (
			mu    sync.Mutex
			spans []span
			wg    sync.WaitGroup
			errs  = make(chan error, replicas*callers)
		)
		for i := range replicas * callers {
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range calls {
					p := priorities[rng.IntN(numPriorities)]
					g, err := bs[i%replicas].acquire(WithPriority(context.Background(), p))
					if err != nil {
						errs <- err
						return
					}
					time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
					end := bs[i%replicas].end(g.id)
					if end.IsZero() {
						errs <- errors.New("an end was not recorded")
						return
					}
					mu.Lock()
					spans = append(spans, span{start: g.at, end: end, prio: p})
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if len(spans) != replicas*callers*calls {
			t.Fatalf("%d calls made, want %d", len(spans), replicas*callers*calls)
		}
		checkSpans(t, spans, limits) // sorts spans by start: the grant order
		for i := range spans {
			spans[i].seq = i
		}
		checkReserve(t, spans, bs[0].lower)
		t.Logf("%d calls in %v", len(spans), spans[len(spans)-1].start.Sub(spans[0].start))
	})
}

// TestRedisFailsClosed: with Redis away or stalled, Acquire fails at once
// with ErrStoreUnavailable, the metrics say so, and the budget recovers by
// itself once Redis is back.
func TestRedisFailsClosed(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		proxy := s.Proxy(t)
		reg := prometheus.NewRegistry()
		r := newSharedOn(t, proxy.Client(t, s), s.Prefix(), Limits{{1000, time.Second}},
			RedisOptions{Timeout: 300 * time.Millisecond, Registerer: reg})
		ctx := WithPriority(context.Background(), PriorityHigh)
		acquireOK := func(what string) {
			t.Helper()
			deadline := time.Now().Add(30 * time.Second) // guards against a hang only
			for {
				done, err := r.Acquire(ctx)
				if err == nil {
					done()
					return
				}
				if !errors.Is(err, ErrStoreUnavailable) {
					t.Fatalf("%s: %v", what, err)
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: still %v", what, err)
				}
			}
		}
		acquireOK("with Redis up")
		if v := testutil.ToFloat64(r.up); v != 1 {
			t.Fatalf("enricher_budget_store_up = %v with Redis up", v)
		}
		for _, cut := range []struct {
			name string
			do   func()
		}{{"down", proxy.Down}, {"stalled", proxy.Stall}} {
			cut.do()
			before := testutil.ToFloat64(r.errors)
			_, err := r.Acquire(ctx)
			if !errors.Is(err, ErrStoreUnavailable) {
				t.Fatalf("Redis %s: Acquire = %v, want ErrStoreUnavailable", cut.name, err)
			}
			if testutil.ToFloat64(r.errors) <= before || testutil.ToFloat64(r.up) != 0 {
				t.Fatalf("Redis %s: errors %v (before %v), up %v", cut.name, testutil.ToFloat64(r.errors), before, testutil.ToFloat64(r.up))
			}
			proxy.Up()
			acquireOK("Redis back after " + cut.name)
			if v := testutil.ToFloat64(r.up); v != 1 {
				t.Fatalf("enricher_budget_store_up = %v once Redis is back", v)
			}
		}
	})
}

// TestRedisWaitersKeepTheirOrder: within one replica, waiters are served
// by priority, then in arrival order, as with Window.
func TestRedisWaitersKeepTheirOrder(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		const per = 300 * time.Millisecond
		r := newShared(t, s, Limits{{1, per}}, RedisOptions{})
		hold := grantNowRedis(t, r, PriorityHigh)
		order := []Priority{PriorityLow, PriorityDeferred, PriorityHigh, PriorityLow, PriorityMedium}
		got := make(chan int, len(order))
		for i, p := range order {
			before := r.Waiting()
			go func() {
				g, err := r.acquire(WithPriority(context.Background(), p))
				if err != nil {
					t.Error(err)
					got <- -1
					return
				}
				got <- i
				r.end(g.id)
			}()
			waitForRedis(t, "the caller to queue", func() bool { return r.Waiting() == before+1 })
		}
		endCall(t, r, hold.id)
		want := []int{2, 4, 0, 3, 1} // High, Medium, the two Low in order, Deferred
		for _, w := range want {
			select {
			case i := <-got:
				if i != w {
					t.Fatalf("caller %d (%v) went, want %d (%v)", i, order[max(i, 0)], w, order[w])
				}
			case <-time.After(60 * time.Second):
				t.Fatal("timed out waiting for a grant")
			}
		}
	})
}

func waitForRedis(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestRedisClose: Close wakes every waiter with ErrClosed and refuses
// later calls.
func TestRedisClose(t *testing.T) {
	s := redistest.NewMini(t)
	r := newShared(t, s, Limits{{1, time.Hour}}, RedisOptions{})
	grantNowRedis(t, r, PriorityHigh)
	errc := make(chan error, 1)
	go func() {
		_, err := r.Acquire(context.Background())
		errc <- err
	}()
	waitForRedis(t, "the caller to queue", func() bool { return r.Waiting() == 1 })
	r.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("waiter: %v, want ErrClosed", err)
	}
	if _, err := r.Acquire(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
}

func TestRedisPrefix(t *testing.T) {
	tests := []struct{ tenant, host, want string }{
		{"72f988bf-86f1-41af-91ab-2d7cd011db47", "api.securitycenter.microsoft.com", "defender-enricher:{72f988bf-86f1-41af-91ab-2d7cd011db47:api.securitycenter.microsoft.com}:"},
		{"Contoso.onmicrosoft.com", "EU.api.security.microsoft.com", "defender-enricher:{contoso.onmicrosoft.com:eu.api.security.microsoft.com}:"},
		{"", "127.0.0.1:8443", "defender-enricher:{default:127.0.0.1_8443}:"},
		{"a}b{c", "h", "defender-enricher:{a_b_c:h}:"},
	}
	for _, tt := range tests {
		if got := RedisPrefix(tt.tenant, tt.host); got != tt.want {
			t.Errorf("RedisPrefix(%q, %q) = %q, want %q", tt.tenant, tt.host, got, tt.want)
		}
	}
}

// BenchmarkRedisAcquireFree is the cost of a call the shared budget has
// room for: the script that grants it and the one that records its end,
// two round trips to Redis (miniredis, or the real Redis of
// ENRICHER_TEST_REDIS_URL).
func BenchmarkRedisAcquireFree(b *testing.B) {
	s := redistest.New(b)
	r, err := NewRedis(s.Client(b), Limits{{100_000, time.Millisecond}}, RedisOptions{Prefix: s.Prefix() + "{bench}:", Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := WithPriority(context.Background(), PriorityHigh)
	b.ResetTimer()
	for b.Loop() {
		done, err := r.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		done()
	}
}

// TestRedisBudgetOutlivesTheProcess: a replica started after another
// stopped (a restart, a rolling update) counts the calls of the one
// before, and its pause.
func TestRedisBudgetOutlivesTheProcess(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		const per = 30 * time.Second
		limits := Limits{{2, per}}
		old := newShared(t, s, limits, RedisOptions{})
		first := endCall(t, old, grantNowRedis(t, old, PriorityHigh).id)
		endCall(t, old, grantNowRedis(t, old, PriorityHigh).id)
		old.Close()
		restarted := newShared(t, s, limits, RedisOptions{})
		res := refused(t, restarted, PriorityHigh)
		if got, want := res.now.Add(res.wait), first.Add(per); !got.Equal(want) {
			t.Fatalf("the restarted replica is told %v, want the first call's end plus the window, %v", got, want)
		}
		restarted.PauseUntil(time.Now().Add(time.Hour))
		restarted.Close()
		again := newShared(t, s, limits, RedisOptions{})
		if res := refused(t, again, PriorityHigh); res.wait < 50*time.Minute {
			t.Fatalf("after a restart an hour's pause leaves a wait of %v", res.wait)
		}
	})
}
