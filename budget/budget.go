// Package budget is the client-side call budget of the Defender API: a
// sliding-window log that never lets more calls start than any of its windows
// allows, whatever the interval looked at.
//
// Defender allows 100 calls a minute and 1,500 an hour. A token bucket
// (golang.org/x/time/rate) with a burst of 100 at 100/min admits 200 calls in
// the first minute; this package admits at most Limit calls in every interval
// of length Per, for every window at once. A call counts from the moment it is
// granted until it ends, and is then remembered at the later of the two: the
// server may have counted it at any moment in between, so the next call in
// its window waits a full window after the call ended. This is what makes the
// guarantee hold as the server measures it, and not only as the client does.
//
// What it leaves out: sharing one budget between replicas. The Window type is
// one process's budget; the Budget interface that defender.Client takes is
// small so that a shared implementation can take its place.
package budget

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/defender-enricher/defender-enricher/clock"
)

// Limit is one window of a budget: at most Calls calls in any interval of
// length Per.
type Limit struct {
	Calls int
	Per   time.Duration
}

func (l Limit) String() string { return fmt.Sprintf("%d/%s", l.Calls, formatDuration(l.Per)) }

// Limits is a set of windows that all hold at once.
type Limits []Limit

func (ls Limits) String() string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = l.String()
	}
	return strings.Join(parts, ",")
}

// DefaultLimits is Defender's documented limit for the alert user API.
const DefaultLimits = "100/1m,1500/1h"

// ParseLimits parses a comma-separated list of CALLS/WINDOW pairs such as
// "100/1m,1500/1h". A window is a Go duration ("90s", "1h") or a bare unit
// ("s", "m", "h" meaning one of it). Every limit must be at least 1 call in at
// least 1 ms, and at most 100,000 calls per window (the log keeps one entry per
// call in the longest window).
func ParseLimits(s string) (Limits, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("no limits given: want CALLS/WINDOW pairs such as 100/1m,1500/1h")
	}
	var ls Limits
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		calls, per, ok := strings.Cut(part, "/")
		if !ok {
			return nil, fmt.Errorf("limit %q: want CALLS/WINDOW such as 100/1m", part)
		}
		n, err := strconv.Atoi(strings.TrimSpace(calls))
		if err != nil || n < 1 || n > 100_000 {
			return nil, fmt.Errorf("limit %q: calls must be a whole number from 1 to 100000", part)
		}
		d, err := parseWindow(strings.TrimSpace(per))
		if err != nil || d < time.Millisecond {
			return nil, fmt.Errorf("limit %q: window must be a duration of at least 1ms such as 1m or 1h", part)
		}
		ls = append(ls, Limit{Calls: n, Per: d})
	}
	return ls, nil
}

func parseWindow(s string) (time.Duration, error) {
	switch s {
	case "s":
		return time.Second, nil
	case "m":
		return time.Minute, nil
	case "h":
		return time.Hour, nil
	}
	return time.ParseDuration(s)
}

func formatDuration(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return d.String()
}

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("budget: closed")

// Window is a sliding-window log budget. The zero value is not usable: call
// New. A Window is safe for concurrent use. Waiters are served in the order
// they arrived.
type Window struct {
	limits  Limits
	longest time.Duration
	clock   clock.Clock

	mu      sync.Mutex
	calls   []*call   // granted calls still inside the longest window, in grant order
	waiters []*waiter // FIFO
	paused  time.Time // no call starts before this instant (a 429's Retry-After)
	timer   clock.Timer
	closed  bool
	scratch []time.Time
}

type call struct {
	at      time.Time // grant time, then the end time once ended
	running bool      // granted and not yet ended: counts as "now" in every window
}

type waiter struct {
	ready chan *call // receives the granted call
}

// New returns a budget enforcing every limit at once. clk may be nil for the
// real clock.
func New(limits Limits, clk clock.Clock) (*Window, error) {
	if len(limits) == 0 {
		return nil, errors.New("budget: no limits")
	}
	if clk == nil {
		clk = clock.Real{}
	}
	w := &Window{limits: append(Limits(nil), limits...), clock: clk}
	for _, l := range limits {
		if l.Calls < 1 || l.Per <= 0 {
			return nil, fmt.Errorf("budget: invalid limit %v", l)
		}
		if l.Per > w.longest {
			w.longest = l.Per
		}
	}
	return w, nil
}

// Limits returns the windows the budget enforces.
func (w *Window) Limits() Limits { return append(Limits(nil), w.limits...) }

