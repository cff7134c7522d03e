package cache_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/cache"
	"github.com/defender-enricher/defender-enricher/clock"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/redistest"
)

// fleet is replicas of one connector that share one Redis and one
// Defender (next): each replica has its own stores, clock and metrics.
type fleet struct {
	s      *redistest.Server
	rdb    *redis.Client // the test's own client, to look at the keys
	next   *fakeLookup
	prefix string
}

func newFleet(t *testing.T, s *redistest.Server, answer func(context.Context, string) (*defender.User, error)) *fleet {
	t.Helper()
	if answer == nil {
		answer = func(_ context.Context, id string) (*defender.User, error) { return userFor(id), nil }
	}
	// Subtests share a server: each fleet has keys of its own.
	prefix := fmt.Sprintf("%s{fleet-%d}:", s.Prefix(), fleets.Add(1))
	return &fleet{s: s, rdb: s.Client(t), next: &fakeLookup{answer: answer}, prefix: prefix}
}

var fleets atomic.Int64

// replicaOptions are what a replica may change; zero values take the
// defaults below.
type replicaOptions struct {
	rdb         redis.Scripter // nil: a client of the fleet's server of its own
	next        *fakeLookup    // nil: the fleet's
	ttl, negTTL time.Duration
	lockTTL     time.Duration
	timeout     time.Duration
	log         *slog.Logger
}

