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
// Callers that must wait for a call are served by priority: High alerts
// before Medium, Medium before Low, Low before Informational (and
// unknown severities), and re-enrichment of alerts published unavailable
// earlier only when no other caller waits; first come, first served within
// one priority. The priority travels in the context (WithPriority). A
// reserve (WithReserve) keeps the last part of every window for High and
// Medium alerts, so that a flood of Low ones cannot spend the calls that a
// High alert arriving later needs.
//
// Window is one process's budget. Redis is the same budget shared by every
// replica of a fleet through Redis: the windows, the reserve and a 429's
// pause hold for the fleet as a whole, on Redis's clock, and a Redis that
// does not answer grants no call (ErrStoreUnavailable). Order across
// replicas holds only in part: see Redis.
//
// What it leaves out: reading the severity out of an alert (the caller
// does, and maps it with SeverityPriority).
package budget

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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

// Option configures a Window.
type Option func(*options)

type options struct {
	reserve    float64
	reg        prometheus.Registerer
	statePath  string
	callLength time.Duration
	log        *slog.Logger
}

// WithReserve keeps fraction of every window for PriorityHigh and
// PriorityMedium callers: a caller of a lower priority starts a call only
// while the calls counting in every window stay below Calls less the
// reserve of that window. The reserve of a window is fraction of its Calls,
// rounded to the nearest whole call (a half up), and at most Calls-1, so
// that lower priorities always keep one call: a window of 1 call keeps no
// reserve, 10/1s keeps 2 calls of 20% and leaves 8. fraction must be at
// least 0 and below 1; without this option a Window keeps no reserve.
func WithReserve(fraction float64) Option { return func(o *options) { o.reserve = fraction } }

// WithRegisterer registers the Window's metrics with reg:
// enricher_budget_waiting{priority}, the callers waiting for a call,
// enricher_budget_granted_total{priority}, the calls granted,
// enricher_budget_window_calls{window}, the calls each window counts at
// scrape time (running, or ended less than the window's length ago; read
// under the Window's lock, in one pass over the calls of the longest
// window), enricher_budget_window_limit{window}, each window's limit, and,
// with WithStateFile, enricher_budget_state_errors_total, the writes to
// the state file that failed. The window label is the window's length as
// Limit.String writes it ("1m", "1h"). Without it the Window registers
// nothing.
func WithRegisterer(reg prometheus.Registerer) Option { return func(o *options) { o.reg = reg } }

// Window is a sliding-window log budget. The zero value is not usable: call
// New. A Window is safe for concurrent use.
//
// Waiters are served highest priority first (the Priority of the context
// given to Acquire), in the order they arrived within one priority. A
// caller is granted a call at once, without queueing, when no caller of its
// priority or a higher one waits and the windows (less the reserve, for a
// priority below PriorityMedium) have room; a PriorityDeferred caller, only
// when nobody waits at all.
type Window struct {
	limits  Limits
	lower   Limits // the limits of a priority below PriorityMedium: limits less the reserve
	longest time.Duration
	clock   clock.Clock
	granted [numPriorities]prometheus.Counter // nil without a registerer

	mu      sync.Mutex
	calls   []*call                  // granted calls still inside the longest window, in grant order
	queues  [numPriorities][]*waiter // by Priority.index, each first come first served
	waiting int                      // waiters in every queue
	paused  time.Time                // no call starts before this instant (a 429's Retry-After)
	timer   clock.Timer
	closed  bool
	scratch []time.Time

	state    *state // nil without WithStateFile
	restored Restored
}

type call struct {
	at      time.Time // grant time, then the end time once ended
	running bool      // granted and not yet ended: counts as "now" in every window
}

type waiter struct {
	prio  Priority
	ready chan *call // receives the granted call
}

