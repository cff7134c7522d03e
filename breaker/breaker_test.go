package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/defender-enricher/defender-enricher/breaker"
	"github.com/defender-enricher/defender-enricher/defender"
)

// The breaker reads the real clock (gobreaker does): open times here are
// either an hour, so that a refusal cannot depend on how fast the test
// runs, or a few milliseconds, where only lower bounds are checked.

var _ defender.Breaker = (*breaker.Breaker)(nil)

// transitions records the breaker's state changes. Its callback only
// records: it must not call the breaker, under whose lock it runs.
type transitions struct {
	mu  sync.Mutex
	got []string
}

func (tr *transitions) record(from, to breaker.State) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.got = append(tr.got, from.String()+"->"+to.String())
}

func (tr *transitions) want(t *testing.T, want ...string) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if !slices.Equal(tr.got, want) {
		t.Errorf("state changes %v, want %v", tr.got, want)
	}
}

// wantPrefix checks the first changes, for a breaker that may have changed
// since, as time passed.
func (tr *transitions) wantPrefix(t *testing.T, want ...string) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.got) < len(want) || !slices.Equal(tr.got[:len(want)], want) {
		t.Errorf("state changes %v, want them to start with %v", tr.got, want)
	}
}

type env struct {
	*breaker.Breaker
	changes *transitions
	reg     *prometheus.Registry
}

func newEnv(t *testing.T, o breaker.Options) *env {
	t.Helper()
	e := &env{changes: &transitions{}, reg: prometheus.NewRegistry()}
	o.OnStateChange = e.changes.record
	o.Registerer = e.reg
	b, err := breaker.New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.Breaker = b
	return e
}

// call is one call let through with the given outcome.
func (e *env) call(t *testing.T, o defender.Outcome) {
	t.Helper()
	_, done, err := e.Allow(context.Background())
	if err != nil {
		t.Fatalf("a %v call was refused: %v", o, err)
	}
	done(o)
}

func (e *env) wantState(t *testing.T, want breaker.State) {
	t.Helper()
	if got := e.State(); got != want {
		t.Fatalf("breaker %v, want %v", got, want)
	}
}

// wantRefused checks that n calls are refused with ErrOpen, saying text.
func (e *env) wantRefused(t *testing.T, n int, text string) {
	t.Helper()
	for range n {
		_, done, err := e.Allow(context.Background())
		if done != nil || !errors.Is(err, breaker.ErrOpen) {
			t.Fatalf("Allow: %v, want ErrOpen", err)
		}
		if !strings.Contains(err.Error(), text) {
			t.Errorf("%q does not say %q", err, text)
		}
	}
}

// probe waits until the breaker lets a call through again and returns it,
// with how long after since that was. A refused call is all the breaker
// is asked meanwhile.
func (e *env) probe(t *testing.T, since time.Time) (func(defender.Outcome), time.Duration) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, done, err := e.Allow(context.Background())
		if err == nil {
			return done, time.Since(since)
		}
		if !errors.Is(err, breaker.ErrOpen) {
			t.Fatalf("Allow: %v, want ErrOpen", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no call let through: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

func (e *env) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			n := mf.GetName()
			for _, l := range m.GetLabel() {
				n += fmt.Sprintf("{%s=%s}", l.GetName(), l.GetValue())
			}
			if m.Gauge != nil {
				got[n] = m.GetGauge().GetValue()
			} else {
				got[n] = m.GetCounter().GetValue()
			}
		}
	}
	return got[name]
}

// TestOpensOnConsecutiveFailures: Failures failed calls in a row open the
// breaker; a success between them starts the count again; once open, no
// call is let through.
func TestOpensOnConsecutiveFailures(t *testing.T) {
	t.Parallel()
	e := newEnv(t, breaker.Options{Failures: 3, FirstTimeout: time.Hour, Timeout: time.Hour})
	for _, o := range []defender.Outcome{
		defender.OutcomeFailure, defender.OutcomeFailure, defender.OutcomeSuccess,
		defender.OutcomeFailure, defender.OutcomeFailure,
	} {
		e.call(t, o)
		e.wantState(t, breaker.StateClosed)
	}
	e.call(t, defender.OutcomeFailure)
	e.wantState(t, breaker.StateOpen)
	e.wantRefused(t, 5, "circuit breaker open after repeated failures of the Defender API")
	e.changes.want(t, "closed->open")
	if got := e.OpenTime(); got != time.Hour {
		t.Errorf("open for %v, want the first timeout, 1h", got)
	}
}

