package budget

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/defender-enricher/defender-enricher/clock"
)

// ErrStoreUnavailable is returned by Redis.Acquire when Redis did not
// answer in time or answered with an error: no call is granted without the
// store's say-so, so the caller makes no call. The error wraps the cause.
var ErrStoreUnavailable = errors.New("budget: the shared call budget in Redis did not answer; no call is made until it does (check that Redis runs, that ENRICHER_REDIS_URL names it and that it answers within ENRICHER_REDIS_TIMEOUT)")

// RedisOptions configure a Redis budget. Prefix is required.
type RedisOptions struct {
	// Prefix starts the name of every key the budget keeps: RedisPrefix
	// builds the connector's own, one per tenant and API host.
	Prefix string
	// Timeout bounds every command, from sending it to its answer; default
	// 500ms.
	Timeout time.Duration
	// Lease is the longest a granted call counts as running: a call whose
	// replica died before it ended counts as ended when its lease ends.
	// Make it longer than a call can take (the attempt timeout and the
	// token's renewal after the grant); default 30s.
	Lease time.Duration
	// Reserve is the share of every window kept for PriorityHigh and
	// PriorityMedium callers, as WithReserve says; default none.
	Reserve float64
	// Clock is the local clock: PauseUntil's instant is read on it and
	// turned into a duration on Redis's clock. nil: the real clock.
	Clock clock.Clock
	// Logger receives the rate-limited lines about the store; nil discards.
	Logger *slog.Logger
	// Registerer receives the budget's metrics (see NewRedis); nil
	// registers nothing.
	Registerer prometheus.Registerer

	// hold is how long past its due instant a waiter of one replica holds
	// back the lower priorities of the others, at most; default 2*Timeout.
	// A caller held back asks again a tenth of it after that instant.
	hold time.Duration
}

// RedisPrefix returns the key prefix of the budget of one tenant and API
// host: "defender-enricher:{tenant:host}:". The braces are a Redis Cluster
// hash tag, so that every key of one budget lives in one slot and the
// script can take them all in one step. Characters other than letters,
// digits, '.', '_' and '-' become '_'; an empty tenant is "default".
func RedisPrefix(tenant, host string) string {
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
				return r
			}
			return '_'
		}, s)
	}
	if tenant == "" {
		tenant = "default"
	}
	return "defender-enricher:{" + clean(strings.ToLower(tenant)) + ":" + clean(strings.ToLower(host)) + "}:"
}

