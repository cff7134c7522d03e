// Package clock is the time source of the lookup stack: the real clock in
// production, a manual one in tests that prove time-based guarantees (the
// call budget, cache expiry, Retry-After pauses) without sleeping.
package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock tells the time and schedules functions. Implementations are safe for
// concurrent use.
type Clock interface {
	Now() time.Time
	// AfterFunc runs f in its own goroutine once d has passed; Stop on the
	// returned Timer prevents that if it has not happened yet.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is what AfterFunc returns.
type Timer interface {
	// Stop reports whether it stopped the timer before it fired.
	Stop() bool
}

// Real is the wall clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (Real) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Manual is a clock that moves only when told to. Timers due at or before the
// new time fire, in order of their due time, during Advance and Set.
type Manual struct {
	mu     sync.Mutex
	now    time.Time
	timers []*manualTimer
}

// NewManual returns a Manual clock set to t.
func NewManual(t time.Time) *Manual { return &Manual{now: t} }

// Now returns the clock's current time.
func (m *Manual) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// AfterFunc schedules f for d after the clock's current time. f runs
// synchronously inside the Advance or Set call that reaches its due time, so
// a test sees its effects as soon as Advance returns.
func (m *Manual) AfterFunc(d time.Duration, f func()) Timer {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := &manualTimer{clock: m, due: m.now.Add(d), f: f}
	m.timers = append(m.timers, t)
	return t
}

// Advance moves the clock forward by d.
func (m *Manual) Advance(d time.Duration) { m.Set(m.Now().Add(d)) }

// Set moves the clock to t, firing every timer due by then, earliest first.
// The clock stands at each timer's due time while that timer runs.
func (m *Manual) Set(t time.Time) {
	for {
		m.mu.Lock()
		sort.SliceStable(m.timers, func(i, j int) bool { return m.timers[i].due.Before(m.timers[j].due) })
		if len(m.timers) == 0 || m.timers[0].due.After(t) {
			if t.After(m.now) {
				m.now = t
			}
			m.mu.Unlock()
			return
		}
		next := m.timers[0]
		m.timers = m.timers[1:]
		if next.due.After(m.now) {
			m.now = next.due
		}
		m.mu.Unlock()
		next.f()
	}
}

// Pending reports how many timers wait to fire.
func (m *Manual) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.timers)
}

type manualTimer struct {
	clock *Manual
	due   time.Time
	f     func()
}

func (t *manualTimer) Stop() bool {
	m := t.clock
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, x := range m.timers {
		if x == t {
			m.timers = append(m.timers[:i], m.timers[i+1:]...)
			return true
		}
	}
	return false
}