// TestNeutralNeitherCountsNorResets: neutral outcomes (a 429, no call made)
// neither count as failures nor break a run of them.
func TestNeutralNeitherCountsNorResets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, breaker.Options{Failures: 2, FirstTimeout: time.Hour, Timeout: time.Hour})
	e.call(t, defender.OutcomeFailure)
	for range 10 {
		e.call(t, defender.OutcomeNeutral)
		e.wantState(t, breaker.StateClosed)
	}
	e.call(t, defender.OutcomeFailure)
	e.wantState(t, breaker.StateOpen)
	e.changes.want(t, "closed->open")
}

// TestOutcomeOnce: an outcome reported twice counts once.
func TestOutcomeOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, breaker.Options{Failures: 2, FirstTimeout: time.Hour, Timeout: time.Hour})
	_, done, err := e.Allow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	done(defender.OutcomeFailure)
	done(defender.OutcomeFailure)
	e.wantState(t, breaker.StateClosed)
}

// TestLateOutcome: a call let through before the breaker opened that ends
// after it did changes nothing: its success does not close it.
func TestLateOutcome(t *testing.T) {
	t.Parallel()
	e := newEnv(t, breaker.Options{Failures: 1, FirstTimeout: time.Hour, Timeout: time.Hour})
	_, late, err := e.Allow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e.call(t, defender.OutcomeFailure)
	late(defender.OutcomeSuccess)
	e.wantState(t, breaker.StateOpen)
	e.wantRefused(t, 1, "circuit breaker open")
}

// TestOpenTimeDoubles: the open time starts at FirstTimeout, doubles each
// time a probe fails, stops at Timeout, and starts again at FirstTimeout
// once a probe has closed the breaker.
func TestOpenTimeDoubles(t *testing.T) {
	t.Parallel()
	const first, max = 20 * time.Millisecond, 100 * time.Millisecond
	e := newEnv(t, breaker.Options{Failures: 2, FirstTimeout: first, Timeout: max})
	e.call(t, defender.OutcomeFailure)
	e.call(t, defender.OutcomeFailure)
	// Taken once it is open, so that the time measured from here is at
	// most how long it was open.
	opened := time.Now()
	for _, want := range []time.Duration{first, 2 * first, 4 * first, max, max} {
		if got := e.OpenTime(); got != want {
			t.Fatalf("open for %v, want %v", got, want)
		}
		if got := e.metric(t, "enricher_breaker_open_seconds"); got != want.Seconds() {
			t.Errorf("enricher_breaker_open_seconds %v, want %v", got, want.Seconds())
		}
		probe, after := e.probe(t, opened)
		if after < want {
			t.Fatalf("a probe %v after opening, want %v at least", after, want)
		}
		e.wantState(t, breaker.StateHalfOpen)
		probe(defender.OutcomeFailure)
		opened = time.Now()
	}
	probe, _ := e.probe(t, opened)
	probe(defender.OutcomeSuccess)
	e.wantState(t, breaker.StateClosed)
	if got := e.OpenTime(); got != 0 {
		t.Errorf("closed, open for %v, want 0", got)
	}
	e.call(t, defender.OutcomeFailure)
	e.call(t, defender.OutcomeFailure)
	if got := e.OpenTime(); got != first {
		t.Errorf("open again for %v, want %v", got, first)
	}
	var want []string
	want = append(want, "closed->open")
	for range 5 {
		want = append(want, "open->half-open", "half-open->open")
	}
	want = append(want, "open->half-open", "half-open->closed", "closed->open")
	// Open for 20ms only: it may be half-open again by now.
	e.changes.wantPrefix(t, want...)
}

