package defender_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// The acceptance checks of the lookup stack: cache, breaker, client and
// budget together against the simulator, over TLS with real tokens.

// longTests reports whether the tests that take minutes should run: only
// when not -short and ENRICHER_LONG_TESTS=1. Run them with a timeout above
// the default ten minutes:
//
//	ENRICHER_LONG_TESTS=1 go test -race -timeout 30m -run Long ./defender/
func longTests() bool {
	return !testing.Short() && os.Getenv("ENRICHER_LONG_TESTS") == "1"
}

// TestStackCallsOncePerAlert: 10,000 lookups of 500 distinct alerts, 64 at a
// time, make exactly 500 calls, and every lookup gets its own alert's user.
func TestStackCallsOncePerAlert(t *testing.T) {
	t.Parallel()
	const (
		alerts      = 500
		lookups     = 10_000
		concurrency = 64
	)
	s := newSimulator(t)
	s.SetLatency(2 * time.Millisecond) // so that lookups of one alert overlap
	st := newStack(t, s, "100000/1s", nil)

	// Each alert 20 times, in random order: some lookups of an alert find
	// its call in flight, later ones find it cached.
	order := make([]string, 0, lookups)
	for i := range lookups {
		order = append(order, fmt.Sprintf("da6374729003828%05d_%d", i%alerts, i%alerts))
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })

	work := make(chan string)
	var wg sync.WaitGroup
	var cached, failed atomic.Int32
	for range concurrency {
		wg.Go(func() {
			for id := range work {
				r, err := st.cache.Lookup(context.Background(), id)
				if err != nil {
					failed.Add(1)
					t.Errorf("%s: %v", id, err)
					continue
				}
				if r.Cached {
					cached.Add(1)
				}
				if want := simulator.SyntheticUser(id)["id"]; r.User.ID != want {
					t.Errorf("%s: user %q, want %q", id, r.User.ID, want)
				}
			}
		})
	}
	for _, id := range order {
		work <- id
	}
	close(work)
	wg.Wait()

	if n := s.CallCount(); n != alerts {
		t.Errorf("%d calls, want %d", n, alerts)
	}
	perAlert := map[string]int{}
	for _, c := range s.Calls() {
		perAlert[c.AlertID]++
		if c.Status != 200 {
			t.Errorf("call for %s answered %d", c.AlertID, c.Status)
		}
	}
	for id, n := range perAlert {
		if n != 1 {
			t.Errorf("%s: %d calls", id, n)
		}
	}
	if st.cache.InFlight() != 0 {
		t.Errorf("%d flights left", st.cache.InFlight())
	}
	t.Logf("%d lookups: %d from the store, %d calls, %d failed", lookups, cached.Load(), s.CallCount(), failed.Load())
}

// checkLimits fails the test if the simulator saw more calls than limits
// allow in any interval [t, t+Per) of arrival times, for every window.
func checkLimits(t *testing.T, calls []simulator.Call, limits budget.Limits) {
	t.Helper()
	for _, l := range limits {
		busiest := 0
		for i := range calls {
			n := 0
			for j := i; j < len(calls) && calls[j].Time.Sub(calls[i].Time) < l.Per; j++ {
				n++
			}
			busiest = max(busiest, n)
			if n > l.Calls {
				t.Errorf("%d calls in %v from %s, limit %v", n, l.Per, calls[i].Time.Format("15:04:05.000"), l)
				break
			}
		}
		t.Logf("busiest %v interval: %d calls (limit %d)", l.Per, busiest, l.Calls)
	}
}

// TestStackKeepsToTheRateLimits: with limits of 5/1s and 20/10s, lookups of
// 1,000 distinct alerts at once never make the simulator see more than 5
// calls in any second or 20 in any ten, and it never answers 429 although
// it enforces 5/1s itself. Each lookup waits 25s at most: the calls the
// budget allows in that time are made, and every other lookup is
// unavailable. TestLongStackKeepsToTheRateLimits waits for all 1,000.
func TestStackKeepsToTheRateLimits(t *testing.T) {
	t.Parallel()
	testRateLimits(t, 25*time.Second)
}

func TestLongStackKeepsToTheRateLimits(t *testing.T) {
	if !longTests() {
		t.Skip("takes about 500s: set ENRICHER_LONG_TESTS=1 and do not pass -short")
	}
	t.Parallel()
	testRateLimits(t, 0)
}

