// Package cache keeps Defender answers so that each alert costs at most one
// call: found users for TTL, 404 answers for NegativeTTL, errors never.
// Concurrent lookups of one alert id share one call, and that call is not
// cancelled because its first caller went away: it runs while anyone waits
// for it, and once sent it runs to its end and its answer is kept.
//
// With ReuseUser, calls are also shared by user: an alert that names its
// user (a defender.UserRef) is answered without a call of its own when the
// cache holds that exact user, found for another alert, or when a call for
// another alert that named the same user is running and answers with that
// user. A burst of alerts about one user then costs one call. See
// CachedFor and LookupFor.
//
// With Options.Shared (Redis), the replicas of a fleet share the answers,
// the users found and the calls: a lookup that misses this replica's stores
// asks Redis before it calls, and takes the alert's lock there, so that an
// alert looked up by one replica is a hit for the others and the fleet
// makes one call per alert. The hit path never asks Redis. See Redis.
package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/clock"
	"github.com/defender-enricher/defender-enricher/defender"
)

// Entry is one kept answer: a user, or a 404 when User is nil. A user
// reused from another alert's answer is kept as one, until it expires for
// that alert. (Entry is copied on every hit: it stays small.)
type Entry struct {
	User    *defender.User
	Expires time.Time
}

// Store keeps entries, in this process: the cache reads it on its hit path,
// which must not wait (Options.Shared is the level shared by replicas).
// Implementations are safe for concurrent use and may forget entries at any
// time (a bounded store must).
type Store interface {
	Get(alertID string) (Entry, bool)
	Add(alertID string, e Entry)
}

// LRU is a Store bounded in size, over golang-lru's expirable cache. Entries
// also carry their own expiry (Cache checks it), because found users and
// 404 answers live for different times; the LRU's TTL is only the longest of
// them, to free memory.
type LRU struct{ lru *expirable.LRU[string, Entry] }

// NewLRU returns a store of at most size entries, each dropped at the latest
// maxTTL after it was added. golang-lru v2.0.7 starts a goroutine per cache
// that cannot be stopped: make one per process.
func NewLRU(size int, maxTTL time.Duration) *LRU {
	return &LRU{lru: expirable.NewLRU[string, Entry](size, nil, maxTTL)}
}

// Get returns the entry for alertID.
func (l *LRU) Get(alertID string) (Entry, bool) { return l.lru.Get(alertID) }

// Add keeps e for alertID, evicting the least recently used entry if full.
func (l *LRU) Add(alertID string, e Entry) { l.lru.Add(alertID, e) }

// Len returns the number of entries.
func (l *LRU) Len() int { return l.lru.Len() }

// Lookup is what the cache sits in front of: defender.Client, which asks
// the circuit breaker before every call.
type Lookup interface {
	User(ctx context.Context, alertID string) (*defender.User, error)
}

// Options configure a Cache. Store is required, and Users with ReuseUser.
type Options struct {
	Store       Store
	TTL         time.Duration // how long a found user is kept; default 1h
	NegativeTTL time.Duration // how long a 404 is kept; default 5m
	// ReuseUser answers an alert that names its user from the answer for
	// another alert, when that answer is exactly the user named (see
	// LookupFor). False: the refs given to CachedFor and LookupFor are
	// ignored.
	ReuseUser bool
	// Users keeps every found user by its accountSid and by its id, for
	// ReuseUser, each entry until the user's own entry expires. Its keys
	// are "sid:" and "id:" followed by the lowercased value; it is bounded
	// as Store is (an LRU of the same size holds half as many users, at
	// most two keys each).
	Users Store
	// Shared, when set, is the level behind Store and Users that every
	// replica shares: a lookup that misses them asks it before it calls,
	// keeps what it finds in Store and Users (until it expires there), and
	// writes its call's answer to it. Nil: this process's stores alone.
	Shared     *Redis
	Clock      clock.Clock
	Registerer prometheus.Registerer
}

// Result is the answer of a lookup.
type Result struct {
	User   *defender.User // nil on error
	Cached bool           // answered from the store, no call made for it
	// ByUser: the answer for another alert that named the same user, from
	// the store or from that alert's call; no call was made for this one.
	ByUser bool
}

// maxUserWaits is how many calls for other alerts that named its user a
// lookup waits for, one after the other, when their answers are not that
// user (a 404, an error, another user), before it makes its own call.
const maxUserWaits = 3