// TestFirstTimeoutAtMostTimeout: a Timeout shorter than the first open
// time is the open time.
func TestFirstTimeoutAtMostTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, breaker.Options{Failures: 1, Timeout: 300 * time.Millisecond})
	e.call(t, defender.OutcomeFailure)
	if got := e.OpenTime(); got != 300*time.Millisecond {
		t.Errorf("open for %v, want 300ms", got)
	}
}

// halfOpen returns a breaker that has been open and is half-open now.
func halfOpen(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, breaker.Options{Failures: 1, FirstTimeout: time.Millisecond, Timeout: time.Hour})
	e.call(t, defender.OutcomeFailure)
	opened := time.Now()
	e.wantState(t, breaker.StateOpen)
	deadline := opened.Add(60 * time.Second)
	for e.State() != breaker.StateHalfOpen {
		if time.Now().After(deadline) {
			t.Fatal("the breaker is not half-open a minute after it opened")
		}
		time.Sleep(time.Millisecond)
	}
	return e
}

// TestHalfOpenClosesOnAnAnswer: the one probe of a half-open breaker is
// the only call let through; an answer given on purpose (200, or a 404)
// closes the breaker.
func TestHalfOpenClosesOnAnAnswer(t *testing.T) {
	t.Parallel()
	e := halfOpen(t)
	_, probe, err := e.Allow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e.wantRefused(t, 3, "until its probe call answers")
	e.wantState(t, breaker.StateHalfOpen)
	probe(defender.CallOutcome(defender.ErrNotFound))
	e.wantState(t, breaker.StateClosed)
	e.call(t, defender.OutcomeSuccess)
	e.call(t, defender.OutcomeSuccess)
	e.changes.want(t, "closed->open", "open->half-open", "half-open->closed")
}

// TestNeutralProbeGivesItsPlaceBack: a probe that ends neutral (a 429, the
// budget wait or the token ended it) neither closes nor opens the
// breaker, and the next call is the probe.
func TestNeutralProbeGivesItsPlaceBack(t *testing.T) {
	t.Parallel()
	e := halfOpen(t)
	for range 3 {
		_, probe, err := e.Allow(context.Background())
		if err != nil {
			t.Fatalf("the probe's place was not given back: %v", err)
		}
		e.wantRefused(t, 1, "until its probe call answers")
		probe(defender.OutcomeNeutral)
		e.wantState(t, breaker.StateHalfOpen)
	}
	e.call(t, defender.OutcomeFailure)
	if got := e.OpenTime(); got != 2*time.Millisecond {
		t.Errorf("open for %v after a failed probe, want 2ms", got)
	}
	// Open for 2ms only: it may be half-open again by now.
	e.changes.wantPrefix(t, "closed->open", "open->half-open", "half-open->open")
}

// TestMetrics: the state gauge, the transitions and the refused calls are
// counted.
func TestMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, breaker.Options{Failures: 1, FirstTimeout: time.Hour, Timeout: time.Hour})
	if got := e.metric(t, "enricher_breaker_state"); got != float64(breaker.StateClosed) {
		t.Errorf("enricher_breaker_state %v, want closed", got)
	}
	e.call(t, defender.OutcomeFailure)
	e.wantRefused(t, 4, "open")
	for name, want := range map[string]float64{
		"enricher_breaker_state":                      float64(breaker.StateOpen),
		"enricher_breaker_transitions_total{to=open}": 1,
		"enricher_breaker_refused_total":              4,
		"enricher_breaker_open_seconds":               3600,
	} {
		if got := e.metric(t, name); got != want {
			t.Errorf("%s %v, want %v", name, got, want)
		}
	}
	if _, err := breaker.New(breaker.Options{Registerer: e.reg}); err == nil {
		t.Error("registering the metrics twice succeeded")
	}
}

