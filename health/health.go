// Package health is the watchdog behind /healthz: the loops that must keep
// going (the fetch loop, the committer) each tick a Beat, and the Watchdog
// reports a loop as stalled when it has been working, not waiting, without
// a tick for longer than its bound.
//
// A loop marks the moments it waits on something outside the process (a
// broker's answer, room freed by acknowledgements, a Defender lookup, its
// ticker) with Idle and the moments it resumes its own work with Busy. A
// loop that waits is never stalled, however long it waits: a broker or an
// API that is away is what metrics and alerts are for, and restarting the
// process would not bring it back. A loop that is busy and does not tick
// again within the bound is stuck in the process itself (a lock never
// released, a write to a blocked log pipe, a bug), which only a restart
// mends, and which is what a liveness probe is for.
package health

import (
	"sync"
	"sync/atomic"
	"time"
)

// Beat is one loop's heartbeat. Busy and Idle are cheap (two atomic
// operations) and safe for concurrent use; a nil *Beat ignores both.
type Beat struct {
	name  string
	ticks atomic.Uint64
	idle  atomic.Bool

	mu      sync.Mutex // guards what the watchdog saw
	seen    uint64
	changed time.Time
}

// Busy marks the loop as doing its own work from now on.
func (b *Beat) Busy() {
	if b == nil {
		return
	}
	b.idle.Store(false)
	b.ticks.Add(1)
}

// Idle marks the loop as waiting on something outside the process from now
// on.
func (b *Beat) Idle() {
	if b == nil {
		return
	}
	b.idle.Store(true)
	b.ticks.Add(1)
}

// Waiting reports whether the loop is waiting on the outside now.
func (b *Beat) Waiting() bool { return b.idle.Load() }

// Name is the beat's name, as Stalled reports it.
func (b *Beat) Name() string { return b.name }

// Watchdog watches beats. Its methods are safe for concurrent use.
type Watchdog struct {
	bound time.Duration
	now   func() time.Time

	mu    sync.Mutex
	beats []*Beat
}

// New returns a watchdog that reports a beat stalled after bound without a
// tick while busy. now is the clock; nil means time.Now.
func New(bound time.Duration, now func() time.Time) *Watchdog {
	if now == nil {
		now = time.Now
	}
	return &Watchdog{bound: bound, now: now}
}

// Bound is the longest a beat may stay busy without a tick.
func (w *Watchdog) Bound() time.Duration { return w.bound }

// Beat returns a new beat of that name, idle until its loop first ticks:
// a loop that has not started yet is not stalled.
func (w *Watchdog) Beat(name string) *Beat {
	b := &Beat{name: name, changed: w.now()}
	b.idle.Store(true)
	w.mu.Lock()
	w.beats = append(w.beats, b)
	w.mu.Unlock()
	return b
}

// Stalled returns the names of the beats that have been busy without a
// tick for longer than the bound, as far as the watchdog can tell: it
// notices a tick when it is asked, so a loop that stalls is reported at
// most one bound after the first call that saw it stalled, and at the
// latest one bound plus the time between two calls after it stopped.
func (w *Watchdog) Stalled() []string {
	now := w.now()
	w.mu.Lock()
	beats := w.beats
	w.mu.Unlock()
	var stalled []string
	for _, b := range beats {
		b.mu.Lock()
		if t := b.ticks.Load(); t != b.seen || b.idle.Load() {
			b.seen, b.changed = t, now
		}
		if now.Sub(b.changed) > w.bound {
			stalled = append(stalled, b.name)
		}
		b.mu.Unlock()
	}
	return stalled
}