// testRateLimits looks 1,000 alerts up at once, each waiting at most wait
// (0: until it is answered).
func testRateLimits(t *testing.T, wait time.Duration) {
	const alerts = 1000
	const limitSpec = "5/1s,20/10s"
	limits, err := budget.ParseLimits(limitSpec)
	if err != nil {
		t.Fatal(err)
	}
	s := newSimulator(t)
	st := newStack(t, s, limitSpec, nil)
	st.warm(t)
	s.SetRateLimit(5, time.Second) // the server's own limit, as a tripwire

	var wg sync.WaitGroup
	var found, unavailable atomic.Int32
	start := time.Now()
	for i := range alerts {
		id := fmt.Sprintf("636688558380765%03d_%d", i, i)
		wg.Go(func() {
			ctx := context.Background()
			if wait > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, wait)
				defer cancel()
			}
			r, err := st.cache.Lookup(ctx, id)
			switch {
			case err == nil && r.User != nil:
				found.Add(1)
			case errors.Is(err, defender.ErrUnavailable) && wait > 0:
				unavailable.Add(1)
			default:
				t.Errorf("%s: %v, %v", id, r, err)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	waitFor(t, "every flight to end", func() bool { return st.cache.InFlight() == 0 })

	calls := s.Calls()
	checkLimits(t, calls, limits)
	ok := map[string]bool{}
	for _, c := range calls {
		if c.Status != 200 {
			t.Errorf("call for %s answered %d", c.AlertID, c.Status)
		}
		if ok[c.AlertID] {
			t.Errorf("two calls for %s", c.AlertID)
		}
		ok[c.AlertID] = true
	}
	// A call granted just before a lookup's deadline still ends and is kept,
	// though its caller was gone.
	for i := range alerts {
		id := fmt.Sprintf("636688558380765%03d_%d", i, i)
		if _, _, hit := st.cache.Cached(id); hit != ok[id] {
			t.Errorf("%s: cached %v, called %v", id, hit, ok[id])
		}
	}
	t.Logf("%d calls in %v: %d lookups found, %d unavailable", len(calls), elapsed.Round(time.Millisecond), found.Load(), unavailable.Load())

	if wait == 0 {
		if len(calls) != alerts || found.Load() != alerts {
			t.Errorf("%d calls and %d users found, want %d", len(calls), found.Load(), alerts)
		}
		return
	}
	// Liveness: 20 calls in each 10s and 5 in each 1s, so 60 in 25s when
	// every call is granted as soon as the limits allow; 50 at least leaves
	// room for slow machines.
	if n := len(calls); n < 50 || n > 60 {
		t.Errorf("%d calls in %v, want 50 to 60: the budget is not used as far as it allows", n, wait)
	}
	if got := int(found.Load() + unavailable.Load()); got != alerts {
		t.Errorf("%d lookups answered, want %d", got, alerts)
	}
	if f := int(found.Load()); f > len(calls) || f < len(calls)-5 {
		t.Errorf("%d lookups found a user from %d calls", f, len(calls))
	}
}

// TestStackRetryAfterHoldsEveryCall: after a 429 with Retry-After: 2, no
// call reaches the simulator for 2s, whichever alerts are being looked up:
// neither lookups queued behind the throttled call nor lookups that start
// during the pause.
func TestStackRetryAfterHoldsEveryCall(t *testing.T) {
	t.Parallel()
	const retryAfter = 2 * time.Second
	check := func(t *testing.T, s *simulator.Server, lookups int) {
		t.Helper()
		calls := s.Calls()
		if len(calls) != lookups+1 {
			t.Fatalf("%d calls, want %d: %+v", len(calls), lookups+1, calls)
		}
		if calls[0].Status != 429 {
			t.Fatalf("first call answered %d, want 429", calls[0].Status)
		}
		for _, c := range calls[1:] {
			if c.Status != 200 {
				t.Errorf("call for %s answered %d", c.AlertID, c.Status)
			}
			if gap := c.Time.Sub(calls[0].Time); gap < retryAfter {
				t.Errorf("call for %s arrived %v after the 429", c.AlertID, gap)
			}
		}
	}
	lookupAll := func(t *testing.T, st *stack, ids []string) {
		t.Helper()
		var wg sync.WaitGroup
		for _, id := range ids {
			wg.Go(func() {
				if _, err := st.cache.Lookup(context.Background(), id); err != nil {
					t.Errorf("%s: %v", id, err)
				}
			})
		}
		wg.Wait()
	}
	ids := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("da63747290038283886%d_%d", i, i)
		}
		return out
	}

	t.Run("queued lookups", func(t *testing.T) {
		t.Parallel()
		s := newSimulator(t)
		// One call at a time (a running call counts, and the next starts
		// 50ms after it ended): the first call gets the 429 while every
		// other lookup waits for the budget.
		st := newStack(t, s, "1/50ms", nil)
		st.warm(t)
		s.ThrottleNext(1, "2")
		lookupAll(t, st, ids(16))
		check(t, s, 16)
	})

	t.Run("lookups during the pause", func(t *testing.T) {
		t.Parallel()
		s := newSimulator(t)
		st := newStack(t, s, budget.DefaultLimits, nil)
		s.ThrottleNext(1, "2")
		first := make(chan error, 1)
		go func() {
			_, err := st.cache.Lookup(context.Background(), alertA)
			first <- err
		}()
		waitFor(t, "the 429 to pause the budget", func() bool { return !st.budget.PausedUntil().IsZero() })
		lookupAll(t, st, ids(16))
		if err := <-first; err != nil {
			t.Error(err)
		}
		check(t, s, 17)
	})
}

// TestBudgetContract checks what the client relies on from budget.Window:
// it is a defender.Budget, a caller that has gone gets no call, and a pause
// holds every call.
func TestBudgetContract(t *testing.T) {
	t.Parallel()
	var _ defender.Budget = (*budget.Window)(nil)
	w := newWindow(t, "10/1s")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if done, err := w.Acquire(ctx); err == nil || done != nil {
		t.Fatalf("Acquire with an ended context granted a call")
	}
	until := time.Now().Add(200 * time.Millisecond)
	w.PauseUntil(until)
	done, err := w.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	done()
	if early := time.Until(until); early > 0 {
		t.Errorf("granted %v before the end of a 200ms pause", early)
	}
}

// BenchmarkMissThroughStack is one lookup of a new alert through cache,
// breaker, client and budget, over TLS to the simulator with a real token.
func BenchmarkMissThroughStack(b *testing.B) {
	s := newSimulator(b)
	st := newStack(b, s, "100000/1s", nil)
	ctx := context.Background()
	if _, err := st.cache.Lookup(ctx, alertA); err != nil { // token and connection
		b.Fatal(err)
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		r, err := st.cache.Lookup(ctx, fmt.Sprintf("bench_%d", i))
		if err != nil || r.Cached {
			b.Fatal(r, err)
		}
	}
}