func (fl *fleet) replica(t *testing.T, o replicaOptions) *env {
	t.Helper()
	if o.rdb == nil {
		o.rdb = fl.s.Client(t)
	}
	if o.ttl == 0 {
		o.ttl = time.Hour
	}
	if o.negTTL == 0 {
		o.negTTL = 5 * time.Minute
	}
	if o.timeout == 0 {
		// Long enough for a loaded machine: these tests are about the
		// cache, not about a slow Redis.
		o.timeout = 10 * time.Second
	}
	if o.next == nil {
		o.next = fl.next
	}
	e := &env{
		next:  o.next,
		clock: clock.NewManual(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)),
		reg:   prometheus.NewRegistry(),
	}
	shared, err := cache.NewRedis(o.rdb, cache.RedisOptions{
		Prefix: fl.prefix, Timeout: o.timeout, LockTTL: o.lockTTL, Logger: o.log, Registerer: e.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(o.next, cache.Options{
		Store: cache.NewLRU(100, time.Hour), Users: cache.NewLRU(100, time.Hour), ReuseUser: true, Shared: shared,
		TTL: o.ttl, NegativeTTL: o.negTTL, Clock: e.clock, Registerer: e.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.cache = c
	return e
}

// key is the name in Redis of one of the fleet's keys.
func (fl *fleet) key(name string) string { return fl.prefix + name }

func (fl *fleet) pttl(t *testing.T, name string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := fl.rdb.PTTL(ctx, fl.key(name)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (fl *fleet) exists(t *testing.T, name string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := fl.rdb.Exists(ctx, fl.key(name)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func (fl *fleet) do(t *testing.T, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := fl.rdb.Do(ctx, args...).Err(); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
}

// expire ends the expiry of key name, which is at most d: miniredis's
// clock is moved on by d, a real Redis is told to expire it now.
func (fl *fleet) expire(t *testing.T, name string, d time.Duration) {
	t.Helper()
	if m := fl.s.Mini(); m != nil {
		m.FastForward(d)
	} else {
		fl.do(t, "PEXPIRE", fl.key(name), 1)
	}
	waitFor(t, name+" to expire", func() bool { return !fl.exists(t, name) })
}

// metric returns a counter of e's registry, the child of the given result
// label, or the counter itself when result is empty.
func (e *env) metric(t *testing.T, name, result string) int {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if result == "" {
				return int(m.GetCounter().GetValue())
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return 0
}

func (e *env) lockWaits(t *testing.T) int { return e.metric(t, "enricher_cache_lock_waits_total", "") }
func (e *env) storeErrors(t *testing.T) int {
	return e.metric(t, "enricher_cache_store_errors_total", "")
}
func (e *env) sharedHits(t *testing.T, result string) int {
	return e.metric(t, "enricher_cache_shared_hits_total", result)
}

// gates answers call k (from 0) with what the test sends on gate k.
type gates []chan func() (*defender.User, error)

func newGates(t *testing.T, n int) gates {
	g := make(gates, n)
	for i := range g {
		g[i] = make(chan func() (*defender.User, error), 1)
	}
	// Unblocks calls still waiting when a test fails.
	t.Cleanup(func() {
		for _, c := range g {
			select {
			case c <- func() (*defender.User, error) { return nil, errors.New("test over") }:
			default:
			}
		}
	})
	return g
}

func (g gates) answer() func(context.Context, string) (*defender.User, error) {
	var n atomic.Int32
	return func(context.Context, string) (*defender.User, error) {
		k := n.Add(1) - 1
		if int(k) >= len(g) {
			return nil, fmt.Errorf("call %d: the test expects %d", k+1, len(g))
		}
		return (<-g[k])()
	}
}

func userAnswer(u *defender.User) func() (*defender.User, error) {
	return func() (*defender.User, error) { return u, nil }
}

// lookupAsync looks alertID up on e with ref in a goroutine.
func lookupAsync(e *env, alertID string, ref defender.UserRef) <-chan lookupResult {
	ch := make(chan lookupResult, 1)
	go func() {
		r, err := e.cache.LookupFor(context.Background(), alertID, ref)
		ch <- lookupResult{r, err}
	}()
	return ch
}

type lookupResult struct {
	r   cache.Result
	err error
}

// recv is the result of a lookup started by lookupAsync. The deadline only
// guards against a hang.
func recv(t *testing.T, ch <-chan lookupResult) lookupResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(60 * time.Second):
		t.Fatal("timed out waiting for a lookup")
		return lookupResult{}
	}
}

// exactUser is an answer whose JSON a careless copy would change: keys
// sorted but not by byte order once escaped, a '&' and a '<' left as they
// came, characters outside ASCII, numbers as they were sent.
func exactUser(t *testing.T) *defender.User {
	t.Helper()
	u, err := defender.ParseUser([]byte(`{"@odata.context":"x","id":"contoso\\jnovák","accountName":"jnovák","accountDomain":"contoso",` +
		`"accountSid":"S-1-5-21-1-2-3-1001","logonTypes":"R&D <Network>","logOnMachinesCount":3,"x-new":{"b":[1.50,1e2,null],"a":"\u00e9\u003c"}}`))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestSharedHit: an alert looked up by one replica is a hit for another,
// with no call: a found user with its JSON exactly as the API gave it, and
// a 404. Each is kept in Redis for its TTL, and by the replica that read it
// for what was left of it there.
func TestSharedHit(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		for _, tt := range []struct {
			name   string
			answer func() (*defender.User, error)
			result string // of enricher_cache_shared_hits_total
			ttl    time.Duration
		}{
			{"found user", func() (*defender.User, error) { return exactUser(t), nil }, "hit", time.Hour},
			{"404", func() (*defender.User, error) { return nil, defender.ErrNotFound }, "negative_hit", 5 * time.Minute},
		} {
			t.Run(tt.name, func(t *testing.T) {
				fl := newFleet(t, s, func(context.Context, string) (*defender.User, error) { return tt.answer() })
				a, b := fl.replica(t, replicaOptions{}), fl.replica(t, replicaOptions{})
				ctx := context.Background()
				first, firstErr := a.cache.Lookup(ctx, alertA)
				if first.Cached || (firstErr != nil) != (tt.result == "negative_hit") {
					t.Fatalf("first replica: %+v, %v; want a call", first, firstErr)
				}
				if d := fl.pttl(t, "alert:"+alertA); d <= tt.ttl-time.Minute || d > tt.ttl {
					t.Fatalf("kept in Redis for %v, want %v", d, tt.ttl)
				}
				r, err := b.cache.Lookup(ctx, alertA)
				if !r.Cached || r.ByUser || !errors.Is(err, firstErr) {
					t.Fatalf("second replica: %+v, %v; want the first one's answer, kept", r, err)
				}
				if first.User != nil && (r.User == nil || !bytes.Equal(r.User.JSON, first.User.JSON) || r.User.ID != first.User.ID || r.User.AccountSID != first.User.AccountSID) {
					t.Fatalf("second replica's user %+v, want %+v with the same JSON", r.User, first.User)
				}
				a.wantCalls(t, 1)
				if b.sharedHits(t, tt.result) != 1 || b.lookups(t, "miss") != 1 {
					t.Errorf("second replica: %d shared %s, %d misses; want 1, 1", b.sharedHits(t, tt.result), tt.result, b.lookups(t, "miss"))
				}
				// Kept by the second replica too: its next lookup asks nobody.
				if r, err := b.cache.Lookup(ctx, alertA); !r.Cached || !errors.Is(err, firstErr) {
					t.Fatalf("second replica again: %+v, %v", r, err)
				}
				if b.sharedHits(t, tt.result) != 1 {
					t.Error("the second replica asked Redis again for what it keeps")
				}
				// Once it expires in Redis and in the replicas, the next
				// lookup calls.
				fl.expire(t, "alert:"+alertA, tt.ttl)
				b.clock.Advance(tt.ttl)
				if r, err := b.cache.Lookup(ctx, alertA); r.Cached || !errors.Is(err, firstErr) {
					t.Fatalf("after the TTL: %+v, %v; want a call", r, err)
				}
				a.wantCalls(t, 2)
			})
		}
	})
}

// TestSharedHitKeepsWhatIsLeft: an answer read from Redis is kept by the
// replica for the time it had left there, not for a whole TTL.
func TestSharedHitKeepsWhatIsLeft(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		fl := newFleet(t, s, nil)
		b := fl.replica(t, replicaOptions{})
		const left = 10 * time.Minute // written by a replica 50 minutes ago
		fl.do(t, "SET", fl.key("alert:"+alertA), userFor(alertA).JSON, "PX", left.Milliseconds())
		ctx := context.Background()
		if r, err := b.cache.Lookup(ctx, alertA); err != nil || !r.Cached || r.User.ID != userFor(alertA).ID {
			t.Fatalf("got %+v, %v; want the user kept in Redis", r, err)
		}
		b.clock.Advance(left - 5*time.Second) // the slack: what passed between the write and the read
		if _, err := b.cache.Lookup(ctx, alertA); err != nil || b.lookups(t, "hit") != 1 {
			t.Fatalf("before what was left: %v, %d hits; want a hit of the replica's own", err, b.lookups(t, "hit"))
		}
		b.clock.Advance(5 * time.Second)
		if _, err := b.cache.Lookup(ctx, alertA); err != nil || b.sharedHits(t, "hit") != 2 {
			t.Fatalf("after what was left: %v, %d shared hits; want Redis asked again", err, b.sharedHits(t, "hit"))
		}
		b.wantCalls(t, 0)
	})
}

// TestSharedUserIndex: an alert that names a user found by another
// replica for another alert is answered with that user, ByUser, with no
// call; a user kept under the name but with another SID is another account.
func TestSharedUserIndex(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		for _, tt := range []struct {
			name      string
			ref       defender.UserRef
			wantReuse bool
		}{
			{"by SID", refU1SID, true},
			{"by SID in another case", defender.UserRef{SID: strings.ToLower(sidU1)}, true},
			{"by domain and name in another case", defender.UserRef{Domain: "CONTOSO", Name: "U1"}, true},
			{"the same name with another SID", defender.UserRef{SID: sidU2, Domain: "contoso", Name: "u1"}, false},
			{"another user", defender.UserRef{Domain: "contoso", Name: "u2"}, false},
		} {
			t.Run(tt.name, func(t *testing.T) {
				fl := newFleet(t, s, u1Always)
				a, b := fl.replica(t, replicaOptions{}), fl.replica(t, replicaOptions{})
				ctx := context.Background()
				first, err := a.cache.LookupFor(ctx, alertA, defender.UserRef{})
				if err != nil || first.Cached {
					t.Fatalf("first replica: %+v, %v", first, err)
				}
				r, err := b.cache.LookupFor(ctx, alertB, tt.ref)
				if err != nil {
					t.Fatal(err)
				}
				if !tt.wantReuse {
					if r.Cached || r.ByUser {
						t.Fatalf("got %+v, want a call of its own", r)
					}
					a.wantCalls(t, 2)
					return
				}
				if !r.Cached || !r.ByUser || !bytes.Equal(r.User.JSON, first.User.JSON) {
					t.Fatalf("got %+v; want the first replica's user, by user", r)
				}
				a.wantCalls(t, 1)
				if b.sharedHits(t, "user_hit") != 1 || b.reused(t) != 1 {
					t.Errorf("%d shared user hits, %d reused; want 1, 1", b.sharedHits(t, "user_hit"), b.reused(t))
				}
				// Kept by the second replica for that alert, and by user.
				if r, err, ok := b.cache.CachedFor(alertB, defender.UserRef{}); !ok || err != nil || !r.Cached {
					t.Errorf("CachedFor the second alert = %+v, %v, %v", r, err, ok)
				}
				if r, err, ok := b.cache.CachedFor(alertC, tt.ref); !ok || err != nil || !r.ByUser {
					t.Errorf("CachedFor a third alert naming the user = %+v, %v, %v", r, err, ok)
				}
			})
		}
	})
}

// TestOneCallPerAlertAcrossReplicas: a burst of lookups of one alert on
// two replicas makes one call: one replica takes the alert's lock in Redis
// and calls, the other waits for its answer.
func TestOneCallPerAlertAcrossReplicas(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		release := make(chan struct{})
		var once sync.Once
		t.Cleanup(func() { once.Do(func() { close(release) }) })
		fl := newFleet(t, s, func(_ context.Context, id string) (*defender.User, error) {
			<-release
			return userFor(id), nil
		})
		const lockTTL = 30 * time.Second
		replicas := []*env{fl.replica(t, replicaOptions{lockTTL: lockTTL}), fl.replica(t, replicaOptions{lockTTL: lockTTL})}
		const n = 20
		results := make(chan lookupResult, len(replicas)*n)
		var wg sync.WaitGroup
		for _, e := range replicas {
			for range n {
				wg.Go(func() {
					r, err := e.cache.Lookup(context.Background(), alertA)
					results <- lookupResult{r, err}
				})
			}
		}
		waitFor(t, "one replica to call and the other to wait for its lock", func() bool {
			return fl.next.calls.Load() == 1 && replicas[0].lockWaits(t)+replicas[1].lockWaits(t) == 1
		})
		if d := fl.pttl(t, "lock:"+alertA); d <= 0 || d > lockTTL {
			t.Errorf("the lock expires in %v, want at most %v", d, lockTTL)
		}
		once.Do(func() { close(release) })
		wg.Wait()
		close(results)
		for res := range results {
			if res.err != nil || res.r.User == nil || res.r.User.ID != userFor(alertA).ID {
				t.Errorf("got %+v, %v", res.r, res.err)
			}
		}
		replicas[0].wantCalls(t, 1)
		waiter := replicas[0]
		if replicas[1].lockWaits(t) == 1 {
			waiter = replicas[1]
		}
		if waiter.sharedHits(t, "hit") != 1 {
			t.Errorf("the replica that waited has %d shared hits, want 1", waiter.sharedHits(t, "hit"))
		}
		for i, e := range replicas {
			if e.lookups(t, "coalesced") != n-1 {
				t.Errorf("replica %d: %d lookups joined its flight, want %d", i, e.lookups(t, "coalesced"), n-1)
			}
		}
		if fl.exists(t, "lock:"+alertA) {
			t.Error("the lock is still held after the call")
		}
	})
}

