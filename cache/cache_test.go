package cache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/cache"
	"github.com/defender-enricher/defender-enricher/clock"
	"github.com/defender-enricher/defender-enricher/defender"
)

const alertA = "da637472900382838869_1364969609"

// fakeLookup answers with answer, counting calls. answer may block.
type fakeLookup struct {
	calls  atomic.Int32
	answer func(ctx context.Context, alertID string) (*defender.User, error)
}

func (f *fakeLookup) User(ctx context.Context, alertID string) (*defender.User, error) {
	f.calls.Add(1)
	return f.answer(ctx, alertID)
}

func userFor(id string) *defender.User {
	return &defender.User{ID: `contoso\` + id, JSON: []byte(`{"id":"contoso\\` + id + `"}`)}
}

type env struct {
	cache *cache.Cache
	next  *fakeLookup
	clock *clock.Manual
	reg   *prometheus.Registry
}

func newEnv(t *testing.T, store cache.Store, answer func(context.Context, string) (*defender.User, error)) *env {
	t.Helper()
	if store == nil {
		store = cache.NewLRU(100, time.Hour)
	}
	if answer == nil {
		answer = func(_ context.Context, id string) (*defender.User, error) { return userFor(id), nil }
	}
	e := &env{
		next:  &fakeLookup{answer: answer},
		clock: clock.NewManual(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)),
		reg:   prometheus.NewRegistry(),
	}
	c, err := cache.New(e.next, cache.Options{
		Store: store, TTL: time.Hour, NegativeTTL: 5 * time.Minute, Clock: e.clock, Registerer: e.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.cache = c
	return e
}

// lookups returns the count of lookups with the given result label.
func (e *env) lookups(t *testing.T, result string) int {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "enricher_cache_lookups_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return 0
}

func (e *env) wantCalls(t *testing.T, n int) {
	t.Helper()
	if got := int(e.next.calls.Load()); got != n {
		t.Errorf("%d calls to the lookup behind the cache, want %d", got, n)
	}
}

// waitFor polls cond until it holds. The deadline only guards against a
// hang: a loaded machine must not trip it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// expiring is a context whose deadline passes when the test calls expire,
// not after some time: a caller's deadline the test can place exactly.
type expiring struct {
	context.Context
	done chan struct{}
	once sync.Once
}

func newExpiring() *expiring {
	return &expiring{Context: context.Background(), done: make(chan struct{})}
}

func (c *expiring) Done() <-chan struct{} { return c.done }

func (c *expiring) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func (c *expiring) expire() { c.once.Do(func() { close(c.done) }) }

func TestHit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	ctx := context.Background()
	r, err := e.cache.Lookup(ctx, alertA)
	if err != nil || r.Cached || r.User.ID != `contoso\`+alertA {
		t.Fatalf("first lookup: %+v, %v; want a fresh user", r, err)
	}
	first := r.User
	r, err = e.cache.Lookup(ctx, alertA)
	if err != nil || !r.Cached || r.User != first {
		t.Fatalf("second lookup: %+v, %v; want the same user from the store", r, err)
	}
	e.wantCalls(t, 1)
	if u, err, ok := e.cache.Cached(alertA); !ok || err != nil || u != first {
		t.Errorf("Cached = %v, %v, %v", u, err, ok)
	}
	if _, _, ok := e.cache.Cached("other"); ok {
		t.Error("Cached found an alert never looked up")
	}
	if e.lookups(t, "miss") != 1 || e.lookups(t, "hit") != 2 {
		t.Errorf("metrics: %d misses, %d hits; want 1, 2", e.lookups(t, "miss"), e.lookups(t, "hit"))
	}
}

func TestTTL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	ctx := context.Background()
	if _, err := e.cache.Lookup(ctx, alertA); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour - time.Nanosecond)
	if r, err := e.cache.Lookup(ctx, alertA); err != nil || !r.Cached {
		t.Fatalf("just before the TTL: %+v, %v; want a hit", r, err)
	}
	e.clock.Advance(time.Nanosecond)
	if r, err := e.cache.Lookup(ctx, alertA); err != nil || r.Cached {
		t.Fatalf("at the TTL: %+v, %v; want a new call", r, err)
	}
	e.wantCalls(t, 2)
}

func TestNegativeHit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, func(context.Context, string) (*defender.User, error) { return nil, defender.ErrNotFound })
	ctx := context.Background()
	for i, wantCached := range []bool{false, true, true} {
		r, err := e.cache.Lookup(ctx, alertA)
		if !errors.Is(err, defender.ErrNotFound) || r.User != nil || r.Cached != wantCached {
			t.Fatalf("lookup %d: %+v, %v; want ErrNotFound, cached %v", i, r, err, wantCached)
		}
	}
	e.wantCalls(t, 1)
	if e.lookups(t, "negative_hit") != 2 {
		t.Errorf("%d negative hits, want 2", e.lookups(t, "negative_hit"))
	}
	e.clock.Advance(5*time.Minute - time.Nanosecond)
	if r, err := e.cache.Lookup(ctx, alertA); !errors.Is(err, defender.ErrNotFound) || !r.Cached {
		t.Fatalf("just before NegativeTTL: %+v, %v; want a kept 404", r, err)
	}
	e.clock.Advance(time.Nanosecond)
	if r, err := e.cache.Lookup(ctx, alertA); !errors.Is(err, defender.ErrNotFound) || r.Cached {
		t.Fatalf("at NegativeTTL: %+v, %v; want a new call", r, err)
	}
	e.wantCalls(t, 2)
}

func TestErrorsAreNeverCached(t *testing.T) {
	t.Parallel()
	for _, want := range []error{
		&defender.APIError{StatusCode: 503, Attempts: 4},
		&defender.APIError{StatusCode: 403},
		&defender.APIError{StatusCode: 429, RetryAfter: time.Second},
		&defender.TransportError{Attempts: 4, Err: errors.New("connection reset")},
		&defender.TokenError{Err: errors.New("AADSTS7000215")},
		fmt.Errorf("%w: circuit breaker open", defender.ErrUnavailable),
		defender.ErrInvalidAlertID,
	} {
		e := newEnv(t, nil, func(context.Context, string) (*defender.User, error) { return nil, want })
		for i := range 3 {
			r, err := e.cache.Lookup(context.Background(), alertA)
			if !errors.Is(err, want) || r.User != nil || r.Cached {
				t.Errorf("%v: lookup %d: %+v, %v", want, i, r, err)
			}
		}
		e.wantCalls(t, 3)
		if _, _, ok := e.cache.Cached(alertA); ok {
			t.Errorf("%v was kept", want)
		}
	}
}

func TestSizeBound(t *testing.T) {
	t.Parallel()
	store := cache.NewLRU(2, time.Hour)
	e := newEnv(t, store, nil)
	ctx := context.Background()
	lookup := func(id string) bool {
		t.Helper()
		r, err := e.cache.Lookup(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return r.Cached
	}
	lookup("a")
	lookup("b")
	if !lookup("a") { // a is now the most recently used
		t.Fatal("a was not kept")
	}
	lookup("c") // evicts b, the least recently used
	if store.Len() != 2 {
		t.Errorf("%d entries, want 2", store.Len())
	}
	if !lookup("a") || !lookup("c") {
		t.Error("a or c was evicted")
	}
	if lookup("b") {
		t.Error("b was kept beyond the size bound")
	}
	e.wantCalls(t, 4)
}

// TestCoalescing: N concurrent lookups of one alert make one call, and all
// get its answer.
func TestCoalescing(t *testing.T) {
	t.Parallel()
	const n = 50
	release := make(chan struct{})
	e := newEnv(t, nil, func(_ context.Context, id string) (*defender.User, error) {
		<-release
		return userFor(id), nil
	})
	users := make(chan *defender.User, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			r, err := e.cache.Lookup(context.Background(), alertA)
			if err != nil {
				t.Error(err)
			}
			users <- r.User
		})
	}
	waitFor(t, "every lookup to join the call", func() bool { return e.lookups(t, "coalesced") == n-1 })
	if e.cache.InFlight() != 1 {
		t.Errorf("InFlight = %d, want 1", e.cache.InFlight())
	}
	close(release)
	wg.Wait()
	close(users)
	var first *defender.User
	for u := range users {
		if first == nil {
			first = u
		}
		if u == nil || u != first {
			t.Errorf("user %p, want %p", u, first)
		}
	}
	e.wantCalls(t, 1)
	if e.cache.InFlight() != 0 {
		t.Errorf("InFlight = %d after the call", e.cache.InFlight())
	}
}

// TestFirstCallerLeaving: the flight goes on for the callers still waiting
// when the one that started it leaves, and its answer is kept.
func TestFirstCallerLeaving(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var callCtxErr atomic.Value
	e := newEnv(t, nil, func(ctx context.Context, id string) (*defender.User, error) {
		<-release
		callCtxErr.Store(fmt.Sprint(ctx.Err()))
		return userFor(id), nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, err := e.cache.Lookup(ctx, alertA)
		firstErr <- err
	}()
	waitFor(t, "the first lookup's call", func() bool { return e.next.calls.Load() == 1 })
	const others = 5
	var wg sync.WaitGroup
	for range others {
		wg.Go(func() {
			r, err := e.cache.Lookup(context.Background(), alertA)
			if err != nil || r.User == nil {
				t.Errorf("a remaining caller got %+v, %v", r, err)
			}
		})
	}
	waitFor(t, "the others to join", func() bool { return e.lookups(t, "coalesced") == others })
	cancel()
	if err := <-firstErr; !errors.Is(err, defender.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("the leaving caller got %v, want ErrUnavailable and context.Canceled", err)
	}
	close(release)
	wg.Wait()
	if got := callCtxErr.Load(); got != "<nil>" {
		t.Errorf("the call's context ended (%v) while callers waited", got)
	}
	if r, err := e.cache.Lookup(context.Background(), alertA); err != nil || !r.Cached {
		t.Errorf("the answer was not kept: %+v, %v", r, err)
	}
	e.wantCalls(t, 1)
}

// TestAbandonedBeforeTheCall: a flight whose every caller left while it was
// still waiting (for the budget, say) is given up: the lookup behind the
// cache sees its context end, nothing is kept, and the next lookup calls
// anew.
func TestAbandonedBeforeTheCall(t *testing.T) {
	t.Parallel()
	var abandoned atomic.Int32
	e := newEnv(t, nil, func(ctx context.Context, id string) (*defender.User, error) {
		if id == "waits" {
			<-ctx.Done()
			abandoned.Add(1)
			return nil, fmt.Errorf("%w: waiting for the call budget: %w", defender.ErrUnavailable, ctx.Err())
		}
		return userFor(id), nil
	})
	// Every caller joins before any deadline passes: a caller that left
	// before the next one joined would leave that one a flight of its own.
	var wg sync.WaitGroup
	ctxs := []*expiring{newExpiring(), newExpiring(), newExpiring()}
	for _, ctx := range ctxs {
		wg.Go(func() {
			if _, err := e.cache.Lookup(ctx, "waits"); !errors.Is(err, defender.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("got %v, want ErrUnavailable and DeadlineExceeded", err)
			}
		})
	}
	waitFor(t, "every lookup to join the flight", func() bool { return e.lookups(t, "coalesced") == len(ctxs)-1 })
	for _, ctx := range ctxs {
		ctx.expire()
	}
	wg.Wait()
	waitFor(t, "the flight to be given up", func() bool { return e.cache.InFlight() == 0 })
	if abandoned.Load() != 1 {
		t.Errorf("%d flights given up, want 1", abandoned.Load())
	}
	if _, _, ok := e.cache.Cached("waits"); ok {
		t.Error("an abandoned flight's error was kept")
	}
	e.wantCalls(t, 1)
}

// TestAbandonedAfterTheCall: a flight whose call was already sent when its
// last caller left still ends, and its answer is kept; a lookup arriving
// meanwhile waits for it rather than calling a second time.
func TestAbandonedAfterTheCall(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	e := newEnv(t, nil, func(_ context.Context, id string) (*defender.User, error) {
		<-release // a call already sent ignores its caller leaving
		return userFor(id), nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.cache.Lookup(ctx, alertA)
		done <- err
	}()
	waitFor(t, "the call", func() bool { return e.next.calls.Load() == 1 })
	cancel()
	if err := <-done; !errors.Is(err, defender.ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	late := make(chan cache.Result, 1)
	go func() {
		r, err := e.cache.Lookup(context.Background(), alertA)
		if err != nil {
			t.Error(err)
		}
		late <- r
	}()
	waitFor(t, "the late lookup to wait", func() bool { return e.lookups(t, "miss") == 2 })
	close(release)
	if r := <-late; r.User == nil || !r.Cached {
		t.Errorf("the late lookup got %+v, want the abandoned flight's kept answer", r)
	}
	if r, err := e.cache.Lookup(context.Background(), alertA); err != nil || !r.Cached {
		t.Errorf("not kept: %+v, %v", r, err)
	}
	e.wantCalls(t, 1)
}

// hookStore runs hook once, on the first Get that misses after arm.
type hookStore struct {
	cache.Store
	mu   sync.Mutex
	hook func()
}

func (s *hookStore) Get(id string) (cache.Entry, bool) {
	e, ok := s.Store.Get(id)
	s.mu.Lock()
	hook := s.hook
	if !ok {
		s.hook = nil
	}
	s.mu.Unlock()
	if !ok && hook != nil {
		hook()
	}
	return e, ok
}

// TestLookupBetweenStoreAndFlight: a lookup that misses the store just
// before a flight keeps its answer, and joins just after the flight ended,
// finds the answer rather than calling again.
func TestLookupBetweenStoreAndFlight(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	store := &hookStore{Store: cache.NewLRU(10, time.Hour)}
	e := newEnv(t, store, func(_ context.Context, id string) (*defender.User, error) {
		<-release
		return userFor(id), nil
	})
	first := make(chan error, 1)
	go func() {
		_, err := e.cache.Lookup(context.Background(), alertA)
		first <- err
	}()
	waitFor(t, "the first call", func() bool { return e.next.calls.Load() == 1 })
	store.mu.Lock()
	store.hook = func() {
		// This lookup has missed; the flight now ends before it joins.
		close(release)
		waitFor(t, "the flight to end", func() bool { return e.cache.InFlight() == 0 })
	}
	store.mu.Unlock()
	r, err := e.cache.Lookup(context.Background(), alertA)
	if err != nil || r.User == nil {
		t.Fatalf("got %+v, %v", r, err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	e.wantCalls(t, 1)
}

func TestNewRequiresAStore(t *testing.T) {
	t.Parallel()
	if _, err := cache.New(&fakeLookup{}, cache.Options{}); err == nil {
		t.Error("New without a Store succeeded")
	}
}

// BenchmarkCacheHit is a lookup answered from the store.
func BenchmarkCacheHit(b *testing.B) {
	c, err := cache.New(&fakeLookup{answer: func(_ context.Context, id string) (*defender.User, error) { return userFor(id), nil }},
		cache.Options{Store: cache.NewLRU(1000, time.Hour), Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Lookup(ctx, alertA); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		r, err := c.Lookup(ctx, alertA)
		if err != nil || !r.Cached {
			b.Fatal(r, err)
		}
	}
}

// TestCallerAlreadyGone: a lookup whose caller has gone before it starts
// starts no flight.
func TestCallerAlreadyGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.cache.Lookup(ctx, alertA); !errors.Is(err, defender.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want ErrUnavailable and context.Canceled", err)
	}
	if e.cache.InFlight() != 0 {
		t.Error("a flight was started")
	}
	e.wantCalls(t, 0)
}

// TestCallCarriesTheCallersPriority: the call made for a lookup reaches
// the budget with the priority of the caller's context, though it does not
// end with that context.
func TestCallCarriesTheCallersPriority(t *testing.T) {
	t.Parallel()
	got := make(chan budget.Priority, 1)
	e := newEnv(t, nil, func(ctx context.Context, id string) (*defender.User, error) {
		got <- budget.PriorityFrom(ctx)
		return userFor(id), nil
	})
	ctx, cancel := context.WithCancel(budget.WithPriority(context.Background(), budget.PriorityHigh))
	defer cancel()
	if _, err := e.cache.Lookup(ctx, alertA); err != nil {
		t.Fatal(err)
	}
	if p := <-got; p != budget.PriorityHigh {
		t.Errorf("the call went at priority %v, want the caller's %v", p, budget.PriorityHigh)
	}
}