// Redis is a call budget kept in Redis and shared by every replica that
// uses the same Redis and key prefix: the same sliding-window log as
// Window, with the same guarantee, for the fleet as a whole. The zero value
// is not usable: call NewRedis. A Redis is safe for concurrent use.
//
// Every window is checked and the call taken in one Lua script, on Redis's
// own clock (TIME), so that neither the replicas' clocks nor races between
// them matter. A refused caller is told the exact instant the windows allow
// its call, or, when that depends on a running call's end, the earliest
// instant it could be (a full window after now), and sleeps until then
// instead of polling. A granted call counts as running until its done
// function reports its end on Redis's clock, and at most for Lease: a
// replica that dies mid-call leaves an entry that counts as ended when its
// lease ends. A Retry-After pause (PauseUntil) is written to Redis, never
// shortening one in force, and holds every replica.
//
// Order: within one replica, callers wait in one queue, highest priority
// first, first come first served within a priority, as with Window. Across
// replicas, the reserve holds (a caller below PriorityMedium is held to the
// windows less their reserve), and a replica whose first waiter was refused
// registers its priority and the instant it will ask again: until a little
// after that instant (twice Timeout), a caller of a lower priority on
// another replica is refused. What does not hold across replicas: first
// come, first served within a priority (replicas whose waiters are due at
// the same instant race for the call), and a deferred lookup on one replica
// may start while a fresh one of the same priority waits on another, as
// long as that one has not been refused yet.
//
// When Redis does not answer within Timeout, or answers with an error,
// Acquire fails at once with an error matching ErrStoreUnavailable, and the
// waiters queued meanwhile with it: nothing waits on a Redis that is down,
// and no call starts without its grant. The next Acquire asks again, so the
// budget recovers by itself.
//
// Metrics (with a Registerer): enricher_budget_granted_total{priority} and
// enricher_budget_waiting{priority} as for Window, this replica's;
// enricher_budget_window_limit{window} as for Window;
// enricher_budget_window_calls{window}, the calls each window counts in
// Redis at scrape time, the fleet's and not only this replica's, read with
// one script bounded by Timeout (at most a second) and left out of a
// scrape whose read fails; enricher_budget_store_errors_total, the
// commands that failed; enricher_budget_store_up, 1 after a command that
// succeeded and 0 after one that failed (a scrape's read included, so that
// it follows Redis while no call is made); and
// enricher_budget_store_resets_total, the times this replica found the
// state lost.
//
// A Redis that is new or lost its data (a restart without persistence, a
// failover to a replica that had not caught up, a flush) has no epoch, the
// marker written when the state is created. Each replica keeps, in memory,
// the calls it granted that still count in the longest window (at most
// that window's calls, a few dozen bytes each); a replica whose request
// finds the epoch missing, or not the one it last saw, is refused and
// first writes those calls back, keyed by their ids, so that replicas
// doing it at once or again add each call once, and with them what is
// left of its latest pause. The calls of a replica that died before
// writing them back are unknown: when the state was lost (a replica that
// had seen an earlier epoch writes it back), each window is taken to have
// been full at the new epoch's creation, and its calls not written back
// count as running until a lease after it. Until a window after that, a
// window admits only as many calls as the calls written back leave it as
// they age out: a fleet that made few calls before waits up to the window
// and a lease, once per loss. A Redis that lost its data while every
// replica restarted too looks new, and starts a fresh budget.
type Redis struct {
	rdb     redis.Scripter
	keys    []string // calls (sorted set), pause (string), waiting (hash), epoch (hash), seeded (sorted set)
	limits  Limits
	lower   Limits
	longest time.Duration
	opts    RedisOptions
	clock   clock.Clock
	log     *slog.Logger
	id      string // this replica's name in Redis
	seq     atomic.Uint64

	granted   [numPriorities]prometheus.Counter // nil without a registerer
	errors    prometheus.Counter
	up        prometheus.Gauge
	lastLog   atomic.Int64 // unix nanoseconds of the last line about a failure
	storeDown atomic.Bool

	mu      sync.Mutex
	queues  [numPriorities][]*redisWaiter
	waiting int
	paused  time.Time // the latest pause, local clock
	pending bool      // paused is not yet written to Redis: the next request writes it
	closed  bool
	wake    chan struct{} // buffered 1: the queue changed
	stop    chan struct{}
	stopped chan struct{}

	// What this replica granted, to bring back into a Redis that lost it.
	mineMu  sync.Mutex
	mine    map[string]*ownCall // by call id
	order   []*ownCall          // in grant order, pruned from the front
	epoch   string              // the epoch this replica seeded last; "" before the first
	reseeds prometheus.Counter
}

// ownCall is a call this replica granted: the instant it stops counting,
// on Redis's clock (its lease's end while it runs, its end once reported).
type ownCall struct {
	id    string
	score time.Time
	gone  bool // taken back
}

type redisWaiter struct {
	prio  Priority
	ready chan redisGrant // buffered 1
}

type redisGrant struct {
	id  string
	at  time.Time // Redis's clock at the grant
	err error
}