// Cache is a Lookup with a store in front and calls coalesced. It is safe
// for concurrent use.
type Cache struct {
	next    Lookup
	store   Store
	users   Store // nil unless reuse
	reuse   bool
	ttl     time.Duration
	negTTL  time.Duration
	clock   clock.Clock
	lookups *prometheus.CounterVec
	// The children of lookups, resolved once: a hit costs no label lookup.
	hits, negativeHits, userHits, misses, coalesced, userCoalesced prometheus.Counter
	reused                                                         prometheus.Counter
	// With shared: answers found in Redis, by kind, and waits for another
	// replica's lock.
	shared                                         *Redis
	sharedHits, sharedNegativeHits, sharedUserHits prometheus.Counter
	lockWaits                                      prometheus.Counter

	mu      sync.Mutex
	flights map[string]*flight
	// userFlights holds, by user key, the flight calling for an alert that
	// named that user.
	userFlights map[string]*flight
}

// A flight is one call to next for one alert id, shared by every caller
// that wants that id while it runs.
type flight struct {
	ctx     context.Context
	prio    budget.Priority // of its call, its first caller's
	cancel  context.CancelFunc
	waiters int     // guarded by Cache.mu; a flight waiting for this one counts as one
	prev    *flight // an abandoned flight for the same id still running
	ref     defender.UserRef
	// via is the flight of another alert that named ref, whose answer
	// this one waits for; set by claim. Read and cleared by run.
	via    *flight
	waits  int      // answers of other flights waited for that were not ref
	keys   []string // user keys this flight is registered under; guarded by Cache.mu
	missed bool     // counted as a miss
	done   chan struct{}
	answer // set before done is closed
}

// answer is what a flight ends with.
type answer struct {
	user    *defender.User
	err     error
	expires time.Time // of the kept entry, when user is set
	cached  bool
	byUser  bool
}

func (a *answer) result() (Result, error) {
	return Result{User: a.user, Cached: a.cached, ByUser: a.byUser}, a.err
}

// resultFor is the answer as a caller naming ref sees it. A user reused
// for the flight's alert is, for a caller of the same alert that does not
// name that user (another record of the alert's envelope, say), this
// alert's kept answer: Cached, not ByUser, as its later events see it.
func (f *flight) resultFor(ref defender.UserRef) (Result, error) {
	r, err := f.result()
	if r.ByUser && !r.User.Is(ref) {
		r.ByUser, r.Cached = false, true
	}
	return r, err
}

// New returns a Cache in front of next.
func New(next Lookup, o Options) (*Cache, error) {
	if o.Store == nil {
		return nil, errors.New("cache: Store is required")
	}
	if o.TTL <= 0 {
		o.TTL = time.Hour
	}
	if o.NegativeTTL <= 0 {
		o.NegativeTTL = 5 * time.Minute
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.ReuseUser && o.Users == nil {
		return nil, errors.New("cache: Users is required with ReuseUser")
	}
	c := &Cache{
		next: next, store: o.Store, reuse: o.ReuseUser, ttl: o.TTL, negTTL: o.NegativeTTL, clock: o.Clock,
		flights: make(map[string]*flight),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enricher_cache_lookups_total",
			Help: "Lookups by result: hit (the alert's kept user), negative_hit (its kept 404), user_hit (the kept user of another alert, which this one names), " +
				"miss (a call started, after asking the cache the replicas share when there is one), coalesced (joined the alert's call in progress), user_coalesced (waited for the call of another alert that named the same user).",
		}, []string{"result"}),
		reused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "enricher_user_reuse_total",
			Help: "Lookups answered with the user found for another alert that named the same user, kept or from that alert's call: each a call saved.",
		}),
	}
	if c.reuse {
		c.users = o.Users
		c.userFlights = make(map[string]*flight)
	}
	collectors := []prometheus.Collector{c.lookups, c.reused}
	if o.Shared != nil {
		c.shared = o.Shared
		hits := prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enricher_cache_shared_hits_total",
			Help: "Lookups that missed this replica's cache and were answered from the cache the replicas share in Redis, with no call: hit (the alert's user), negative_hit (its 404), user_hit (the user of another alert, which this one names).",
		}, []string{"result"})
		c.sharedHits = hits.WithLabelValues("hit")
		c.sharedNegativeHits = hits.WithLabelValues("negative_hit")
		c.sharedUserHits = hits.WithLabelValues("user_hit")
		c.lockWaits = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "enricher_cache_lock_waits_total",
			Help: "Lookups that found their alert's lock in Redis held by another replica, and waited for that replica's answer instead of calling.",
		})
		collectors = append(collectors, hits, c.lockWaits)
	}
	c.hits = c.lookups.WithLabelValues("hit")
	c.negativeHits = c.lookups.WithLabelValues("negative_hit")
	c.userHits = c.lookups.WithLabelValues("user_hit")
	c.misses = c.lookups.WithLabelValues("miss")
	c.coalesced = c.lookups.WithLabelValues("coalesced")
	c.userCoalesced = c.lookups.WithLabelValues("user_coalesced")
	if o.Registerer != nil {
		for _, m := range collectors {
			if err := o.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("cache: registering metrics: %w", err)
			}
		}
	}
	return c, nil
}

