package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/defender-enricher/defender-enricher/defender"
)

// RedisOptions configure a Redis store. Prefix is required.
type RedisOptions struct {
	// Prefix starts the name of every key: the fleet's, budget.RedisPrefix,
	// so that the cache and the call budget of one tenant and API host live
	// side by side (and in one slot of a Redis Cluster).
	Prefix string
	// Timeout bounds every command, from sending it to its answer; default
	// 500ms.
	Timeout time.Duration
	// LockTTL is how long an alert's lock outlives its owner's last sign of
	// life: the owner renews it every LockTTL/3 while its call runs (its
	// wait for the budget included), so a replica that dies mid-call frees
	// it at most LockTTL later. Default 30s.
	LockTTL time.Duration
	// Logger receives the rate-limited lines about the store; nil discards.
	Logger *slog.Logger
	// Registerer receives enricher_cache_store_errors_total; nil registers
	// nothing.
	Registerer prometheus.Registerer
}

// Redis is the level of the cache that every replica of a fleet shares,
// behind each replica's own stores: found users and 404 answers by alert
// id, found users by SID and by domain\name, each under a key that expires
// with the answer's TTL, and a short lock per alert id, so that the fleet
// makes one call per alert. A Redis is safe for concurrent use; give it to
// Options.Shared.
//
// Keys, after the prefix: "alert:ID" holds the user's JSON (User.JSON as
// the API answered it) or "404"; "user:sid:SID" and "user:name:DOMAIN\NAME"
// (lowercased) the user's JSON; "lock:ID" the random token of the replica
// calling for that alert. Every key has an expiry: Redis's memory is
// bounded by the TTLs and the rate of calls.
//
// Every command is bounded by Timeout. A command that fails or times out
// is counted (enricher_cache_store_errors_total) and logged, at most once
// per ten seconds, and is never fatal: a failed read is a miss of the
// shared level, a failed write leaves the answer to this replica alone.
// It never lets a call through that the call budget would refuse: the
// budget is asked by the client, behind the cache.
type Redis struct {
	rdb    redis.Scripter
	prefix string
	opts   RedisOptions
	log    *slog.Logger

	errors  prometheus.Counter // nil without a registerer
	lastLog atomic.Int64       // unix nanoseconds of the last line about a failure
	down    atomic.Bool
}

// notFound is the value of an alert whose answer was a 404. A user's JSON
// is an object: it starts with '{'.
const notFound = "404"

// NewRedis returns the shared store on rdb's Redis under opts.Prefix. It
// does no I/O. It fails on a nil client, an empty prefix and metrics the
// registerer refuses.
func NewRedis(rdb redis.Scripter, opts RedisOptions) (*Redis, error) {
	if rdb == nil {
		return nil, errors.New("cache: no Redis client")
	}
	if opts.Prefix == "" {
		return nil, errors.New("cache: no key prefix (see budget.RedisPrefix)")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 500 * time.Millisecond
	}
	if opts.LockTTL <= 0 {
		opts.LockTTL = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Redis{rdb: rdb, prefix: opts.Prefix, opts: opts, log: opts.Logger}
	if opts.Registerer != nil {
		r.errors = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "enricher_cache_store_errors_total",
			Help: "Commands to the shared cache's Redis that failed or timed out, and entries there that could not be read; each is a miss of the shared level or an answer not shared, never a call past the budget.",
		})
		if err := opts.Registerer.Register(r.errors); err != nil {
			return nil, fmt.Errorf("cache: registering metrics: %w", err)
		}
	}
	return r, nil
}

func (r *Redis) alertKey(alertID string) string { return r.prefix + "alert:" + alertID }
func (r *Redis) lockKey(alertID string) string  { return r.prefix + "lock:" + alertID }

// userKey is the key in Redis of a key of the users index ("sid:..." or
// "id:...", see userKeys).
func (r *Redis) userKey(k string) string {
	if name, ok := strings.CutPrefix(k, "id:"); ok {
		return r.prefix + "user:name:" + name
	}
	return r.prefix + "user:" + k
}

