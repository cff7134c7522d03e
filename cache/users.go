package cache

import (
	"strings"

	"github.com/defender-enricher/defender-enricher/defender"
)

// Reuse by user: every found user is kept in Users under its keys, and
// every flight that calls for an alert naming a user is registered under
// that user's keys (Cache.userFlights), so that another alert naming the
// same user finds either the kept user or the call in progress. A key is
// "sid:" or "id:" and the lowercased SID or domain\name; the match itself
// is always checked with defender.User.Is, so a key is only where to look.

// usable returns ref when reuse is on and ref can match a user, else the
// zero UserRef: the refs the cache acts on.
func (c *Cache) usable(ref defender.UserRef) defender.UserRef {
	if !c.reuse || !ref.Matchable() {
		return defender.UserRef{}
	}
	return ref
}

// refKeys are the keys under which the user ref names is looked for.
func refKeys(ref defender.UserRef) []string {
	keys := make([]string, 0, 2)
	if ref.SID != "" {
		keys = append(keys, "sid:"+strings.ToLower(ref.SID))
	}
	if ref.Domain != "" && ref.Name != "" {
		keys = append(keys, "id:"+strings.ToLower(ref.Domain+`\`+ref.Name))
	}
	return keys
}

// userKeys are the keys under which u is kept.
func userKeys(u *defender.User) []string {
	keys := make([]string, 0, 2)
	if u.AccountSID != "" {
		keys = append(keys, "sid:"+strings.ToLower(u.AccountSID))
	}
	if u.ID != "" {
		keys = append(keys, "id:"+strings.ToLower(u.ID))
	}
	return keys
}

// userEntry returns the kept user that is exactly ref, if any; ref is
// usable or zero.
func (c *Cache) userEntry(ref defender.UserRef) (Entry, bool) {
	if ref.IsZero() {
		return Entry{}, false
	}
	now := c.clock.Now()
	for _, k := range refKeys(ref) {
		if e, ok := c.users.Get(k); ok && now.Before(e.Expires) && e.User.Is(ref) {
			return e, true
		}
	}
	return Entry{}, false
}

// index keeps e's user under its keys, as long as e lives.
func (c *Cache) index(e Entry) {
	if !c.reuse {
		return
	}
	for _, k := range userKeys(e.User) {
		c.users.Add(k, e)
	}
}

// keepReused keeps another alert's answer e for alertID, until it expires
// for that alert, and counts the call saved.
func (c *Cache) keepReused(alertID string, e Entry) {
	c.store.Add(alertID, e)
	c.reused.Inc()
}

// claim, with c.mu held, decides what f does about its user when nothing
// is kept for it. With mayWait, if a flight of another alert is calling for
// a user f.ref names, f waits for it: f.via is set, f counts as one of its
// waiters (so that it is not given up while f waits), and claim returns
// true; never for a flight of lower budget priority. Otherwise f is to
// call, and is registered under every key of
// f.ref that no other flight holds.
func (c *Cache) claim(f *flight, mayWait bool) bool {
	if f.ref.IsZero() {
		return false
	}
	keys := refKeys(f.ref)
	if mayWait {
		for _, k := range keys {
			// Never behind a call of lower priority: the budget may hold it
			// (the reserve, a deferred lookup) while this one could go.
			if o := c.userFlights[k]; o != nil && o != f && o.prio >= f.prio {
				o.waiters++
				f.via = o
				return true
			}
		}
	}
	for _, k := range keys {
		if c.userFlights[k] == nil {
			c.userFlights[k] = f
			f.keys = append(f.keys, k)
		}
	}
	return false
}

// reuseOrClaim looks for f's user again, once f has waited for an answer
// that was not that user, or for an abandoned flight of its own alert id.
// If the user is kept by now, f ends with it and reuseOrClaim returns true.
// Otherwise f waits for another alert's call for the user (f.via), or, when
// there is none or f has waited for maxUserWaits of them, is to call.
func (c *Cache) reuseOrClaim(alertID string, f *flight) bool {
	if f.ref.IsZero() {
		return false
	}
	c.mu.Lock()
	f.via = nil
	e, ok := c.userEntry(f.ref)
	if !ok && !c.claim(f, f.waits < maxUserWaits) && !f.missed {
		f.missed = true
		c.misses.Inc()
	}
	c.mu.Unlock()
	if !ok {
		return false
	}
	c.keepReused(alertID, e)
	c.finish(alertID, f, answer{user: e.User, expires: e.Expires, cached: true, byUser: true})
	return true
}