// Cached is CachedFor with no user named: the alert id's own entry only.
func (c *Cache) Cached(alertID string) (u *defender.User, err error, ok bool) {
	r, err, ok := c.CachedFor(alertID, defender.UserRef{})
	return r.User, err, ok
}

// CachedFor returns the kept answer for alertID without waiting or
// calling; ok is false on a miss. err is defender.ErrNotFound for a kept
// 404. When alertID has no entry, ReuseUser is on and ref is matchable
// (defender.UserRef.Matchable), a user found for another alert that is
// exactly ref (defender.User.Is) answers instead, with ByUser set; it is
// then kept for alertID too, until the user's own entry expires, and
// answers alertID's later lookups as any kept answer (ByUser not set).
func (c *Cache) CachedFor(alertID string, ref defender.UserRef) (Result, error, bool) {
	// The hit path: the store, one clock reading, no more.
	if e, ok := c.store.Get(alertID); ok && c.clock.Now().Before(e.Expires) {
		if e.User == nil {
			c.negativeHits.Inc()
			return Result{Cached: true}, defender.ErrNotFound, true
		}
		c.hits.Inc()
		return Result{User: e.User, Cached: true}, nil, true
	}
	e, ok := c.userEntry(c.usable(ref))
	if !ok {
		return Result{}, nil, false
	}
	c.keepReused(alertID, e)
	c.userHits.Inc()
	return Result{User: e.User, Cached: true, ByUser: true}, nil, true
}

// entry returns alertID's entry if it has not expired.
func (c *Cache) entry(alertID string) (Entry, bool) {
	e, ok := c.store.Get(alertID)
	if !ok || !c.clock.Now().Before(e.Expires) {
		return Entry{}, false
	}
	return e, true
}

// Lookup is LookupFor with no user named.
func (c *Cache) Lookup(ctx context.Context, alertID string) (Result, error) {
	return c.LookupFor(ctx, alertID, defender.UserRef{})
}

// LookupFor returns the user related to the alert, from the store (as
// CachedFor) or from one call shared with every concurrent caller for the
// same id. When ctx ends first it returns an error matching
// defender.ErrUnavailable and ctx's error; the call goes on for the callers
// still waiting, and if none is left, it stops waiting for the budget (a
// call already sent still ends and its answer is kept). Errors of the call
// itself are returned as they are and never kept.
//
// With ReuseUser and a matchable ref, calls are shared by user too: while
// the call for another alert that named the same ref (the same SID, or the
// same domain\name, without regard to case) runs, this alert's lookup waits
// for it instead of calling, and takes its answer if that answer is exactly
// ref (ByUser set, kept for this alert id too). If it is not (another user,
// a 404, an error), the lookup looks again, since the user may be kept by
// now or another alert's call for it may be running, and otherwise makes
// its own call. After maxUserWaits answers that were not ref it calls
// without waiting any more, so that alerts that name one user but are not
// that user's do not queue behind each other.
//
// With Options.Shared, a flight about to call asks Redis first: the alert's
// answer kept by any replica, then a user kept there that is exactly ref,
// then the alert's lock. While another replica holds the lock the flight
// waits for that replica's answer, as long as anyone waits for the flight;
// it calls once the lock is free without an answer. A call's answer is
// written to Redis before the callers get it.
func (c *Cache) LookupFor(ctx context.Context, alertID string, ref defender.UserRef) (Result, error) {
	if r, err, ok := c.CachedFor(alertID, ref); ok {
		return r, err
	}
	if err := ctx.Err(); err != nil {
		// Gone already: start no flight that nobody would wait for.
		return Result{}, fmt.Errorf("%w: no answer within the wait: %w", defender.ErrUnavailable, err)
	}
	ref = c.usable(ref)
	f := c.join(ctx, alertID, ref)
	select {
	case <-f.done: // an answer at hand wins over a ctx that ended too
		return f.resultFor(ref)
	default:
	}
	select {
	case <-f.done:
		return f.resultFor(ref)
	case <-ctx.Done():
		c.leave(f)
		return Result{}, fmt.Errorf("%w: no answer within the wait: %w", defender.ErrUnavailable, ctx.Err())
	}
}