// lookState is what look found.
type lookState int

const (
	lookHit    lookState = 1 // the alert's answer
	lookUsers  lookState = 2 // no answer, but users under some of the user keys; no lock taken
	lookLocked lookState = 3 // nothing: the lock is taken, token holds it
	lookHeld   lookState = 4 // nothing, and another replica holds the lock
)

// kept is a value read from Redis with the time it has left.
type kept struct {
	value []byte // nil: none
	ttl   time.Duration
}

type lookResult struct {
	state   lookState
	answer  kept
	users   []kept        // by user key, with lookUsers
	token   string        // with lookLocked
	lockTTL time.Duration // with lookHeld: how long the lock has left
}

// look reads the alert's answer, else the users kept under userKeys (keys
// of the users index), else takes the alert's lock if it is free, in one
// script.
func (r *Redis) look(alertID string, userKeys []string) (lookResult, error) {
	keys := make([]string, 0, 2+len(userKeys))
	keys = append(keys, r.alertKey(alertID), r.lockKey(alertID))
	for _, k := range userKeys {
		keys = append(keys, r.userKey(k))
	}
	token := newToken()
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	vals, err := lookScript.Run(ctx, r.rdb, keys, token, millis(r.opts.LockTTL)).Slice()
	if err != nil {
		r.failed(err)
		return lookResult{}, err
	}
	r.answered()
	res, err := readLook(vals, len(userKeys))
	if err != nil {
		r.failed(err)
		return lookResult{}, err
	}
	if res.state == lookLocked {
		res.token = token
	}
	return res, nil
}

// readLook decodes the script's answer {state, value, ttl, [value, ttl]...}.
func readLook(vals []any, users int) (lookResult, error) {
	bad := fmt.Errorf("cache: unexpected answer %v from the script", vals)
	if len(vals) < 3 {
		return lookResult{}, bad
	}
	state, ok := vals[0].(int64)
	if !ok || state < int64(lookHit) || state > int64(lookHeld) {
		return lookResult{}, bad
	}
	at := func(i int) (kept, bool) {
		ms, ok := vals[i+1].(int64)
		if !ok {
			return kept{}, false
		}
		switch v := vals[i].(type) {
		case nil:
			return kept{ttl: time.Duration(ms) * time.Millisecond}, true
		case string:
			return kept{value: []byte(v), ttl: time.Duration(ms) * time.Millisecond}, true
		}
		return kept{}, false
	}
	res := lookResult{state: lookState(state)}
	first, ok := at(1)
	if !ok {
		return lookResult{}, bad
	}
	switch res.state {
	case lookHit:
		res.answer = first
	case lookHeld:
		res.lockTTL = first.ttl
	case lookUsers:
		if len(vals) != 3+2*users {
			return lookResult{}, bad
		}
		res.users = make([]kept, users)
		for i := range users {
			if res.users[i], ok = at(3 + 2*i); !ok {
				return lookResult{}, bad
			}
		}
	}
	return res, nil
}

// keep writes an answer for alertID, a user's JSON or notFound, for ttl,
// under the alert's key and under userKeys (keys of the users index), and
// then releases the alert's lock if token still holds it; value nil writes
// nothing, token "" releases nothing. One script: a replica that waits for
// the lock finds the answer as soon as the lock is free.
func (r *Redis) keep(alertID, token string, value []byte, ttl time.Duration, userKeys []string) {
	if value == nil && token == "" {
		return
	}
	keys := make([]string, 0, 2+len(userKeys))
	keys = append(keys, r.alertKey(alertID), r.lockKey(alertID))
	for _, k := range userKeys {
		keys = append(keys, r.userKey(k))
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	if err := keepScript.Run(ctx, r.rdb, keys, token, string(value), millis(ttl)).Err(); err != nil {
		r.failed(err)
		return
	}
	r.answered()
}

// hold renews the lock token holds on alertID every LockTTL/3 until the
// returned function is called, or the lock is no longer token's.
func (r *Redis) hold(alertID, token string) (release func()) {
	if token == "" {
		return func() {}
	}
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(max(r.opts.LockTTL/3, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if held, err := r.renew(alertID, token); err == nil && !held {
					return
				}
			}
		}
	}()
	return func() { close(stop) }
}

