package cache_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
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

const (
	alertB = "da637308392288907382_-880718168"
	alertC = "636688558380765161_2136280442"
	sidU1  = "S-1-5-21-3418539524-1496149344-567949748-86813"
	sidU2  = "S-1-5-21-3418539524-1496149344-567949748-86814"
)

// namedUser is an API answer for contoso\name with sid.
func namedUser(name, sid string) *defender.User {
	return &defender.User{
		ID: `contoso\` + name, AccountName: name, AccountDomain: "contoso", AccountSID: sid,
		JSON: []byte(`{"accountSid":"` + sid + `","id":"contoso\\` + name + `"}`),
	}
}

var (
	refU1     = defender.UserRef{SID: sidU1, Domain: "contoso", Name: "u1"}
	refU1SID  = defender.UserRef{SID: sidU1}
	refU1Name = defender.UserRef{Domain: "contoso", Name: "u1"}
)

// newReuseEnv is newEnv with ReuseUser on (reuse false: off, the user
// store still given).
func newReuseEnv(t *testing.T, reuse bool, answer func(context.Context, string) (*defender.User, error)) *env {
	t.Helper()
	e := &env{
		next:  &fakeLookup{answer: answer},
		clock: clock.NewManual(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)),
		reg:   prometheus.NewRegistry(),
	}
	c, err := cache.New(e.next, cache.Options{
		Store: cache.NewLRU(100, time.Hour), Users: cache.NewLRU(100, time.Hour), ReuseUser: reuse,
		TTL: time.Hour, NegativeTTL: 5 * time.Minute, Clock: e.clock, Registerer: e.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.cache = c
	return e
}

// reused returns enricher_user_reuse_total.
func (e *env) reused(t *testing.T) int {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "enricher_user_reuse_total" {
			return int(mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	t.Fatal("no enricher_user_reuse_total")
	return 0
}

// u1Always answers contoso\u1 for every alert.
func u1Always(context.Context, string) (*defender.User, error) { return namedUser("u1", sidU1), nil }

// TestReuseByUser: an alert that names a user found for another alert is
// answered from the cache, by SID or by domain\name in any case, and the
// answer is kept for it too.
func TestReuseByUser(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name        string
		first, then defender.UserRef
	}{
		{"by SID", refU1, refU1SID},
		{"by SID in another case", refU1, defender.UserRef{SID: strings.ToLower(sidU1)}},
		{"by domain and name", refU1, refU1Name},
		{"by domain and name in another case", refU1, defender.UserRef{Domain: "CONTOSO", Name: "U1"}},
		{"found for an alert that named nobody", defender.UserRef{}, refU1SID},
		{"found for an alert that named it otherwise", refU1SID, refU1Name},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newReuseEnv(t, true, u1Always)
			ctx := context.Background()
			r, err := e.cache.LookupFor(ctx, alertA, tt.first)
			if err != nil || r.Cached || r.ByUser {
				t.Fatalf("first alert: %+v, %v; want a call", r, err)
			}
			first := r.User
			r, err = e.cache.LookupFor(ctx, alertB, tt.then)
			if err != nil || !r.ByUser || !r.Cached || r.User != first {
				t.Fatalf("second alert: %+v, %v; want the first alert's user, by user", r, err)
			}
			e.wantCalls(t, 1)
			// Kept for the second alert too, as its own answer from now on.
			r, err, ok := e.cache.CachedFor(alertB, defender.UserRef{})
			if !ok || err != nil || r.User != first || !r.Cached || r.ByUser {
				t.Errorf("CachedFor the second alert = %+v, %v, %v; want the answer kept for it", r, err, ok)
			}
			if e.reused(t) != 1 || e.lookups(t, "user_hit") != 1 || e.lookups(t, "hit") != 1 || e.lookups(t, "miss") != 1 {
				t.Errorf("metrics: %d reused, %d user hits, %d hits, %d misses; want 1 of each",
					e.reused(t), e.lookups(t, "user_hit"), e.lookups(t, "hit"), e.lookups(t, "miss"))
			}
		})
	}
}

// TestNoReuse: the API is asked when the alert names another user, names
// it too vaguely to match, names nobody (or several, which the pipeline
// passes as nobody), when the other alert's answer was a 404, and when
// reuse is off.
func TestNoReuse(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		reuse  bool
		answer func(context.Context, string) (*defender.User, error)
		first  defender.UserRef
		then   defender.UserRef
	}{
		{"another SID", true, u1Always, refU1, defender.UserRef{SID: sidU2}},
		{"another name", true, u1Always, refU1, defender.UserRef{Domain: "contoso", Name: "u2"}},
		{"another domain", true, u1Always, refU1, defender.UserRef{Domain: "contoso.com", Name: "u1"}},
		{"a SID and a name of other users", true, u1Always, refU1, defender.UserRef{SID: sidU2, Domain: "contoso", Name: "u2"}},
		{"the same name with another SID", true, u1Always, refU1, defender.UserRef{SID: sidU2, Domain: "contoso", Name: "u1"}},
		{"a name without a domain", true, u1Always, refU1, defender.UserRef{Name: "u1"}},
		{"nobody, or several users", true, u1Always, refU1, defender.UserRef{}},
		{"a 404 for the first alert", true, func(context.Context, string) (*defender.User, error) { return nil, defender.ErrNotFound }, refU1, refU1},
		{"reuse off", false, u1Always, refU1, refU1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newReuseEnv(t, tt.reuse, tt.answer)
			ctx := context.Background()
			_, errA := e.cache.LookupFor(ctx, alertA, tt.first)
			if _, _, ok := e.cache.CachedFor(alertB, tt.then); ok {
				t.Fatal("CachedFor answered the second alert")
			}
			r, err := e.cache.LookupFor(ctx, alertB, tt.then)
			if r.ByUser || r.Cached || !errors.Is(err, errA) {
				t.Fatalf("second alert: %+v, %v; want a call of its own", r, err)
			}
			e.wantCalls(t, 2)
			if e.reused(t) != 0 || e.lookups(t, "user_hit") != 0 {
				t.Errorf("%d reused, %d user hits; want none", e.reused(t), e.lookups(t, "user_hit"))
			}
		})
	}
}

// TestReuseExpiresWithTheUser: a user lives TTL from its call, for the
// alert it was found for and for every alert it was reused for: reuse does
// not make it live longer.
func TestReuseExpiresWithTheUser(t *testing.T) {
	t.Parallel()
	e := newReuseEnv(t, true, u1Always)
	ctx := context.Background()
	if _, err := e.cache.LookupFor(ctx, alertA, refU1); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(30 * time.Minute)
	if r, err := e.cache.LookupFor(ctx, alertB, refU1SID); err != nil || !r.ByUser {
		t.Fatalf("half-way: %+v, %v; want a reuse", r, err)
	}
	e.clock.Advance(30*time.Minute - time.Nanosecond)
	if r, _, ok := e.cache.CachedFor(alertB, defender.UserRef{}); !ok || r.User == nil {
		t.Fatalf("just before the TTL: %+v, %v; want the reused answer kept", r, ok)
	}
	if r, _, ok := e.cache.CachedFor(alertC, refU1Name); !ok || !r.ByUser {
		t.Fatalf("just before the TTL: %+v, %v; want a reuse for a third alert", r, ok)
	}
	e.wantCalls(t, 1)
	e.clock.Advance(time.Nanosecond)
	for _, id := range []string{alertA, alertB, alertC} {
		if _, _, ok := e.cache.CachedFor(id, refU1); ok {
			t.Errorf("%s: answered from the cache at the TTL", id)
		}
	}
	if r, err := e.cache.LookupFor(ctx, alertB, refU1); err != nil || r.ByUser || r.Cached {
		t.Fatalf("at the TTL: %+v, %v; want a call", r, err)
	}
	e.wantCalls(t, 2)
}

// TestCoalescingOnTheUser: concurrent lookups of different alerts that name
// one user make one call, and all get its answer.
func TestCoalescingOnTheUser(t *testing.T) {
	t.Parallel()
	const n = 50
	release := make(chan struct{})
	e := newReuseEnv(t, true, func(ctx context.Context, id string) (*defender.User, error) {
		<-release
		return u1Always(ctx, id)
	})
	refs := []defender.UserRef{refU1, refU1SID, refU1Name, {Domain: "Contoso", Name: "U1"}}
	type got struct {
		id string
		r  cache.Result
	}
	results := make(chan got, n)
	var wg sync.WaitGroup
	lookup := func(i int, ref defender.UserRef) {
		id := fmt.Sprintf("da6374729003828388%02d_1", i)
		wg.Go(func() {
			r, err := e.cache.LookupFor(context.Background(), id, ref)
			if err != nil {
				t.Error(err)
			}
			results <- got{id, r}
		})
	}
	// The first alert names u1 by SID and by name, so that every other ref
	// shares a key with it: a ref by SID alone and one by name alone would
	// each find no call of the other.
	lookup(0, refU1)
	waitFor(t, "the first alert's call", func() bool { return e.next.calls.Load() == 1 })
	for i := 1; i < n; i++ {
		lookup(i, refs[i%len(refs)])
	}
	waitFor(t, "every other lookup to wait for the call", func() bool { return e.lookups(t, "user_coalesced") == n-1 })
	if m := e.lookups(t, "miss"); m != 1 || e.next.calls.Load() != 1 {
		t.Fatalf("%d misses, %d calls while the call runs; want 1 and 1", m, e.next.calls.Load())
	}
	if e.cache.InFlight() != n {
		t.Errorf("InFlight = %d, want %d: every alert has a flight", e.cache.InFlight(), n)
	}
	close(release)
	wg.Wait()
	close(results)
	var first *defender.User
	byUser := 0
	for g := range results {
		if first == nil {
			first = g.r.User
		}
		if g.r.User == nil || g.r.User != first {
			t.Errorf("%s: user %p, want %p", g.id, g.r.User, first)
		}
		if g.r.ByUser {
			byUser++
		}
		if _, _, ok := e.cache.CachedFor(g.id, defender.UserRef{}); !ok {
			t.Errorf("%s: answer not kept", g.id)
		}
	}
	e.wantCalls(t, 1)
	if byUser != n-1 || e.reused(t) != n-1 {
		t.Errorf("%d answers by user, %d counted; want %d", byUser, e.reused(t), n-1)
	}
	if e.cache.InFlight() != 0 {
		t.Errorf("InFlight = %d after the call", e.cache.InFlight())
	}
}

// TestUserWaitThenOwnCall: a lookup that waited for another alert's call
// for its user makes its own call when that answer is not its user.
func TestUserWaitThenOwnCall(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		a    func() (*defender.User, error) // the API's answer for alertA
	}{
		{"another user", func() (*defender.User, error) { return namedUser("u2", sidU2), nil }},
		{"a 404", func() (*defender.User, error) { return nil, defender.ErrNotFound }},
		{"an error", func() (*defender.User, error) { return nil, &defender.APIError{StatusCode: 503, Attempts: 4} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			e := newReuseEnv(t, true, func(ctx context.Context, id string) (*defender.User, error) {
				if id == alertA {
					<-release
					return tt.a()
				}
				return u1Always(ctx, id)
			})
			ctx := context.Background()
			aDone := make(chan struct{})
			go func() {
				defer close(aDone)
				_, _ = e.cache.LookupFor(ctx, alertA, refU1) // the alert names u1; the API says otherwise
			}()
			waitFor(t, "the first alert's call", func() bool { return e.next.calls.Load() == 1 })
			bDone := make(chan cache.Result, 1)
			go func() {
				r, err := e.cache.LookupFor(ctx, alertB, refU1)
				if err != nil {
					t.Error(err)
				}
				bDone <- r
			}()
			waitFor(t, "the second alert to wait for the first's call", func() bool { return e.lookups(t, "user_coalesced") == 1 })
			if n := e.next.calls.Load(); n != 1 {
				t.Fatalf("%d calls while the second alert waits, want 1", n)
			}
			close(release)
			<-aDone
			r := <-bDone
			if r.User == nil || r.User.ID != `contoso\u1` || r.ByUser || r.Cached {
				t.Fatalf("second alert: %+v; want u1 from a call of its own", r)
			}
			e.wantCalls(t, 2)
			if e.reused(t) != 0 {
				t.Errorf("%d reused, want 0", e.reused(t))
			}
		})
	}
}

// TestAnswersThatAreNotTheUser: alerts that all name one user, but all of
// whose answers are 404s, each get their own answer from a call of their
// own, whatever order they ran in.
func TestAnswersThatAreNotTheUser(t *testing.T) {
	t.Parallel()
	const n = 10
	e := newReuseEnv(t, true, func(context.Context, string) (*defender.User, error) { return nil, defender.ErrNotFound })
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("da6374729003828388%02d_1", i)
			if r, err := e.cache.LookupFor(context.Background(), id, refU1); !errors.Is(err, defender.ErrNotFound) || r.ByUser {
				t.Errorf("%s: %+v, %v; want a 404 of its own", id, r, err)
			}
		})
	}
	wg.Wait()
	e.wantCalls(t, n)
	if e.cache.InFlight() != 0 {
		t.Errorf("InFlight = %d", e.cache.InFlight())
	}
}

// TestUserWaitKeepsTheCallAlive: the call another alert waits for goes on
// when its own caller leaves, and both alerts get its answer.
func TestUserWaitKeepsTheCallAlive(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var callCtxErr atomic.Value
	e := newReuseEnv(t, true, func(ctx context.Context, id string) (*defender.User, error) {
		<-release
		callCtxErr.Store(fmt.Sprint(ctx.Err()))
		return u1Always(ctx, id)
	})
	ctxA, cancelA := context.WithCancel(context.Background())
	errA := make(chan error, 1)
	go func() {
		_, err := e.cache.LookupFor(ctxA, alertA, refU1)
		errA <- err
	}()
	waitFor(t, "the first alert's call", func() bool { return e.next.calls.Load() == 1 })
	bDone := make(chan cache.Result, 1)
	go func() {
		r, err := e.cache.LookupFor(context.Background(), alertB, refU1SID)
		if err != nil {
			t.Error(err)
		}
		bDone <- r
	}()
	waitFor(t, "the second alert to wait", func() bool { return e.lookups(t, "user_coalesced") == 1 })
	cancelA()
	if err := <-errA; !errors.Is(err, defender.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("the leaving caller got %v", err)
	}
	close(release)
	if r := <-bDone; !r.ByUser || r.User == nil {
		t.Errorf("second alert: %+v; want the first alert's answer", r)
	}
	if got := callCtxErr.Load(); got != "<nil>" {
		t.Errorf("the call's context ended (%v) while another alert waited for it", got)
	}
	if r, err := e.cache.LookupFor(context.Background(), alertA, refU1); err != nil || !r.Cached || r.ByUser {
		t.Errorf("the first alert's answer was not kept: %+v, %v", r, err)
	}
	e.wantCalls(t, 1)
}

// TestUserWaitAbandoned: when every caller of both alerts leaves before the
// call is sent, the call is given up, as any abandoned flight. (That it
// goes on while one of them waits is TestUserWaitKeepsTheCallAlive.)
func TestUserWaitAbandoned(t *testing.T) {
	t.Parallel()
	var abandoned atomic.Int32
	e := newReuseEnv(t, true, func(ctx context.Context, id string) (*defender.User, error) {
		<-ctx.Done()
		abandoned.Add(1)
		return nil, fmt.Errorf("%w: waiting for the call budget: %w", defender.ErrUnavailable, ctx.Err())
	})
	ctxA, ctxB := newExpiring(), newExpiring()
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := e.cache.LookupFor(ctxA, alertA, refU1); !errors.Is(err, defender.ErrUnavailable) {
			t.Errorf("first alert: %v", err)
		}
	})
	waitFor(t, "the first alert's call", func() bool { return e.next.calls.Load() == 1 })
	wg.Go(func() {
		if _, err := e.cache.LookupFor(ctxB, alertB, refU1); !errors.Is(err, defender.ErrUnavailable) {
			t.Errorf("second alert: %v", err)
		}
	})
	waitFor(t, "the second alert to wait", func() bool { return e.lookups(t, "user_coalesced") == 1 })
	ctxA.expire()
	ctxB.expire()
	wg.Wait()
	waitFor(t, "both flights to end", func() bool { return e.cache.InFlight() == 0 })
	if abandoned.Load() != 1 {
		t.Errorf("%d calls given up, want 1", abandoned.Load())
	}
	for _, id := range []string{alertA, alertB} {
		if _, _, ok := e.cache.CachedFor(id, refU1); ok {
			t.Errorf("%s: something was kept", id)
		}
	}
	e.wantCalls(t, 1)
}

func TestReuseNeedsAUserStore(t *testing.T) {
	t.Parallel()
	if _, err := cache.New(&fakeLookup{}, cache.Options{Store: cache.NewLRU(1, time.Hour), ReuseUser: true}); err == nil {
		t.Error("New with ReuseUser and no Users succeeded")
	}
}

// TestReusedForAnotherCallerOfTheAlert: a lookup of an alert that names no
// user, joining the flight of the same alert whose user was reused from
// another alert's call (another record of one envelope, say), gets the
// alert's kept answer: Cached, not ByUser.
func TestReusedForAnotherCallerOfTheAlert(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	e := newReuseEnv(t, true, func(ctx context.Context, id string) (*defender.User, error) {
		<-release
		return u1Always(ctx, id)
	})
	results := make(chan cache.Result, 3)
	go func() {
		r, _ := e.cache.LookupFor(context.Background(), alertA, refU1)
		results <- r
	}()
	waitFor(t, "the first alert's call", func() bool { return e.next.calls.Load() == 1 })
	go func() {
		r, _ := e.cache.LookupFor(context.Background(), alertB, refU1)
		results <- r
	}()
	waitFor(t, "alert B waiting for A's call", func() bool { return e.lookups(t, "user_coalesced") == 1 })
	go func() {
		r, _ := e.cache.LookupFor(context.Background(), alertB, defender.UserRef{})
		results <- r
	}()
	waitFor(t, "B's second lookup joining B's flight", func() bool { return e.lookups(t, "coalesced") == 1 })
	close(release)
	var byUser, kept int
	for range 3 {
		r := <-results
		switch {
		case r.ByUser:
			byUser++
		case r.Cached:
			kept++
		}
	}
	if byUser != 1 || kept != 1 {
		t.Errorf("%d answers by user and %d kept, want 1 and 1 (and A's own call)", byUser, kept)
	}
	e.wantCalls(t, 1)
}

// TestNoWaitBehindALowerPriority: a lookup does not wait for another
// alert's call for its user when that call goes at a lower budget priority
// (a deferred lookup the budget holds back, say): it makes its own call.
func TestNoWaitBehindALowerPriority(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	e := newReuseEnv(t, true, func(ctx context.Context, id string) (*defender.User, error) {
		if id == alertA {
			<-release
		}
		return u1Always(ctx, id)
	})
	defer close(release)
	low := make(chan error, 1)
	go func() {
		_, err := e.cache.LookupFor(budget.WithPriority(context.Background(), budget.PriorityDeferred), alertA, refU1)
		low <- err
	}()
	waitFor(t, "the deferred lookup's call", func() bool { return e.next.calls.Load() == 1 })
	r, err := e.cache.LookupFor(budget.WithPriority(context.Background(), budget.PriorityHigh), alertB, refU1)
	if err != nil || r.ByUser {
		t.Fatalf("High lookup: %+v, %v; want its own call, not a wait behind the deferred one", r, err)
	}
	e.wantCalls(t, 2)
	// The other way round, a lower priority waits for a higher one.
	r, err = e.cache.LookupFor(budget.WithPriority(context.Background(), budget.PriorityLow), alertC, refU1)
	if err != nil || !r.ByUser {
		t.Errorf("Low lookup after the High one: %+v, %v; want the kept user", r, err)
	}
}