// TestLockReleasedOnlyByItsOwner: a replica whose lock expired while it
// called does not release the lock another replica took since.
func TestLockReleasedOnlyByItsOwner(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		g := newGates(t, 2)
		fl := newFleet(t, s, nil)
		fl.next.answer = g.answer()
		a, b, c := fl.replica(t, replicaOptions{}), fl.replica(t, replicaOptions{}), fl.replica(t, replicaOptions{})
		first := lookupAsync(a, alertA, defender.UserRef{})
		waitFor(t, "the first replica's call", func() bool { return fl.next.calls.Load() == 1 })
		fl.expire(t, "lock:"+alertA, 30*time.Second) // a's lock expires while it calls
		second := lookupAsync(b, alertA, defender.UserRef{})
		waitFor(t, "the second replica's call", func() bool { return fl.next.calls.Load() == 2 })
		g[0] <- func() (*defender.User, error) { return nil, &defender.APIError{StatusCode: 503, Attempts: 4} }
		if res := recv(t, first); res.err == nil {
			t.Fatalf("first replica: %+v, want its call's error", res.r)
		}
		if !fl.exists(t, "lock:"+alertA) {
			t.Fatal("the first replica released the lock the second one holds")
		}
		third := lookupAsync(c, alertA, defender.UserRef{})
		waitFor(t, "the third replica to wait for the second one's lock", func() bool { return c.lockWaits(t) == 1 })
		g[1] <- userAnswer(userFor(alertA))
		if res := recv(t, second); res.err != nil || res.r.Cached {
			t.Fatalf("second replica: %+v, %v; want its call's answer", res.r, res.err)
		}
		if res := recv(t, third); res.err != nil || !res.r.Cached {
			t.Fatalf("third replica: %+v, %v; want the second one's answer", res.r, res.err)
		}
		a.wantCalls(t, 2)
	})
}