// Acquire blocks until a call may start, then returns the function to call
// once the call has ended (with its response read or its connection failed).
// It returns ctx's error if ctx ends first, and ErrClosed after Close. A call
// granted is counted even if it is never made; the done function must be
// called exactly once.
func (w *Window) Acquire(ctx context.Context) (done func(), err error) {
	// A caller that has already gone gets no call, even one free at once:
	// the call would be made for nobody and still count.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, ErrClosed
	}
	if len(w.waiters) == 0 {
		if c := w.grantLocked(w.clock.Now()); c != nil {
			w.mu.Unlock()
			return w.doneFunc(c), nil
		}
	}
	wt := &waiter{ready: make(chan *call, 1)}
	w.waiters = append(w.waiters, wt)
	w.scheduleLocked()
	w.mu.Unlock()

	select {
	case c := <-wt.ready:
		if c == nil {
			return nil, ErrClosed
		}
		return w.doneFunc(c), nil
	case <-ctx.Done():
		w.mu.Lock()
		defer w.mu.Unlock()
		select {
		case c := <-wt.ready:
			// Granted while we were giving up: no call will be made, so the
			// slot goes back rather than being counted.
			if c != nil {
				w.forgetLocked(c)
			}
		default:
			w.removeWaiterLocked(wt)
		}
		w.scheduleLocked()
		return nil, ctx.Err()
	}
}

// PauseUntil stops every call from starting before t: after a 429, Defender's
// Retry-After applies to the whole client, not just the call that got it. A
// pause never shortens one already in force.
func (w *Window) PauseUntil(t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if t.After(w.paused) {
		w.paused = t
		w.scheduleLocked()
	}
}

// PausedUntil returns the end of the current pause, or the zero time.
func (w *Window) PausedUntil() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.paused.After(w.clock.Now()) {
		return w.paused
	}
	return time.Time{}
}

// Waiting reports how many callers wait for a call.
func (w *Window) Waiting() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.waiters)
}

// Close wakes every waiter with ErrClosed and refuses later calls.
func (w *Window) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	for _, wt := range w.waiters {
		wt.ready <- nil
	}
	w.waiters = nil
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
}

func (w *Window) doneFunc(c *call) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if now := w.clock.Now(); now.After(c.at) {
				c.at = now
			}
			c.running = false
			w.scheduleLocked()
		})
	}
}

// grantLocked records and returns a call starting at now if every window and
// the pause allow it, or returns nil.
func (w *Window) grantLocked(now time.Time) *call {
	if next, ok := w.nextLocked(now); !ok || next.After(now) {
		return nil
	}
	c := &call{at: now, running: true}
	w.calls = append(w.calls, c)
	return c
}

func (w *Window) forgetLocked(c *call) {
	for i, x := range w.calls {
		if x == c {
			w.calls = append(w.calls[:i], w.calls[i+1:]...)
			return
		}
	}
}

func (w *Window) removeWaiterLocked(wt *waiter) {
	for i, x := range w.waiters {
		if x == wt {
			w.waiters = append(w.waiters[:i], w.waiters[i+1:]...)
			return
		}
	}
}

// nextLocked returns the earliest instant at or after now when a call may
// start; ok is false when that depends on running calls ending first.
func (w *Window) nextLocked(now time.Time) (next time.Time, ok bool) {
	w.pruneLocked(now)
	next = now
	if w.paused.After(next) {
		next = w.paused
	}
	for _, l := range w.limits {
		// The calls that still count in this window at now: the running ones
		// and those that ended after now-Per. A new call may start once fewer
		// than Calls remain, that is once the oldest (count-Calls+1) of the
		// ended ones have aged out.
		ended := w.scratch[:0]
		running := 0
		for _, c := range w.calls {
			switch {
			case c.running:
				running++
			case c.at.After(now.Add(-l.Per)):
				ended = append(ended, c.at)
			}
		}
		w.scratch = ended
		excess := running + len(ended) - l.Calls + 1
		if excess <= 0 {
			continue
		}
		if excess > len(ended) {
			return time.Time{}, false
		}
		sort.Slice(ended, func(i, j int) bool { return ended[i].Before(ended[j]) })
		if t := ended[excess-1].Add(l.Per); t.After(next) {
			next = t
		}
	}
	return next, true
}

func (w *Window) pruneLocked(now time.Time) {
	cut := now.Add(-w.longest)
	i := 0
	for i < len(w.calls) && !w.calls[i].running && !w.calls[i].at.After(cut) {
		i++
	}
	if i > 0 {
		w.calls = append(w.calls[:0], w.calls[i:]...)
	}
}

// scheduleLocked grants what can be granted now to the waiters at the head
// of the queue and arms a timer for when the next one may go.
func (w *Window) scheduleLocked() {
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	now := w.clock.Now()
	for len(w.waiters) > 0 {
		c := w.grantLocked(now)
		if c == nil {
			break
		}
		wt := w.waiters[0]
		w.waiters = w.waiters[1:]
		wt.ready <- c
	}
	if len(w.waiters) == 0 || w.closed {
		return
	}
	next, ok := w.nextLocked(now)
	if !ok {
		return // a running call's end will reschedule
	}
	w.timer = w.clock.AfterFunc(next.Sub(now), func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.scheduleLocked()
	})
}