// NewRedis returns a budget enforcing every limit at once for all the
// replicas that share rdb's Redis and opts.Prefix. It does no I/O itself;
// a goroutine it starts asks Redis once at start, so that the store's
// metrics and log tell at once whether it answers. Close stops it. It fails
// on an empty or invalid limit, an empty prefix, a reserve outside [0, 1),
// and metrics the registerer refuses.
func NewRedis(rdb redis.Scripter, limits Limits, opts RedisOptions) (*Redis, error) {
	if rdb == nil {
		return nil, errors.New("budget: no Redis client")
	}
	if opts.Prefix == "" {
		return nil, errors.New("budget: no key prefix (see RedisPrefix)")
	}
	if len(limits) == 0 {
		return nil, errors.New("budget: no limits")
	}
	if !(opts.Reserve >= 0 && opts.Reserve < 1) {
		return nil, fmt.Errorf("budget: reserve %v is not a fraction of at least 0 and below 1", opts.Reserve)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 500 * time.Millisecond
	}
	if opts.Lease <= 0 {
		opts.Lease = 30 * time.Second
	}
	if opts.hold <= 0 {
		opts.hold = 2 * opts.Timeout
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	r := &Redis{
		rdb:     rdb,
		keys:    []string{opts.Prefix + "calls", opts.Prefix + "pause", opts.Prefix + "waiting", opts.Prefix + "epoch", opts.Prefix + "seeded"},
		limits:  append(Limits(nil), limits...),
		opts:    opts,
		clock:   opts.Clock,
		log:     opts.Logger,
		id:      hex.EncodeToString(id[:]),
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
		mine:    map[string]*ownCall{},
	}
	for _, l := range limits {
		if l.Calls < 1 || l.Per < time.Microsecond {
			return nil, fmt.Errorf("budget: invalid limit %v", l)
		}
		r.longest = max(r.longest, l.Per)
	}
	r.lower = lowerLimits(r.limits, opts.Reserve)
	if err := r.register(opts.Registerer); err != nil {
		return nil, err
	}
	go r.loop()
	return r, nil
}

// Limits returns the windows the budget enforces.
func (r *Redis) Limits() Limits { return append(Limits(nil), r.limits...) }

func (r *Redis) limitsFor(p Priority) Limits {
	if p.mayUseReserve() {
		return r.limits
	}
	return r.lower
}

// Acquire blocks until Redis grants a call, then returns the function to
// call once the call has ended. The caller's place in the queue is the
// Priority ctx carries (PriorityFrom). It returns ctx's error if ctx ends
// first, ErrClosed after Close, and an error matching ErrStoreUnavailable
// when Redis does not answer in time. A call granted is counted even if it
// is never made; the done function must be called exactly once, and
// reports the end to Redis within Timeout (if it cannot, the call counts
// until its lease ends).
func (r *Redis) Acquire(ctx context.Context) (done func(), err error) {
	g, err := r.acquire(ctx)
	if err != nil {
		return nil, err
	}
	return r.doneFunc(g.id), nil
}

// acquire is Acquire with the grant itself, whose instant the tests read.
func (r *Redis) acquire(ctx context.Context) (redisGrant, error) {
	if err := ctx.Err(); err != nil {
		return redisGrant{}, err
	}
	p := PriorityFrom(ctx)
	wt := &redisWaiter{prio: p, ready: make(chan redisGrant, 1)}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return redisGrant{}, ErrClosed
	}
	r.queues[p.index()] = append(r.queues[p.index()], wt)
	r.waiting++
	r.mu.Unlock()
	r.poke()

	select {
	case g := <-wt.ready:
		if g.err != nil {
			return redisGrant{}, g.err
		}
		r.countGrant(p)
		return g, nil
	case <-ctx.Done():
		r.mu.Lock()
		var g redisGrant
		select {
		case g = <-wt.ready:
		default:
			r.removeWaiterLocked(wt)
		}
		r.mu.Unlock()
		r.poke()
		if g.id != "" {
			// Granted while we were giving up: no call will be made, so the
			// slot goes back rather than being counted.
			r.forget(g.id)
		}
		return redisGrant{}, ctx.Err()
	}
}

func (r *Redis) countGrant(p Priority) {
	if g := r.granted[p.index()]; g != nil {
		g.Inc()
	}
}

func (r *Redis) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Redis) removeWaiterLocked(wt *redisWaiter) {
	q := r.queues[wt.prio.index()]
	for i, x := range q {
		if x == wt {
			r.queues[wt.prio.index()] = append(q[:i], q[i+1:]...)
			r.waiting--
			return
		}
	}
}

func (r *Redis) headLocked() *redisWaiter {
	if r.waiting == 0 {
		return nil
	}
	for i := numPriorities - 1; i >= 0; i-- {
		if q := r.queues[i]; len(q) > 0 {
			return q[0]
		}
	}
	return nil
}