// TestDeadOwnerFreesTheLock: a lock whose replica died is freed when it
// expires, and the replica that waited for it then calls.
func TestDeadOwnerFreesTheLock(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		fl := newFleet(t, s, nil)
		fl.do(t, "SET", fl.key("lock:"+alertA), "a-replica-that-died", "PX", time.Hour.Milliseconds())
		b := fl.replica(t, replicaOptions{})
		res := lookupAsync(b, alertA, defender.UserRef{})
		waitFor(t, "the replica to wait for the lock", func() bool { return b.lockWaits(t) == 1 })
		b.wantCalls(t, 0)
		fl.expire(t, "lock:"+alertA, time.Hour)
		r := recv(t, res)
		if r.err != nil || r.r.Cached || r.r.User == nil {
			t.Fatalf("got %+v, %v; want its own call's answer", r.r, r.err)
		}
		b.wantCalls(t, 1)
		if !fl.exists(t, "alert:"+alertA) || fl.exists(t, "lock:"+alertA) {
			t.Error("the answer was not kept, or the lock not released")
		}
	})
}

// TestFailedCallFreesTheLock: an owner whose call fails keeps nothing and
// releases the lock, and the replica that waited calls.
func TestFailedCallFreesTheLock(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		g := newGates(t, 2)
		fl := newFleet(t, s, nil)
		fl.next.answer = g.answer()
		a, b := fl.replica(t, replicaOptions{}), fl.replica(t, replicaOptions{})
		first := lookupAsync(a, alertA, defender.UserRef{})
		waitFor(t, "the first replica's call", func() bool { return fl.next.calls.Load() == 1 })
		second := lookupAsync(b, alertA, defender.UserRef{})
		waitFor(t, "the second replica to wait for the lock", func() bool { return b.lockWaits(t) == 1 })
		g[0] <- func() (*defender.User, error) { return nil, &defender.APIError{StatusCode: 503, Attempts: 4} }
		if res := recv(t, first); res.err == nil {
			t.Fatalf("first replica: %+v, want its call's error", res.r)
		}
		waitFor(t, "the second replica's own call", func() bool { return fl.next.calls.Load() == 2 })
		g[1] <- userAnswer(userFor(alertA))
		if res := recv(t, second); res.err != nil || res.r.Cached || res.r.User == nil {
			t.Fatalf("second replica: %+v, %v; want its own call's answer", res.r, res.err)
		}
		if b.sharedHits(t, "hit") != 0 {
			t.Error("the failed call's answer was shared")
		}
	})
}