// TestOpeningEndsWaits: the attempts let through before the breaker opens
// stop waiting for their token or budget when it does, with a cause that
// says so; while it stays closed they wait on, and their caller's context
// still ends them.
func TestOpeningEndsWaits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, breaker.Options{Failures: 1, FirstTimeout: time.Hour, Timeout: time.Hour})
	caller, cancel := context.WithCancel(context.Background())
	defer cancel()
	var waits []context.Context
	var dones []func(defender.Outcome)
	for range 3 {
		w, done, err := e.Allow(caller)
		if err != nil {
			t.Fatal(err)
		}
		waits, dones = append(waits, w), append(dones, done)
	}
	e.call(t, defender.OutcomeSuccess)
	for _, w := range waits {
		if w.Err() != nil {
			t.Fatalf("a wait ended with the breaker closed: %v", context.Cause(w))
		}
	}
	// The caller's context is the waits' parent.
	ended, endCaller := context.WithCancel(context.Background())
	w, done, err := e.Allow(ended)
	if err != nil {
		t.Fatal(err)
	}
	endCaller()
	if cause := context.Cause(w); !errors.Is(cause, context.Canceled) || errors.Is(cause, breaker.ErrOpen) {
		t.Errorf("a cancelled caller's wait ended with %v, want context.Canceled", cause)
	}
	done(defender.OutcomeNeutral)

	e.call(t, defender.OutcomeFailure)
	e.wantState(t, breaker.StateOpen)
	for _, w := range waits {
		select {
		case <-w.Done():
		default:
			t.Fatal("a wait goes on with the breaker open")
		}
		if cause := context.Cause(w); !errors.Is(cause, breaker.ErrOpen) || !strings.Contains(cause.Error(), "before this call started") {
			t.Errorf("a wait ended with %v, want ErrOpen", cause)
		}
	}
	if caller.Err() != nil {
		t.Error("the breaker ended its caller's context")
	}
	// Their outcomes, from an earlier generation, change nothing.
	for _, done := range dones {
		done(defender.OutcomeNeutral)
	}
	e.wantState(t, breaker.StateOpen)
}

// TestDoneEndsTheWait: done releases the wait's context.
func TestDoneEndsTheWait(t *testing.T) {
	t.Parallel()
	e := newEnv(t, breaker.Options{})
	w, done, err := e.Allow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	done(defender.OutcomeSuccess)
	if w.Err() == nil {
		t.Error("the wait goes on after done")
	}
}

// TestLateProbeGivesItsPlaceBack: a probe whose token or budget wait lasts
// longer than ProbeWait has its wait ended, without a call, so that it
// cannot hold the breaker half-open while other lookups could probe; its
// neutral outcome gives the place to the next caller.
func TestLateProbeGivesItsPlaceBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, breaker.Options{Failures: 1, FirstTimeout: time.Millisecond, Timeout: time.Hour, ProbeWait: 20 * time.Millisecond})
	e.call(t, defender.OutcomeFailure)
	waitCtx, probe := func() (context.Context, func(defender.Outcome)) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			ctx, done, err := e.Allow(context.Background())
			if err == nil {
				return ctx, done
			}
			if time.Now().After(deadline) {
				t.Fatalf("no probe let through: %v", err)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	e.wantState(t, breaker.StateHalfOpen)
	select {
	case <-waitCtx.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("the probe's wait did not end")
	}
	if cause := context.Cause(waitCtx); !errors.Is(cause, breaker.ErrOpen) {
		t.Errorf("the late probe's wait ended with %v, want ErrOpen", cause)
	}
	probe(defender.OutcomeNeutral) // what the client reports: no call made
	e.wantState(t, breaker.StateHalfOpen)
	_, next, err := e.Allow(context.Background())
	if err != nil {
		t.Fatalf("the next caller could not probe: %v", err)
	}
	next(defender.OutcomeSuccess)
	e.wantState(t, breaker.StateClosed)
	// A closed breaker's waits are not bounded.
	ctx, done, err := e.Allow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer done(defender.OutcomeNeutral)
	if dl, ok := ctx.Deadline(); ok || ctx.Err() != nil {
		t.Errorf("a closed breaker's wait has a deadline %v or ended: %v", dl, ctx.Err())
	}
}