// loop asks Redis for the head of the queue, hands out the grants, and
// sleeps for as long as Redis says when refused: one request at a time, so
// that the replica's queue keeps its order.
func (r *Redis) loop() {
	defer close(r.stopped)
	// The first request seeds the epoch (or learns it): scripts are
	// allowed, the store answers, and the first grant needs one round trip.
	if err := r.seed(); err != nil {
		r.storeFailed(err)
	}
	var (
		timer    *time.Timer
		due      <-chan time.Time // fires when the last refusal's wait is over
		refused  = false          // the head was refused and due is armed
		refusedP Priority         // the priority that refusal was for
	)
	for {
		r.mu.Lock()
		head := r.headLocked()
		r.mu.Unlock()
		// A refusal stands while its wait lasts and the head's priority is
		// the one refused: a call that ends or a waiter that gives up can
		// only move the next instant later for that priority (a running
		// call was already counted as ending now).
		if head == nil || refused && head.prio == refusedP {
			select {
			case <-r.stop:
				return
			case <-r.wake:
				continue
			case <-due:
				refused, due = false, nil
				continue
			}
		}
		if timer != nil {
			timer.Stop()
			refused, due = false, nil
		}
		p := head.prio
		res, err := r.try(p)
		select {
		case <-r.stop:
			if err == nil && res.granted {
				r.forget(res.id)
			}
			return
		default:
		}
		if err != nil {
			r.storeFailed(err)
			r.failWaiters(fmt.Errorf("%w: %w", ErrStoreUnavailable, err))
			continue
		}
		r.storeAnswered()
		if res.reseed {
			continue // lost again between the seed and the request
		}
		if !res.granted {
			timer = time.NewTimer(res.wait)
			due, refused, refusedP = timer.C, true, p
			continue
		}
		if !r.handOut(p, redisGrant{id: res.id, at: res.now}) {
			r.forget(res.id)
		}
	}
}

// handOut gives a call granted for priority p to the head of the queue, if
// it is still of p or a higher priority; it reports whether it did.
func (r *Redis) handOut(p Priority, g redisGrant) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	head := r.headLocked()
	if head == nil || head.prio < p {
		return false
	}
	i := head.prio.index()
	r.queues[i] = r.queues[i][1:]
	r.waiting--
	head.ready <- g
	return true
}

// failWaiters ends every queued Acquire with err.
func (r *Redis) failWaiters(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, q := range r.queues {
		for _, wt := range q {
			wt.ready <- redisGrant{err: err}
		}
		r.queues[i] = nil
	}
	r.waiting = 0
}

// PauseUntil stops every call of every replica from starting before t, a
// local-clock instant: the rest of the pause is written to Redis as a
// duration from Redis's own clock, never shortening a pause in force. If
// Redis cannot take it now, it is written with this replica's next request.
func (r *Redis) PauseUntil(t time.Time) {
	r.mu.Lock()
	if t.After(r.paused) {
		r.paused, r.pending = t, true
	}
	left := r.pendingPauseLocked()
	r.mu.Unlock()
	if left <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	if err := pauseScript.Run(ctx, r.rdb, r.keys[1:2], micros(left)).Err(); err != nil {
		r.storeFailed(err)
		return
	}
	r.storeAnswered()
	r.pauseWritten(t)
}

// pendingPauseLocked is what is left of a pause not yet written to Redis,
// or 0.
func (r *Redis) pendingPauseLocked() time.Duration {
	if !r.pending {
		return 0
	}
	left := r.paused.Sub(r.clock.Now())
	if left <= 0 {
		r.pending = false
		return 0
	}
	return left
}

// pauseWritten records that Redis holds the pause until t, unless a later
// one came meanwhile.
func (r *Redis) pauseWritten(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.paused.After(t) {
		r.pending = false
	}
}

// Waiting reports how many callers of this replica wait for a call.
func (r *Redis) Waiting() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.waiting
}

// Close wakes every waiter with ErrClosed, refuses later calls, stops the
// goroutine (waiting for a request in flight, at most Timeout) and takes
// this replica's waiter off Redis. Calls granted earlier still report
// their end.
func (r *Redis) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	for i, q := range r.queues {
		for _, wt := range q {
			wt.ready <- redisGrant{err: ErrClosed}
		}
		r.queues[i] = nil
	}
	r.waiting = 0
	r.mu.Unlock()
	close(r.stop)
	<-r.stopped
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	_ = leaveScript.Run(ctx, r.rdb, r.keys[2:3], r.id).Err()
}

