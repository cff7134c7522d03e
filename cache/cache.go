// Package cache keeps Defender answers so that each alert costs at most one
// call: found users for TTL, 404 answers for NegativeTTL, errors never.
// Concurrent lookups of one alert id share one call, and that call is not
// cancelled because its first caller went away: it runs while anyone waits
// for it, and once sent it runs to its end and its answer is kept.
//
// What it leaves out: sharing entries between replicas. Store is the small
// interface a shared store would implement; LRU is one process's store.
package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/defender-enricher/defender-enricher/clock"
	"github.com/defender-enricher/defender-enricher/defender"
)

// Entry is one kept answer: a user, or a 404 when User is nil.
type Entry struct {
	User    *defender.User
	Expires time.Time
}

// Store keeps entries. Implementations are safe for concurrent use and may
// forget entries at any time (a bounded store must).
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

// Options configure a Cache. Store is required.
type Options struct {
	Store       Store
	TTL         time.Duration // how long a found user is kept; default 1h
	NegativeTTL time.Duration // how long a 404 is kept; default 5m
	Clock       clock.Clock
	Registerer  prometheus.Registerer
}

// Result is the answer of a lookup.
type Result struct {
	User   *defender.User // nil on error
	Cached bool           // answered from the store, no call made for it
}

// Cache is a Lookup with a store in front and calls coalesced. It is safe
// for concurrent use.
type Cache struct {
	next    Lookup
	store   Store
	ttl     time.Duration
	negTTL  time.Duration
	clock   clock.Clock
	lookups *prometheus.CounterVec
	// The children of lookups, resolved once: a hit costs no label lookup.
	hits, negativeHits, misses, coalesced prometheus.Counter

	mu      sync.Mutex
	flights map[string]*flight
}

// A flight is one call to next for one alert id, shared by every caller
// that wants that id while it runs.
type flight struct {
	ctx     context.Context
	cancel  context.CancelFunc
	waiters int           // guarded by Cache.mu
	prev    *flight       // an abandoned flight for the same id still running
	done    chan struct{} // closed when user and err are set
	user    *defender.User
	err     error
	cached  bool
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
	c := &Cache{
		next: next, store: o.Store, ttl: o.TTL, negTTL: o.NegativeTTL, clock: o.Clock,
		flights: make(map[string]*flight),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enricher_cache_lookups_total",
			Help: "Lookups by result: hit (a user), negative_hit (a kept 404), miss (a call made), coalesced (joined a call in progress).",
		}, []string{"result"}),
	}
	c.hits = c.lookups.WithLabelValues("hit")
	c.negativeHits = c.lookups.WithLabelValues("negative_hit")
	c.misses = c.lookups.WithLabelValues("miss")
	c.coalesced = c.lookups.WithLabelValues("coalesced")
	if o.Registerer != nil {
		if err := o.Registerer.Register(c.lookups); err != nil {
			return nil, fmt.Errorf("cache: registering metrics: %w", err)
		}
	}
	return c, nil
}

// Cached returns the kept answer for alertID without waiting or calling:
// ok is false on a miss. err is defender.ErrNotFound for a kept 404.
func (c *Cache) Cached(alertID string) (u *defender.User, err error, ok bool) {
	u, err, ok = c.cached(alertID)
	switch {
	case !ok:
	case u == nil:
		c.negativeHits.Inc()
	default:
		c.hits.Inc()
	}
	return u, err, ok
}

// cached is Cached without counting.
func (c *Cache) cached(alertID string) (u *defender.User, err error, ok bool) {
	e, ok := c.store.Get(alertID)
	if !ok || !c.clock.Now().Before(e.Expires) {
		return nil, nil, false
	}
	if e.User == nil {
		return nil, defender.ErrNotFound, true
	}
	return e.User, nil, true
}

// Lookup returns the user related to the alert, from the store or from one
// call shared with every concurrent caller for the same id. When ctx ends
// first it returns an error matching defender.ErrUnavailable and ctx's
// error; the call goes on for the callers still waiting, and if none is
// left, it stops waiting for the budget (a call already sent still ends and
// its answer is kept). Errors of the call itself are returned as they are
// and never kept.
func (c *Cache) Lookup(ctx context.Context, alertID string) (Result, error) {
	if u, err, ok := c.Cached(alertID); ok {
		return Result{User: u, Cached: true}, err
	}
	if err := ctx.Err(); err != nil {
		// Gone already: start no flight that nobody would wait for.
		return Result{}, fmt.Errorf("%w: no answer within the wait: %w", defender.ErrUnavailable, err)
	}
	f := c.join(alertID)
	select {
	case <-f.done: // an answer at hand wins over a ctx that ended too
		return Result{User: f.user, Cached: f.cached}, f.err
	default:
	}
	select {
	case <-f.done:
		return Result{User: f.user, Cached: f.cached}, f.err
	case <-ctx.Done():
		c.leave(f)
		return Result{}, fmt.Errorf("%w: no answer within the wait: %w", defender.ErrUnavailable, ctx.Err())
	}
}

// join returns the flight for alertID, or a done one carrying the kept
// answer when a flight ended between the caller's miss and now.
func (c *Cache) join(alertID string) *flight {
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
		if u, err, ok := c.Cached(alertID); ok {
			done := &flight{cancel: func() {}, done: make(chan struct{}), user: u, err: err, cached: true}
			close(done.done)
			return done
		}
	}
	// f, if any, was abandoned by all its callers but its call may still be
	// running: the new flight waits for it and reuses its answer, so that
	// the id never has two calls at once.
	ctx, cancel := context.WithCancel(context.Background())
	nf := &flight{ctx: ctx, cancel: cancel, waiters: 1, prev: f, done: make(chan struct{})}
	c.flights[alertID] = nf
	c.misses.Inc()
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
		if u, err, ok := c.cached(alertID); ok {
			c.finish(alertID, f, u, err, true)
			return
		}
	}
	u, err := c.next.User(f.ctx, alertID)
	switch {
	case err == nil:
		c.store.Add(alertID, Entry{User: u, Expires: c.clock.Now().Add(c.ttl)})
	case errors.Is(err, defender.ErrNotFound):
		c.store.Add(alertID, Entry{Expires: c.clock.Now().Add(c.negTTL)})
	}
	c.finish(alertID, f, u, err, false)
}

// finish publishes the answer after the store has it, so that a caller
// arriving in between finds either the flight or, in join, the entry.
func (c *Cache) finish(alertID string, f *flight, u *defender.User, err error, cached bool) {
	c.mu.Lock()
	if c.flights[alertID] == f {
		delete(c.flights, alertID)
	}
	c.mu.Unlock()
	f.user, f.err, f.cached = u, err, cached
	close(f.done)
}

// InFlight reports how many distinct alert ids have a call running or waiting.
func (c *Cache) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.flights)
}
