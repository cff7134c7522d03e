// Package breaker is the circuit breaker of the Defender calls, over
// sony/gobreaker/v2: the client asks it before every attempt of a lookup,
// retries included (defender.Breaker), and tells it each call's outcome as
// the call ends, so that a dead API costs a handful of calls and no
// waiting: while the breaker is open no call starts, and a lookup whose
// next attempt meets it ends at once, unavailable. An attempt let through
// before it opened that is still waiting for its token or its call budget
// stops waiting when it opens: Allow's wait context ends, with a cause
// that matches ErrOpen; the calls already out run to their end.
//
// What counts is what defender.CallOutcome says of one call: a 5xx but 501,
// a timeout or a connection failure is a failure; an answer the API gave on
// purpose (200, 404, 401, 403) is a success; a 429, or an attempt that made
// no call (the budget wait or the token ended it), is neither and changes
// nothing. Options.Failures consecutive failed calls open the breaker.
//
// The open time doubles while the API stays down: FirstTimeout the first
// time, then, each time the half-open breaker's probe fails, twice the last
// one, up to Timeout. Once the open time has passed the breaker is
// half-open: Probes calls go through (the first lookups to come), the rest
// are refused; the probes' successes close it and bring the open time back
// to FirstTimeout, a failure opens it again, and a neutral outcome gives
// its probe's place to the next call. A long outage costs one probe per
// Timeout.
//
// gobreaker counts the outcomes and keeps the probes' places; its Timeout is
// fixed, so it is set to FirstTimeout and the breaker keeps its own end of
// the open time on top, reporting gobreaker's half-open state as open until
// then. Changes of state are seen as the breaker is used (Allow, State, a
// metrics scrape): no timer runs.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/defender-enricher/defender-enricher/defender"
)

// State is the breaker's state.
type State = gobreaker.State

// States, re-exported so that callers need not import gobreaker.
const (
	StateClosed   = gobreaker.StateClosed
	StateHalfOpen = gobreaker.StateHalfOpen
	StateOpen     = gobreaker.StateOpen
)

// ErrOpen is what Allow's errors match while no call may start (the
// breaker is open, or half-open with every probe out), and the cause of
// the context of an attempt that was let through but had not started its
// call when the breaker opened.
var ErrOpen = errors.New("circuit breaker open")

// errProbeLate ends a half-open probe that waited ProbeWait for its token
// or its budget without starting its call.
var errProbeLate = fmt.Errorf("%w: the probe call could not start in time; another lookup may probe", ErrOpen)

// errOpened ends the attempts let through before the breaker opened.
var errOpened = fmt.Errorf("%w: it opened after repeated failures of the Defender API before this call started", ErrOpen)

// Options configure a Breaker.
type Options struct {
	// Failures is how many consecutive failed calls open the breaker;
	// default 5.
	Failures uint32
	// FirstTimeout is how long the breaker stays open the first time it
	// opens after being closed; default 1s, at most Timeout.
	FirstTimeout time.Duration
	// Timeout is the longest it stays open: the open time doubles while
	// the probes fail, up to Timeout; default 30s.
	Timeout time.Duration
	// Probes is how many calls a half-open breaker lets through, and how
	// many successes close it; default 1.
	Probes uint32
	// ProbeWait bounds how long a probe may wait for its token and its
	// call budget before it gives its place back, so that a lookup the
	// budget holds (a low-priority one behind the reserve, say) does not
	// keep the breaker half-open while others could probe; default 2s.
	ProbeWait time.Duration
	// OnStateChange, when set, is told of every change. It runs under the
	// breaker's lock: it must return quickly and must not call the Breaker.
	OnStateChange func(from, to State)
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
}

// Breaker is a defender.Breaker. It is safe for concurrent use.
type Breaker struct {
	first, max time.Duration
	probeWait  time.Duration
	onChange   func(from, to State)
	log        *slog.Logger
	changes    *prometheus.CounterVec
	refused    prometheus.Counter

	// mu is held around every call into cb, so that cb's OnStateChange,
	// which cb runs under its own lock, always runs under mu as well.
	mu      sync.Mutex
	cb      *gobreaker.TwoStepCircuitBreaker[struct{}]
	state   State         // as reported
	openFor time.Duration // the open time of this opening (or the last one, while half-open); 0 while closed
	until   time.Time     // the end of the open time; zero while closed
	// waits are the attempts let through whose done has not been called:
	// an opening ends them with errOpened.
	waits    map[uint64]context.CancelCauseFunc
	lastWait uint64
}

// Errors that give a call's outcome to gobreaker: nil is a success.
var (
	errFailed  = errors.New("call failed")
	errNeutral = errors.New("call says nothing of the API's health")
)