// TestOwnerRenewsItsLock: while its call runs, the owner renews the lock,
// so that a call longer than LockTTL (a wait for the budget) keeps it.
func TestOwnerRenewsItsLock(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		release := make(chan struct{})
		var once sync.Once
		t.Cleanup(func() { once.Do(func() { close(release) }) })
		fl := newFleet(t, s, func(_ context.Context, id string) (*defender.User, error) {
			<-release
			return userFor(id), nil
		})
		const lockTTL = 600 * time.Millisecond
		a := fl.replica(t, replicaOptions{lockTTL: lockTTL})
		res := lookupAsync(a, alertA, defender.UserRef{})
		waitFor(t, "the call", func() bool { return fl.next.calls.Load() == 1 })
		if m := s.Mini(); m != nil {
			m.FastForward(lockTTL / 2) // miniredis's keys age only on its clock
		}
		least := fl.pttl(t, "lock:"+alertA)
		waitFor(t, "the lock's expiry to be set again", func() bool {
			d := fl.pttl(t, "lock:"+alertA)
			if d > lockTTL {
				t.Fatalf("the lock expires in %v, more than %v", d, lockTTL)
			}
			if d > least {
				return true
			}
			least = min(least, d)
			return false
		})
		once.Do(func() { close(release) })
		if r := recv(t, res); r.err != nil {
			t.Fatal(r.err)
		}
		if fl.exists(t, "lock:"+alertA) {
			t.Error("the lock outlived the call")
		}
	})
}