// tryResult is the script's answer.
type tryResult struct {
	granted bool
	reseed  bool          // refused: the state is new or lost, seed it first
	id      string        // the call's entry, when granted
	now     time.Time     // Redis's clock when it ran
	wait    time.Duration // when refused: how long until it may be granted
}

// try asks Redis for a call of priority p; when Redis says the state is
// new or lost, it seeds it and asks again, once.
func (r *Redis) try(p Priority) (tryResult, error) {
	res, err := r.tryOnce(p)
	if err != nil || !res.reseed {
		return res, err
	}
	if err := r.seed(); err != nil {
		return tryResult{}, err
	}
	return r.tryOnce(p)
}

// tryOnce asks Redis once for a call of priority p.
func (r *Redis) tryOnce(p Priority) (tryResult, error) {
	r.mu.Lock()
	pause, pausedTo := r.pendingPauseLocked(), r.paused
	r.mu.Unlock()
	r.mineMu.Lock()
	epoch := r.epoch
	r.mineMu.Unlock()
	id := r.id + ":" + strconv.FormatUint(r.seq.Add(1), 36)
	limits := r.limitsFor(p)
	args := make([]any, 0, 10+2*len(limits))
	args = append(args, r.id, int(p), id, micros(r.opts.Lease), micros(r.opts.hold), micros(r.opts.hold/10), micros(pause),
		micros(r.longest+r.opts.Lease), epoch, len(limits))
	for _, l := range limits {
		args = append(args, micros(l.Per), l.Calls)
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	vals, err := acquireScript.Run(ctx, r.rdb, r.keys, args...).Int64Slice()
	if err != nil {
		return tryResult{}, err
	}
	if len(vals) != 3 {
		return tryResult{}, fmt.Errorf("budget: unexpected answer %v from the script", vals)
	}
	res := tryResult{granted: vals[0] == 1, reseed: vals[0] == 2, now: time.UnixMicro(vals[1]), wait: time.Duration(vals[2]) * time.Microsecond}
	if res.reseed {
		return res, nil // the pause is written by the seed
	}
	if pause > 0 {
		r.pauseWritten(pausedTo)
	}
	if res.granted {
		res.id = id
		r.remember(id, res.now)
	}
	return res, nil
}

// remember records call id, granted at now on Redis's clock, as running
// until its lease ends, and forgets the calls that no longer count in any
// window.
func (r *Redis) remember(id string, now time.Time) {
	c := &ownCall{id: id, score: now.Add(r.opts.Lease)}
	cutoff := now.Add(-r.longest)
	r.mineMu.Lock()
	defer r.mineMu.Unlock()
	r.mine[id] = c
	r.order = append(r.order, c)
	n := 0
	for n < len(r.order) && (r.order[n].gone || !r.order[n].score.After(cutoff)) {
		delete(r.mine, r.order[n].id)
		r.order[n] = nil
		n++
	}
	if n > 0 {
		r.order = r.order[n:]
	}
}

// ended records the end of call id at, on Redis's clock; gone, that it was
// taken back.
func (r *Redis) ended(id string, at time.Time, gone bool) {
	r.mineMu.Lock()
	defer r.mineMu.Unlock()
	if c := r.mine[id]; c != nil {
		if gone {
			c.gone = true
			delete(r.mine, id)
		} else if at.Before(c.score) {
			c.score = at
		}
	}
}

// seed brings this replica's calls back into Redis, creating the epoch if
// Redis has none (it is new or lost its data), with the pause in force,
// and takes the epoch as the one this replica seeded. Running it again
// adds nothing twice.
func (r *Redis) seed() error {
	// A pause already written may have gone with the lost state: what is
	// left of the latest one is written again.
	r.mu.Lock()
	pausedTo := r.paused
	pause := max(0, pausedTo.Sub(r.clock.Now()))
	r.mu.Unlock()
	r.mineMu.Lock()
	args := make([]any, 0, 3+2*len(r.mine))
	args = append(args, r.epoch, micros(r.longest+r.opts.Lease), micros(pause))
	for _, c := range r.order {
		if !c.gone {
			args = append(args, c.id, c.score.UnixMicro())
		}
	}
	r.mineMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	epoch, err := seedScript.Run(ctx, r.rdb, []string{r.keys[0], r.keys[1], r.keys[3], r.keys[4]}, args...).Text()
	if err != nil {
		return err
	}
	if pause > 0 {
		r.pauseWritten(pausedTo)
	}
	r.mineMu.Lock()
	prev := r.epoch
	r.epoch = epoch
	r.mineMu.Unlock()
	if prev != "" && prev != epoch {
		if r.reseeds != nil {
			r.reseeds.Inc()
		}
		r.log.Warn("the shared call budget in Redis had lost its state: this replica's calls of the last window were written back, and until a window after that the calls of replicas that did not write theirs back count as if the windows were full",
			"calls", (len(args)-3)/2)
	}
	return nil
}

// doneFunc returns the function that reports the end of call id.
func (r *Redis) doneFunc(id string) func() {
	var once sync.Once
	return func() { once.Do(func() { r.end(id) }) }
}

// end reports the end of call id on Redis's clock, and returns that
// instant (the zero time if Redis did not answer: the call then counts
// until its lease ends).
func (r *Redis) end(id string) time.Time {
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	at, err := doneScript.Run(ctx, r.rdb, r.keys[:1], id).Int64()
	if err != nil {
		r.storeFailed(err)
		return time.Time{}
	}
	r.storeAnswered()
	r.ended(id, time.UnixMicro(at), false)
	return time.UnixMicro(at)
}

// forget takes back call id, granted but never made.
func (r *Redis) forget(id string) {
	r.ended(id, time.Time{}, true)
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	if err := forgetScript.Run(ctx, r.rdb, r.keys[:1], id).Err(); err != nil {
		r.storeFailed(err)
	}
}

// storeFailed counts a failed command and logs it, at most once per ten
// seconds.
func (r *Redis) storeFailed(err error) {
	if r.errors != nil {
		r.errors.Inc()
		r.up.Set(0)
	}
	r.storeDown.Store(true)
	now := time.Now().UnixNano()
	last := r.lastLog.Load()
	if now-last >= int64(10*time.Second) && r.lastLog.CompareAndSwap(last, now) {
		r.log.Warn("the shared call budget in Redis did not answer: no Defender call is made until it does; check that Redis runs and answers within ENRICHER_REDIS_TIMEOUT",
			"error", err.Error())
	}
}

func (r *Redis) storeAnswered() {
	if r.up != nil {
		r.up.Set(1)
	}
	if r.storeDown.CompareAndSwap(true, false) {
		r.log.Info("the shared call budget in Redis answers again")
	}
}

// micros is d in whole microseconds, rounded up: the script counts in
// microseconds of Redis's clock.
func micros(d time.Duration) int64 {
	return int64((d + time.Microsecond - 1) / time.Microsecond)
}

func (r *Redis) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	granted := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enricher_budget_granted_total",
		Help: "Calls the budget granted, by priority of the lookup (high, medium, low, informational, deferred).",
	}, []string{"priority"})
	for _, p := range priorities {
		r.granted[p.index()] = granted.WithLabelValues(p.String())
	}
	r.errors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "enricher_budget_store_errors_total",
		Help: "Commands to the shared call budget's Redis that failed or timed out; no call is granted without an answer.",
	})
	r.up = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "enricher_budget_store_up",
		Help: "1 if the last command to the shared call budget's Redis succeeded, 0 if it failed.",
	})
	r.reseeds = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "enricher_budget_store_resets_total",
		Help: "Times this replica found that the shared call budget's Redis had lost its state, and wrote its own calls back.",
	})
	for _, c := range []prometheus.Collector{granted, newWaitingCollector(r.queueLens), newWindowCollector(r.limits, r.windowCounts), r.errors, r.up, r.reseeds} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("budget: registering metrics: %w", err)
		}
	}
	return nil
}

// queueLens returns the length of each priority's queue.
func (r *Redis) queueLens() (n [numPriorities]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, q := range r.queues {
		n[i] = len(q)
	}
	return n
}