// New returns a closed Breaker.
func New(o Options) (*Breaker, error) {
	if o.Failures == 0 {
		o.Failures = 5
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.FirstTimeout <= 0 {
		o.FirstTimeout = time.Second
	}
	o.FirstTimeout = min(o.FirstTimeout, o.Timeout)
	if o.Probes == 0 {
		o.Probes = 1
	}
	if o.ProbeWait <= 0 {
		o.ProbeWait = 2 * time.Second
	}
	b := &Breaker{
		first: o.FirstTimeout, max: o.Timeout, probeWait: o.ProbeWait, onChange: o.OnStateChange, log: o.Logger,
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enricher_breaker_transitions_total",
			Help: "Defender circuit breaker state changes, by new state.",
		}, []string{"to"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "enricher_breaker_refused_total",
			Help: "Defender calls not started because the circuit breaker was open or its probe was out.",
		}),
	}
	for _, s := range []State{StateClosed, StateHalfOpen, StateOpen} {
		b.changes.WithLabelValues(s.String()) // at zero from the start
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.waits = map[uint64]context.CancelCauseFunc{}
	state := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "enricher_breaker_state",
		Help: "Defender circuit breaker: 0 closed, 1 half-open, 2 open.",
	}, func() float64 { return float64(b.State()) })
	openFor := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "enricher_breaker_open_seconds",
		Help: "How long the Defender circuit breaker stays open this time (doubling while probes fail, up to ENRICHER_BREAKER_TIMEOUT); 0 while closed.",
	}, func() float64 { return b.OpenTime().Seconds() })
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{state, openFor, b.changes, b.refused} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("breaker: registering metrics: %w", err)
			}
		}
	}
	failures := o.Failures
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:         "defender",
		MaxRequests:  o.Probes,
		Timeout:      o.FirstTimeout, // the shortest open time; b.until holds the rest
		ReadyToTrip:  func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsSuccessful: func(err error) bool { return err == nil },
		// A neutral outcome is excluded: it neither counts nor resets the
		// consecutive failures, and in half-open it gives its place back
		// (gobreaker counts the probes out as requests less exclusions).
		IsExcluded:    func(err error) bool { return errors.Is(err, errNeutral) },
		OnStateChange: func(_ string, from, to gobreaker.State) { b.cbChanged(from, to) },
	})
	return b, nil
}

// cbChanged follows gobreaker's own changes, under mu (see Breaker.mu):
// each opening ends the waits of the attempts let through before it and
// sets the open time, doubling it after a failed probe; closing resets it.
// What is reported is left to sync.
func (b *Breaker) cbChanged(from, to State) {
	switch to {
	case StateOpen:
		for id, end := range b.waits {
			end(errOpened)
			delete(b.waits, id)
		}
		if from == StateHalfOpen && b.openFor > 0 {
			b.openFor = min(2*b.openFor, b.max)
		} else {
			b.openFor = b.first
		}
		b.until = time.Now().Add(b.openFor)
	case StateClosed:
		b.openFor, b.until = 0, time.Time{}
	}
}

// sync reports the breaker's state as of now, and any change of it. Under
// mu. gobreaker is half-open once FirstTimeout has passed; until the
// breaker's own open time has passed too, that is still open.
func (b *Breaker) sync(now time.Time) State {
	s := b.cb.State()
	if s != StateClosed && now.Before(b.until) {
		s = StateOpen
	}
	if s == b.state {
		return s
	}
	from := b.state
	b.state = s
	b.changes.WithLabelValues(s.String()).Inc()
	if s == StateOpen {
		b.log.Warn("defender circuit breaker changed state", "from", from.String(), "to", s.String(), "open_for", b.openFor.String())
	} else {
		b.log.Warn("defender circuit breaker changed state", "from", from.String(), "to", s.String())
	}
	if b.onChange != nil {
		b.onChange(from, s)
	}
	return s
}

// Allow reports whether a call may start. When it may not, the error
// matches ErrOpen. When it may, the attempt waits under wait, which ends
// with a cause matching ErrOpen if the breaker opens first, and done must
// be called once with the call's outcome (see defender.Breaker).
func (b *Breaker) Allow(ctx context.Context) (wait context.Context, done func(defender.Outcome), err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if now.Before(b.until) {
		// Not even asking gobreaker: it would be half-open already once
		// FirstTimeout has passed.
		b.sync(now)
		b.refused.Inc()
		return nil, nil, fmt.Errorf("%w after repeated failures of the Defender API: no call for %v more (open for %v)",
			ErrOpen, b.until.Sub(now).Round(time.Millisecond), b.openFor)
	}
	report, err := b.cb.Allow()
	s := b.sync(now)
	if err != nil {
		b.refused.Inc()
		if s == StateHalfOpen {
			return nil, nil, fmt.Errorf("%w until its probe call answers (half-open after repeated failures of the Defender API)", ErrOpen)
		}
		return nil, nil, fmt.Errorf("%w after repeated failures of the Defender API", ErrOpen)
	}
	wait, cancel := context.WithCancelCause(ctx)
	if s == StateHalfOpen {
		// A probe that cannot start its call soon gives its place back:
		// its attempt ends without a call, which is neutral.
		end := cancel
		probe := time.AfterFunc(b.probeWait, func() { end(errProbeLate) })
		cancel = func(cause error) { probe.Stop(); end(cause) }
	}
	b.lastWait++
	id := b.lastWait
	b.waits[id] = cancel
	var once sync.Once
	return wait, func(o defender.Outcome) {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			delete(b.waits, id)
			cancel(nil)
			switch o {
			case defender.OutcomeSuccess:
				report(nil)
			case defender.OutcomeFailure:
				report(errFailed)
			default:
				report(errNeutral)
			}
			b.sync(time.Now())
		})
	}, nil
}

// State returns the breaker's current state.
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sync(time.Now())
}

// OpenTime returns how long the breaker stays open this time: while it is
// open, or half-open after being open that long; 0 while closed.
func (b *Breaker) OpenTime() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sync(time.Now()) == StateClosed {
		return 0
	}
	return b.openFor
}