// TestRedisDown: with Redis down or stalled, a replica's own stores still
// answer, without asking Redis; a miss asks Redis once, within the
// timeout, and makes no call unless the call budget grants it, which it
// does not without Redis; an answer that cannot be written is counted and
// logged, and given to the caller all the same. Once Redis is back the
// replicas share again.
func TestRedisDown(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		for _, cut := range []string{"down", "stalled"} {
			t.Run(cut, func(t *testing.T) {
				proxy := s.Proxy(t)
				through := proxy.Client(t, s)
				fl := newFleet(t, s, nil)
				const timeout = 300 * time.Millisecond
				// The call behind the cache asks the shared budget, on the
				// same Redis, as the client does.
				bud, err := budget.NewRedis(through, budget.Limits{{Calls: 1000, Per: time.Second}},
					budget.RedisOptions{Prefix: fl.prefix, Timeout: timeout})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(bud.Close)
				var made atomic.Int32
				gated := &fakeLookup{answer: func(ctx context.Context, id string) (*defender.User, error) {
					done, err := bud.Acquire(ctx)
					if err != nil {
						return nil, fmt.Errorf("%w: waiting for the call budget: %w", defender.ErrUnavailable, err)
					}
					defer done()
					made.Add(1)
					return userFor(id), nil
				}}
				var logs syncBuffer
				a := fl.replica(t, replicaOptions{rdb: through, next: gated, timeout: timeout,
					log: slog.New(slog.NewTextHandler(&logs, nil))})
				// A replica whose budget is elsewhere: its calls go on, its
				// answers cannot be written.
				w := fl.replica(t, replicaOptions{rdb: through, timeout: timeout})
				b := fl.replica(t, replicaOptions{})
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // guards against a hang only
				defer cancel()

				waitFor(t, "the replica to call through the proxy", func() bool {
					_, err := a.cache.Lookup(ctx, alertA)
					return err == nil
				})
				if r, err := b.cache.Lookup(ctx, alertA); err != nil || !r.Cached {
					t.Fatalf("with Redis up: %+v, %v; want a shared hit", r, err)
				}
				if cut == "down" {
					proxy.Down()
				} else {
					proxy.Stall()
				}
				before := a.storeErrors(t)
				if r, err := a.cache.Lookup(ctx, alertA); err != nil || !r.Cached {
					t.Fatalf("Redis %s, a kept answer: %+v, %v", cut, r, err)
				}
				if a.storeErrors(t) != before {
					t.Fatal("a hit asked Redis")
				}
				calls := made.Load()
				_, err = a.cache.Lookup(ctx, alertB)
				if !errors.Is(err, defender.ErrUnavailable) || !errors.Is(err, budget.ErrStoreUnavailable) || errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Redis %s, a miss: %v; want unavailable, from the budget", cut, err)
				}
				if made.Load() != calls {
					t.Fatal("a call was made with the budget in Redis unreachable")
				}
				if a.storeErrors(t) != before+1 {
					t.Errorf("%d store errors, want %d: the read", a.storeErrors(t), before+1)
				}
				if r, err := w.cache.Lookup(ctx, alertC); err != nil || r.Cached {
					t.Fatalf("Redis %s, a miss with the budget elsewhere: %+v, %v; want its call's answer", cut, r, err)
				}
				if w.storeErrors(t) != 2 {
					t.Errorf("%d store errors, want 2: the read and the write", w.storeErrors(t))
				}
				if !strings.Contains(logs.String(), "the shared cache in Redis did not answer") || !strings.Contains(logs.String(), "ENRICHER_REDIS_TIMEOUT") {
					t.Errorf("no warning logged:\n%s", logs.String())
				}

				proxy.Up()
				var id string
				for i := 0; ; i++ {
					id = fmt.Sprintf("recovery_%d", i)
					_, err := a.cache.Lookup(ctx, id)
					if err == nil && fl.exists(t, "alert:"+id) {
						break
					}
					if ctx.Err() != nil {
						t.Fatalf("Redis never came back: %v", err)
					}
				}
				if r, err := b.cache.Lookup(ctx, id); err != nil || !r.Cached {
					t.Fatalf("once Redis is back: %+v, %v; want a shared hit", r, err)
				}
				if !strings.Contains(logs.String(), "the shared cache in Redis answers again") {
					t.Errorf("no line logged when Redis came back:\n%s", logs.String())
				}
			})
		}
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestNewRedisRefuses(t *testing.T) {
	s := redistest.NewMini(t)
	for _, tt := range []struct {
		name string
		rdb  redis.Scripter
		opts cache.RedisOptions
	}{
		{"no client", nil, cache.RedisOptions{Prefix: "p:"}},
		{"no prefix", s.Client(t), cache.RedisOptions{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := cache.NewRedis(tt.rdb, tt.opts); err == nil {
				t.Error("NewRedis succeeded")
			}
		})
	}
}

// BenchmarkSharedHit is a lookup that misses the replica's own store and
// is answered from Redis: one script and the user read again.
func BenchmarkSharedHit(b *testing.B) {
	s := redistest.New(b)
	prefix := s.Prefix() + "{fleet}:"
	shared, err := cache.NewRedis(s.Client(b), cache.RedisOptions{Prefix: prefix, Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	next := &fakeLookup{answer: func(_ context.Context, id string) (*defender.User, error) { return userFor(id), nil }}
	// A store of one entry, and two alerts looked up in turn: every lookup
	// misses the store.
	c, err := cache.New(next, cache.Options{Store: cache.NewLRU(1, time.Hour), Shared: shared})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	ids := []string{alertA, alertB}
	for _, id := range ids {
		if _, err := c.Lookup(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r, err := c.Lookup(ctx, ids[i%2])
		if err != nil || !r.Cached {
			b.Fatal(r, err)
		}
		i++
	}
	if next.calls.Load() != 2 {
		b.Fatalf("%d calls, want 2", next.calls.Load())
	}
}