// renew extends the lock on alertID by LockTTL if token holds it, and
// reports whether it does.
func (r *Redis) renew(alertID, token string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.Timeout)
	defer cancel()
	n, err := renewScript.Run(ctx, r.rdb, []string{r.lockKey(alertID)}, token, millis(r.opts.LockTTL)).Int64()
	if err != nil {
		r.failed(err)
		return false, err
	}
	r.answered()
	return n == 1, nil
}

// decode reads a value kept under an alert's key or a user's: a user
// (JSON exactly as kept), or nil for a 404 (only where notFoundOK). A
// value that is neither is counted and logged as an error.
func (r *Redis) decode(value []byte, notFoundOK bool) (u *defender.User, ok bool) {
	if notFoundOK && string(value) == notFound {
		return nil, true
	}
	u, err := defender.ParseUser(value)
	if err != nil {
		r.failed(fmt.Errorf("an entry of the shared cache is not a user: %w", err))
		return nil, false
	}
	u.JSON = value // as kept: ParseUser wrote it, and gives it back unchanged
	return u, true
}

// failed counts a failed command and logs it, at most once per ten
// seconds.
func (r *Redis) failed(err error) {
	if r.errors != nil {
		r.errors.Inc()
	}
	r.down.Store(true)
	now := time.Now().UnixNano()
	last := r.lastLog.Load()
	if now-last >= int64(10*time.Second) && r.lastLog.CompareAndSwap(last, now) {
		r.log.Warn("the shared cache in Redis did not answer: lookups it cannot answer ask Defender, within the call budget, and answers are kept by this replica alone; check that Redis runs and answers within ENRICHER_REDIS_TIMEOUT",
			"error", err.Error())
	}
}

func (r *Redis) answered() {
	if r.down.CompareAndSwap(true, false) {
		r.log.Info("the shared cache in Redis answers again")
	}
}

// newToken is a lock's owner: 16 random bytes.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// millis is d in whole milliseconds, rounded up, at least 1: an expiry of
// Redis.
func millis(d time.Duration) int64 {
	return max(1, int64((d+time.Millisecond-1)/time.Millisecond))
}

// The scripts of the shared cache. Keys: the alert's answer, the alert's
// lock, then keys of the users index.

// lookScript returns {1, answer, ttl} when the alert's answer is kept; else
// {2, false, 0, user, ttl, ...} with a value or false for each user key,
// when any is kept (no lock is taken: the caller checks them and looks
// again without them); else takes the lock for ARGV[1] with an expiry of
// ARGV[2] ms and returns {3, false, 0}, or returns {4, false, ttl} with the
// lock's time left when another holds it. ttl is in milliseconds; a key
// without an expiry is not the cache's and counts as absent.
var lookScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then return {1, v, ttl} end
end
local out = {2, false, 0}
local found = false
for i = 3, #KEYS do
  local u = redis.call('GET', KEYS[i])
  local ttl = 0
  if u then ttl = redis.call('PTTL', KEYS[i]) end
  if u and ttl > 0 then
    found = true
    out[#out + 1] = u
    out[#out + 1] = ttl
  else
    out[#out + 1] = false
    out[#out + 1] = 0
  end
end
if found then return out end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {3, false, 0} end
return {4, false, redis.call('PTTL', KEYS[2])}
`)

// keepScript writes ARGV[2] (unless empty) for ARGV[3] ms under the
// alert's key and every user key, then deletes the lock if it holds
// ARGV[1] (unless empty).
var keepScript = redis.NewScript(`
if ARGV[2] ~= '' then
  for i = 1, #KEYS do
    if i ~= 2 then redis.call('SET', KEYS[i], ARGV[2], 'PX', ARGV[3]) end
  end
end
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
`)

// renewScript sets the lock's expiry to ARGV[2] ms if it holds ARGV[1]:
// KEYS the lock. It returns 1 if it does.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)