// join returns the flight for alertID, or a done one carrying the kept
// answer when a flight ended between the caller's miss and now. ref is
// usable (c.usable) or zero. A new flight's call carries the values of
// ctx, the first caller's (its budget priority), but not its end.
func (c *Cache) join(ctx context.Context, alertID string, ref defender.UserRef) *flight {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.flights[alertID]
	if f != nil && f.ctx.Err() == nil {
		f.waiters++
		c.coalesced.Inc()
		return f
	}
	if f == nil {
		// finish stores the answer before it removes the flight, both
		// before this lock is taken: a caller that missed the store before
		// the answer was kept, and finds no flight now, finds the answer.
		// The same holds of a user's entry and the flight that named it.
		if r, err, ok := c.CachedFor(alertID, ref); ok {
			done := &flight{cancel: func() {}, done: make(chan struct{}),
				answer: answer{user: r.User, err: err, cached: true, byUser: r.ByUser}}
			close(done.done)
			return done
		}
	}
	// f, if any, was abandoned by all its callers but its call may still be
	// running: the new flight waits for it and reuses its answer, so that
	// the id never has two calls at once. It decides on the user after.
	flightCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	nf := &flight{ctx: flightCtx, cancel: cancel, waiters: 1, prev: f, ref: ref, prio: budget.PriorityFrom(ctx), done: make(chan struct{})}
	c.flights[alertID] = nf
	if f == nil && c.claim(nf, true) {
		c.userCoalesced.Inc()
	} else {
		nf.missed = true
		c.misses.Inc()
	}
	go c.run(alertID, nf)
	return nf
}

func (c *Cache) leave(f *flight) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f.waiters--
	if f.waiters == 0 {
		f.cancel()
	}
}

func (c *Cache) run(alertID string, f *flight) {
	defer f.cancel()
	if f.prev != nil {
		<-f.prev.done
		if e, ok := c.entry(alertID); ok {
			a := answer{user: e.User, expires: e.Expires, cached: true}
			if e.User == nil {
				a.err = defender.ErrNotFound
			}
			c.finish(alertID, f, a)
			return
		}
		if c.reuseOrClaim(alertID, f) {
			return
		}
	}
	for f.via != nil {
		v := f.via
		select {
		case <-v.done: // an answer at hand wins over a flight abandoned too
		default:
			select {
			case <-v.done:
			case <-f.ctx.Done():
				c.leave(v)
				c.finish(alertID, f, answer{err: fmt.Errorf("%w: no answer within the wait: %w", defender.ErrUnavailable, f.ctx.Err())})
				return
			}
		}
		if v.err == nil && v.user.Is(f.ref) {
			c.keepReused(alertID, Entry{User: v.user, Expires: v.expires})
			c.finish(alertID, f, answer{user: v.user, expires: v.expires, byUser: true})
			return
		}
		f.waits++
		if c.reuseOrClaim(alertID, f) {
			return
		}
	}
	var token string // the alert's lock in Redis, when this flight holds it
	release := func() {}
	if c.shared != nil {
		var done bool
		if token, done = c.lookShared(alertID, f); done {
			return
		}
		release = c.shared.hold(alertID, token)
	}
	u, err := c.next.User(f.ctx, alertID)
	release()
	a := answer{user: u, err: err}
	switch {
	case err == nil:
		a.expires = c.clock.Now().Add(c.ttl)
		e := Entry{User: u, Expires: a.expires}
		c.store.Add(alertID, e)
		c.index(e)
	case errors.Is(err, defender.ErrNotFound):
		c.store.Add(alertID, Entry{Expires: c.clock.Now().Add(c.negTTL)})
	}
	if c.shared != nil {
		c.keepShared(alertID, token, a)
	}
	c.finish(alertID, f, a)
}

// finish publishes the answer after the store has it, so that a caller
// arriving in between finds either the flight or, in join, the entry.
func (c *Cache) finish(alertID string, f *flight, a answer) {
	c.mu.Lock()
	if c.flights[alertID] == f {
		delete(c.flights, alertID)
	}
	for _, k := range f.keys {
		if c.userFlights[k] == f {
			delete(c.userFlights, k)
		}
	}
	c.mu.Unlock()
	f.answer = a
	close(f.done)
}

// InFlight reports how many distinct alert ids have a call running or waiting.
func (c *Cache) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.flights)
}
