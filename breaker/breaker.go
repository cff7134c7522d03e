// Package breaker puts a circuit breaker (sony/gobreaker/v2) in front of the
// Defender lookup, so that an API that is down costs neither call budget nor
// waiting time: while open, lookups fail at once with an error matching
// defender.ErrUnavailable, which the pipeline publishes as "unavailable".
//
// Only failures that mean the API is unwell count (defender.Classify says
// Transient: 5xx, timeouts, connection failures, Entra ID unreachable), and
// lookups given up by their caller after such a failure. A 404, a 429, other
// 4xx answers, a credential Entra ID refuses, an invalid id, a spent budget
// and a cancelled caller are neither failures nor successes: a refusal is
// published as failed at once, and an open breaker would turn it into an
// unavailable that the wait policy holds. After Timeout open, the breaker lets Probes calls through
// (half-open); if they succeed it closes by itself.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/defender-enricher/defender-enricher/defender"
)

// Lookup is what the breaker wraps: defender.Client satisfies it.
type Lookup interface {
	User(ctx context.Context, alertID string) (*defender.User, error)
}

// State is the breaker's state.
type State = gobreaker.State

// States, re-exported so that callers need not import gobreaker.
const (
	StateClosed   = gobreaker.StateClosed
	StateHalfOpen = gobreaker.StateHalfOpen
	StateOpen     = gobreaker.StateOpen
)

// Options configure a Breaker.
type Options struct {
	// Failures is how many consecutive failures open the breaker; default 5.
	Failures uint32
	// Timeout is how long it stays open before probing; default 30s.
	Timeout time.Duration
	// Probes is how many calls a half-open breaker lets through; default 1.
	Probes uint32
	// OnStateChange, when set, is told of every change. It runs under the
	// breaker's lock: it must return quickly and must not call the Breaker.
	OnStateChange func(from, to State)
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
}

// Breaker is a Lookup behind a circuit breaker. It is safe for concurrent use.
type Breaker struct {
	next Lookup
	cb   *gobreaker.CircuitBreaker[*defender.User]
}

// New wraps next.
func New(next Lookup, o Options) (*Breaker, error) {
	if o.Failures == 0 {
		o.Failures = 5
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Probes == 0 {
		o.Probes = 1
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	state := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "enricher_breaker_state",
		Help: "Defender circuit breaker: 0 closed, 1 half-open, 2 open.",
	})
	changes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enricher_breaker_transitions_total",
		Help: "Defender circuit breaker state changes, by new state.",
	}, []string{"to"})
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{state, changes} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("breaker: registering metrics: %w", err)
			}
		}
	}
	failures := o.Failures
	b := &Breaker{next: next}
	b.cb = gobreaker.NewCircuitBreaker[*defender.User](gobreaker.Settings{
		Name:        "defender",
		MaxRequests: o.Probes,
		Timeout:     o.Timeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		IsSuccessful: func(err error) bool {
			return err == nil || defender.Classify(err) != defender.Transient && !abandonedUnwell(err)
		},
		IsExcluded: excluded,
		OnStateChange: func(_ string, from, to gobreaker.State) {
			// Runs under gobreaker's lock: only cheap work that never
			// calls back into the breaker.
			state.Set(float64(to))
			changes.WithLabelValues(to.String()).Inc()
			log.Warn("defender circuit breaker changed state", "from", from.String(), "to", to.String())
			if o.OnStateChange != nil {
				o.OnStateChange(from, to)
			}
		},
	})
	return b, nil
}

// excluded errors say nothing about the API's health: counting them as
// successes would let a flood of 404s or cancellations close a breaker that
// real failures opened, and they must not count as failures either.
//
// Excluded: a 404, any other 4xx answer (429 included), what
// defender.Classify calls Permanent, an invalid id, a spent budget or an open
// breaker (ErrUnavailable) and a cancelled caller,
// unless the lookup was given up after the API had failed (abandonedUnwell).
func excluded(err error) bool {
	if err == nil || abandonedUnwell(err) {
		return false
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, defender.ErrUnavailable) ||
		errors.Is(err, defender.ErrInvalidAlertID) || errors.Is(err, defender.ErrNotFound) ||
		defender.Classify(err) == defender.Permanent {
		return true
	}
	var api *defender.APIError
	return errors.As(err, &api) && api.StatusCode < 500
}

// abandonedUnwell reports whether err is a lookup given up (its caller
// stopped waiting, between retries or for the budget) after the API had
// answered 5xx or not at all. It counts as a failure: when callers wait
// less than the client's retries take, or the budget queues the retries
// behind other calls, as in an outage with a backlog, every lookup of a
// dead API ends this way, and a breaker that excluded them would never open.
func abandonedUnwell(err error) bool {
	if !errors.Is(err, defender.ErrUnavailable) {
		return false
	}
	var (
		api *defender.APIError
		te  *defender.TransportError
		tok *defender.TokenError
	)
	return errors.As(err, &api) && api.StatusCode >= 500 || errors.As(err, &te) || errors.As(err, &tok)
}

// User looks the alert's user up through the breaker. While the breaker is
// open (or half-open with its probes taken) it returns at once with an error
// that matches defender.ErrUnavailable.
func (b *Breaker) User(ctx context.Context, alertID string) (*defender.User, error) {
	u, err := b.cb.Execute(func() (*defender.User, error) { return b.next.User(ctx, alertID) })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return nil, fmt.Errorf("%w: circuit breaker %s after repeated failures of the Defender API", defender.ErrUnavailable, b.cb.State())
	}
	return u, err
}

// State returns the breaker's current state.
func (b *Breaker) State() State { return b.cb.State() }