// New returns a budget enforcing every limit at once. clk may be nil for the
// real clock. It fails on an empty or invalid limit, a reserve outside
// [0, 1), a state file it cannot use (WithStateFile), and metrics the
// registerer refuses (already registered).
func New(limits Limits, clk clock.Clock, opts ...Option) (*Window, error) {
	if len(limits) == 0 {
		return nil, errors.New("budget: no limits")
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if !(o.reserve >= 0 && o.reserve < 1) {
		return nil, fmt.Errorf("budget: reserve %v is not a fraction of at least 0 and below 1", o.reserve)
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
	w.lower = lowerLimits(w.limits, o.reserve)
	if o.statePath != "" {
		if err := w.openState(o); err != nil {
			return nil, fmt.Errorf("budget: state file: %w", err)
		}
	}
	if o.reg != nil {
		if err := w.register(o.reg); err != nil {
			w.closeStateLocked()
			return nil, err
		}
	}
	return w, nil
}

// lowerLimits returns limits less their reserve of fraction: see
// WithReserve. It returns limits itself when no window keeps a reserve.
func lowerLimits(limits Limits, fraction float64) Limits {
	var lower Limits
	for i, l := range limits {
		r := min(int(math.Round(fraction*float64(l.Calls))), l.Calls-1)
		if r <= 0 {
			continue
		}
		if lower == nil {
			lower = append(Limits(nil), limits...)
		}
		lower[i].Calls = l.Calls - r
	}
	if lower == nil {
		return limits
	}
	return lower
}

// limitsFor returns the limits a caller of priority p is held to.
func (w *Window) limitsFor(p Priority) Limits {
	if p.mayUseReserve() {
		return w.limits
	}
	return w.lower
}

// Limits returns the windows the budget enforces.
func (w *Window) Limits() Limits { return append(Limits(nil), w.limits...) }

// Acquire blocks until a call may start, then returns the function to call
// once the call has ended (with its response read or its connection failed).
// The caller's place in the queue is the Priority ctx carries (PriorityFrom).
// It returns ctx's error if ctx ends first, and ErrClosed after Close. A call
// granted is counted even if it is never made; the done function must be
// called exactly once.
func (w *Window) Acquire(ctx context.Context) (done func(), err error) {
	// A caller that has already gone gets no call, even one free at once:
	// the call would be made for nobody and still count.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := PriorityFrom(ctx)
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, ErrClosed
	}
	c, wt := w.admitLocked(p)
	w.mu.Unlock()
	if c != nil {
		return w.grantedFunc(p, c), nil
	}

	select {
	case c := <-wt.ready:
		if c == nil {
			return nil, ErrClosed
		}
		return w.grantedFunc(p, c), nil
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

// admitLocked grants a caller of priority p a call at once, or queues it
// and returns its waiter.
func (w *Window) admitLocked(p Priority) (*call, *waiter) {
	if !w.queuedLocked(p) {
		if c := w.grantLocked(w.clock.Now(), w.limitsFor(p)); c != nil {
			return c, nil
		}
	}
	wt := &waiter{prio: p, ready: make(chan *call, 1)}
	w.queues[p.index()] = append(w.queues[p.index()], wt)
	w.waiting++
	w.scheduleLocked()
	return nil, wt
}

// queuedLocked reports whether a caller of priority p would stand behind a
// waiter: one of p or a higher priority waits, or, for PriorityDeferred,
// anyone at all.
func (w *Window) queuedLocked(p Priority) bool {
	if w.waiting == 0 {
		return false
	}
	for i := p.index(); i < numPriorities; i++ {
		if len(w.queues[i]) > 0 {
			return true
		}
	}
	return false
}

// PauseUntil stops every call from starting before t: after a 429, Defender's
// Retry-After applies to the whole client, not just the call that got it. A
// pause never shortens one already in force.
func (w *Window) PauseUntil(t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if t.After(w.paused) {
		w.paused = t
		w.recordLocked('p', t)
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

// Waiting reports how many callers wait for a call, of every priority.
func (w *Window) Waiting() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.waiting
}

// Close wakes every waiter with ErrClosed and refuses later calls.
func (w *Window) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	w.closeStateLocked()
	for i, q := range w.queues {
		for _, wt := range q {
			wt.ready <- nil
		}
		w.queues[i] = nil
	}
	w.waiting = 0
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
}

// grantedFunc counts a call granted to a caller of priority p and returns
// its done function.
func (w *Window) grantedFunc(p Priority, c *call) func() {
	if g := w.granted[p.index()]; g != nil {
		g.Inc()
	}
	return w.doneFunc(c)
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

// grantLocked records and returns a call starting at now if every window of
// limits and the pause allow it, or returns nil.
func (w *Window) grantLocked(now time.Time, limits Limits) *call {
	if next, ok := w.nextLocked(now, limits); !ok || next.After(now) {
		return nil
	}
	c := &call{at: now, running: true}
	w.calls = append(w.calls, c)
	w.recordLocked('g', now)
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
	q := w.queues[wt.prio.index()]
	for i, x := range q {
		if x == wt {
			w.queues[wt.prio.index()] = append(q[:i], q[i+1:]...)
			w.waiting--
			return
		}
	}
}

// headLocked returns the first waiter of the highest priority that has
// one, or nil.
func (w *Window) headLocked() *waiter {
	if w.waiting == 0 {
		return nil
	}
	for i := numPriorities - 1; i >= 0; i-- {
		if q := w.queues[i]; len(q) > 0 {
			return q[0]
		}
	}
	return nil
}

// nextLocked returns the earliest instant at or after now when a call may
// start under limits (w.limits or w.lower, whose windows are the same); ok
// is false when that depends on running calls ending first.
func (w *Window) nextLocked(now time.Time, limits Limits) (next time.Time, ok bool) {
	w.pruneLocked(now)
	next = now
	if w.paused.After(next) {
		next = w.paused
	}
	for _, l := range limits {
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
		slices.SortFunc(ended, time.Time.Compare)
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
// of the queue, highest priority first, and arms a timer for when the head
// may go.
//
// The limits of a priority are never looser than those of a higher one
// (the reserve only takes calls away), so when the head cannot go nobody
// behind it can: the loop stops at the first refusal, and the head's own
// instant, computed with its own limits, is the earliest any waiter may go.
// A caller held by the reserve is the head only when no higher priority
// waits, and one that arrives later goes before it (Acquire).
func (w *Window) scheduleLocked() {
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	now := w.clock.Now()
	for {
		wt := w.headLocked()
		if wt == nil {
			break
		}
		c := w.grantLocked(now, w.limitsFor(wt.prio))
		if c == nil {
			break
		}
		i := wt.prio.index()
		w.queues[i] = w.queues[i][1:]
		w.waiting--
		wt.ready <- c
	}
	head := w.headLocked()
	if head == nil || w.closed {
		return
	}
	next, ok := w.nextLocked(now, w.limitsFor(head.prio))
	if !ok {
		return // a running call's end will reschedule
	}
	w.timer = w.clock.AfterFunc(next.Sub(now), func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.scheduleLocked()
	})
}

// register creates the metrics and registers them with reg.
func (w *Window) register(reg prometheus.Registerer) error {
	granted := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enricher_budget_granted_total",
		Help: "Calls the budget granted, by priority of the lookup (high, medium, low, informational, deferred).",
	}, []string{"priority"})
	for _, p := range priorities {
		w.granted[p.index()] = granted.WithLabelValues(p.String())
	}
	cs := []prometheus.Collector{granted, newWaitingCollector(w.queueLens), newWindowCollector(w.limits, w.windowCounts)}
	if w.state != nil {
		w.state.errors = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "enricher_budget_state_errors_total",
			Help: "Writes to the call budget's state file (ENRICHER_BUDGET_STATE_FILE) that failed.",
		})
		cs = append(cs, w.state.errors)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("budget: registering metrics: %w", err)
		}
	}
	return nil
}

// waitingCollector reports the length of each priority's queue at scrape
// time; lens returns them, by Priority.index.
type waitingCollector struct {
	lens func() [numPriorities]int
	desc *prometheus.Desc
}

func newWaitingCollector(lens func() [numPriorities]int) waitingCollector {
	return waitingCollector{lens: lens, desc: prometheus.NewDesc("enricher_budget_waiting",
		"Callers waiting for a call of the budget, by priority of the lookup (high, medium, low, informational, deferred).",
		[]string{"priority"}, nil)}
}

func (c waitingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c waitingCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.lens()
	for _, p := range priorities {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n[p.index()]), p.String())
	}
}

// queueLens returns the length of each priority's queue.
func (w *Window) queueLens() (n [numPriorities]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, q := range w.queues {
		n[i] = len(q)
	}
	return n
}
