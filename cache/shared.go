package cache

import (
	"errors"
	"fmt"
	"time"

	"github.com/defender-enricher/defender-enricher/defender"
)

// The shared level (Options.Shared): a flight that is about to call asks
// it first, off the hit path. CachedFor never does: the pipeline asks it
// for every event on the loop that fetches them, where a round trip to
// Redis would slow every partition, and a Redis that does not answer would
// stall them all.
//
// One call per alert across the fleet: the flight reads the alert's answer
// and, when there is none, takes the alert's lock in the same script. The
// owner of the lock calls, writes the answer and releases the lock in one
// script; a flight of another replica that finds the lock held waits for
// the answer, asking again every pollFirst, then twice as long each time up
// to pollMost (never past the lock's expiry), and calls only when the lock
// is free again without an answer: the owner's call failed (errors are
// never kept), or the owner died and its lock expired.

const (
	pollFirst = 10 * time.Millisecond
	pollMost  = 200 * time.Millisecond
)

// lookShared asks the shared level for f's answer before f calls: the
// alert's kept answer, else (with f.ref) a kept user that is exactly f.ref,
// else the alert's lock. It returns done when f has ended, with an answer
// from Redis or, given up while it waited for the lock, with an error.
// Otherwise f is to call, holding the lock when token is not empty: with no
// token, Redis did not answer, and the call budget alone decides on the
// call.
func (c *Cache) lookShared(alertID string, f *flight) (token string, done bool) {
	var ukeys []string
	if !f.ref.IsZero() {
		ukeys = refKeys(f.ref)
	}
	poll, waited := pollFirst, false
	for {
		if err := f.ctx.Err(); err != nil {
			c.finish(alertID, f, answer{err: fmt.Errorf("%w: no answer within the wait: %w", defender.ErrUnavailable, err)})
			return "", true
		}
		l, err := c.shared.look(alertID, ukeys)
		if err != nil {
			return "", false // a miss of the shared level
		}
		switch l.state {
		case lookHit:
			u, ok := c.shared.decode(l.answer.value, true)
			if !ok {
				return "", false
			}
			if u == nil {
				c.store.Add(alertID, Entry{Expires: c.clock.Now().Add(min(l.answer.ttl, c.negTTL))})
				c.sharedNegativeHits.Inc()
				c.finish(alertID, f, answer{err: defender.ErrNotFound, cached: true})
				return "", true
			}
			e := Entry{User: u, Expires: c.clock.Now().Add(min(l.answer.ttl, c.ttl))}
			c.store.Add(alertID, e)
			c.index(e)
			c.sharedHits.Inc()
			c.finish(alertID, f, answer{user: u, expires: e.Expires, cached: true})
			return "", true
		case lookUsers:
			for _, k := range l.users {
				if k.value == nil {
					continue
				}
				if u, ok := c.shared.decode(k.value, false); ok && u.Is(f.ref) {
					e := Entry{User: u, Expires: c.clock.Now().Add(min(k.ttl, c.ttl))}
					c.index(e)
					c.keepReused(alertID, e)
					c.sharedUserHits.Inc()
					c.finish(alertID, f, answer{user: u, expires: e.Expires, cached: true, byUser: true})
					return "", true
				}
			}
			ukeys = nil // none is f.ref: look again for the alert alone
		case lookLocked:
			return l.token, false
		case lookHeld:
			if !waited {
				waited = true
				c.lockWaits.Inc()
			}
			wait := poll
			if l.lockTTL > 0 {
				wait = min(wait, l.lockTTL+time.Millisecond)
			}
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-f.ctx.Done():
				t.Stop()
			}
			poll = min(2*poll, pollMost)
		}
	}
}

// keepShared writes the answer of f's call to the shared level and
// releases the alert's lock that token holds (if any), before the answer
// is given to f's callers: once a lookup returns, the other replicas find
// its answer. Errors are not kept.
func (c *Cache) keepShared(alertID, token string, a answer) {
	var (
		value []byte
		ttl   time.Duration
		ukeys []string
	)
	switch {
	case a.err == nil && a.user != nil && len(a.user.JSON) > 0:
		value, ttl = a.user.JSON, c.ttl
		if c.reuse {
			ukeys = userKeys(a.user)
		}
	case errors.Is(a.err, defender.ErrNotFound):
		value, ttl = []byte(notFound), c.negTTL
	}
	c.shared.keep(alertID, token, value, ttl, ukeys)
}
