package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/defender-enricher/defender-enricher/breaker"
	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/simulator"
)

const alertA = "da637472900382838869_1364969609"

// freeBudget grants every call at once and ignores pauses, so that 429s
// hold nothing up here.
type freeBudget struct{}

func (freeBudget) Acquire(ctx context.Context) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return func() {}, nil
}

func (freeBudget) PauseUntil(time.Time) {}

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

type env struct {
	sim     *simulator.Server
	breaker *breaker.Breaker
	changes *transitions

	mu       sync.Mutex
	onAnswer func()        // run once, just before the next Defender answer goes out
	hold     chan struct{} // the next user lookup waits until it is closed
}

func newEnv(t *testing.T, o breaker.Options, mod func(*defender.Options)) *env {
	t.Helper()
	e := &env{changes: &transitions{}}
	s, err := simulator.New(simulator.Options{Logf: e.logf, Users: e.users})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	e.sim = s
	ep, err := defender.ResolveEndpoint(s.URL(), s.Scope(), s.AuthorityHost())
	if err != nil {
		t.Fatal(err)
	}
	cred, err := s.Credential()
	if err != nil {
		t.Fatal(err)
	}
	co := defender.Options{
		Endpoint: ep, Credential: cred, Budget: freeBudget{}, HTTPClient: s.Client(),
		MaxAttempts: 2, BaseBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond,
	}
	if mod != nil {
		mod(&co)
	}
	client, err := defender.New(co)
	if err != nil {
		t.Fatal(err)
	}
	o.OnStateChange = e.changes.record
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	e.breaker, err = breaker.New(client, o)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// logf runs onAnswer on the simulator's line for a Defender answer, which it
// writes once any latency has passed and before the answer goes out.
func (e *env) logf(format string, _ ...any) {
	if !strings.HasPrefix(format, "simulator: defender ") {
		return
	}
	e.mu.Lock()
	f := e.onAnswer
	e.onAnswer = nil
	e.mu.Unlock()
	if f != nil {
		f()
	}
}

// beforeAnswer has f run just before the next Defender answer goes out.
func (e *env) beforeAnswer(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onAnswer = f
}

func (e *env) users(alertID string) (map[string]any, bool) {
	e.mu.Lock()
	hold := e.hold
	e.hold = nil
	e.mu.Unlock()
	if hold != nil {
		<-hold
	}
	return simulator.SyntheticUser(alertID), true
}

// holdNextUser has the next call that reaches the user lookup wait until
// the returned function is called (at the latest when the test ends).
func (e *env) holdNextUser(t *testing.T) (release func()) {
	hold := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release) // before the simulator's Close, which waits for it
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hold = hold
	return release
}

// expiring is a context whose deadline passes when the test calls expire,
// not after some time: a caller's deadline the test can place exactly.
type expiring struct {
	context.Context
	done chan struct{}
	once sync.Once
}

func newExpiring() *expiring {
	return &expiring{Context: context.Background(), done: make(chan struct{})}
}

func (c *expiring) Done() <-chan struct{} { return c.done }

func (c *expiring) Err() error {
	select {
	case <-c.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func (c *expiring) expire() { c.once.Do(func() { close(c.done) }) }

func (e *env) lookup(ctx context.Context) error {
	_, err := e.breaker.User(ctx, alertA)
	return err
}

func (e *env) wantState(t *testing.T, want breaker.State) {
	t.Helper()
	if got := e.breaker.State(); got != want {
		t.Fatalf("breaker %v, want %v", got, want)
	}
}

// wantFastFail checks that lookups fail at once with ErrUnavailable and
// make no call.
func (e *env) wantFastFail(t *testing.T, n int) {
	t.Helper()
	before := e.sim.CallCount()
	for range n {
		start := time.Now()
		err := e.lookup(context.Background())
		if !errors.Is(err, defender.ErrUnavailable) {
			t.Fatalf("got %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("failing took %v", d)
		}
	}
	if got := e.sim.CallCount() - before; got != 0 {
		t.Errorf("%d calls while the breaker was open", got)
	}
}

// TestTrips: N consecutive failed lookups open the breaker, which then
// fails lookups fast without calling.
func TestTrips(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		setup func(s *simulator.Server)
		mod   func(*defender.Options)
	}{
		{"503", func(s *simulator.Server) { s.SetOutage(http.StatusServiceUnavailable) }, nil},
		{"500", func(s *simulator.Server) { s.SetOutage(http.StatusInternalServerError) }, nil},
		{"502", func(s *simulator.Server) { s.SetOutage(http.StatusBadGateway) }, nil},
		{"504", func(s *simulator.Server) { s.SetOutage(http.StatusGatewayTimeout) }, nil},
		{"connection reset", func(s *simulator.Server) { s.SetConnectionReset(true) }, nil},
		// AttemptTimeout also bounds the first lookup's token and call, which
		// a loaded machine must get done in time; Close cuts the hour short.
		{"timeout", func(s *simulator.Server) { s.SetLatency(time.Hour) }, func(o *defender.Options) {
			o.AttemptTimeout, o.MaxAttempts = 3*time.Second, 1
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, breaker.Options{Failures: 3, Timeout: time.Hour}, tt.mod)
			if err := e.lookup(context.Background()); err != nil { // a token, before the trouble
				t.Fatal(err)
			}
			tt.setup(e.sim)
			for i := range 3 {
				err := e.lookup(context.Background())
				if err == nil || errors.Is(err, defender.ErrUnavailable) || defender.Classify(err) != defender.Transient {
					t.Fatalf("lookup %d: %v, want the API's failure", i, err)
				}
				want := breaker.StateClosed
				if i == 2 {
					want = breaker.StateOpen
				}
				e.wantState(t, want)
			}
			e.changes.want(t, "closed->open")
			e.wantFastFail(t, 5)
			err := e.lookup(context.Background())
			if want := "circuit breaker open"; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%v does not say %q", err, want)
			}
		})
	}
}

// TestNeitherFailureNorSuccess: 404s, 429s and cancelled lookups neither
// trip the breaker nor reset its count of consecutive failures.
func TestNeitherFailureNorSuccess(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		lookup func(t *testing.T, e *env) error
	}{
		{"404", func(t *testing.T, e *env) error {
			e.sim.SetNotFound(alertA)
			defer e.sim.SetUser(alertA, nil)
			return e.lookup(context.Background())
		}},
		{"429", func(t *testing.T, e *env) error {
			e.sim.ThrottleNext(2, "1") // both attempts
			return e.lookup(context.Background())
		}},
		{"cancelled before the call", func(t *testing.T, e *env) error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return e.lookup(ctx)
		}},
		{"budget wait ended", func(t *testing.T, e *env) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
			defer cancel()
			<-ctx.Done()
			return e.lookup(ctx)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, breaker.Options{Failures: 2, Timeout: time.Hour}, nil)
			e.sim.SetOutage(503)
			if err := e.lookup(context.Background()); defender.Classify(err) != defender.Transient {
				t.Fatalf("got %v, want a failure", err)
			}
			e.sim.SetOutage(0)
			for i := range 5 {
				err := tt.lookup(t, e)
				if err == nil || defender.Classify(err) == defender.Permanent {
					t.Fatalf("lookup %d: %v, want an error that is not the API's failure", i, err)
				}
				e.wantState(t, breaker.StateClosed)
			}
			// One more failure makes two in a row: the lookups between
			// did not count as successes.
			e.sim.SetOutage(503)
			if err := e.lookup(context.Background()); defender.Classify(err) != defender.Transient {
				t.Fatalf("got %v, want a failure", err)
			}
			e.wantState(t, breaker.StateOpen)
			e.changes.want(t, "closed->open")
		})
	}
}

// TestAbandonedAfterFailure: a lookup whose caller stopped waiting after
// the API had failed counts as a failure, or a dead API would never open
// the breaker while callers wait less than the retries take.
func TestAbandonedAfterFailure(t *testing.T) {
	t.Parallel()
	t.Run("during a retried call", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, breaker.Options{Failures: 2, Timeout: time.Hour}, nil)
		if err := e.lookup(context.Background()); err != nil { // a token
			t.Fatal(err)
		}
		e.sim.SetOutage(503)
		for i, want := range []breaker.State{breaker.StateClosed, breaker.StateOpen} {
			// The caller leaves while the first call is out, before its 503
			// comes back: the retry is what it no longer waits for.
			ctx, cancel := context.WithCancel(context.Background())
			e.beforeAnswer(cancel)
			err := e.lookup(ctx)
			cancel()
			var api *defender.APIError
			if !errors.Is(err, defender.ErrUnavailable) || !errors.Is(err, context.Canceled) || !errors.As(err, &api) || api.StatusCode != 503 {
				t.Fatalf("lookup %d: %v, want ErrUnavailable after a 503", i, err)
			}
			e.wantState(t, want)
		}
		e.changes.want(t, "closed->open")
	})
	t.Run("waiting for the budget", func(t *testing.T) {
		t.Parallel()
		w, err := budget.New(budget.Limits{{Calls: 1, Per: time.Hour}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Close)
		e := newEnv(t, breaker.Options{Failures: 1, Timeout: time.Hour}, func(o *defender.Options) { o.Budget = w })
		e.sim.SetOutage(503)
		// The caller's deadline passes once the retry waits for the budget.
		ctx := newExpiring()
		go func() {
			for w.Waiting() == 0 && ctx.Err() == nil {
				time.Sleep(time.Millisecond)
			}
			ctx.expire()
		}()
		t.Cleanup(ctx.expire)
		err = e.lookup(ctx)
		var api *defender.APIError
		if !errors.Is(err, defender.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &api) || api.StatusCode != 503 {
			t.Fatalf("got %v, want ErrUnavailable after a 503", err)
		}
		e.wantState(t, breaker.StateOpen)
	})
	t.Run("before any call", func(t *testing.T) {
		t.Parallel()
		w, err := budget.New(budget.Limits{{Calls: 1, Per: time.Hour}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Close)
		e := newEnv(t, breaker.Options{Failures: 1, Timeout: time.Hour}, func(o *defender.Options) { o.Budget = w })
		if err := e.lookup(context.Background()); err != nil { // spends the budget
			t.Fatal(err)
		}
		e.sim.SetOutage(503)
		for range 3 {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			err := e.lookup(ctx)
			cancel()
			if !errors.Is(err, defender.ErrUnavailable) {
				t.Fatalf("got %v, want ErrUnavailable", err)
			}
		}
		e.wantState(t, breaker.StateClosed)
		if n := e.sim.CallCount(); n != 1 {
			t.Errorf("%d calls, want 1", n)
		}
	})
}

// TestSuccessResetsTheCount: failures must be consecutive.
func TestSuccessResetsTheCount(t *testing.T) {
	t.Parallel()
	e := newEnv(t, breaker.Options{Failures: 2, Timeout: time.Hour}, nil)
	for i, outage := range []int{503, 0, 503, 0, 503} {
		e.sim.SetOutage(outage)
		err := e.lookup(context.Background())
		if (outage == 0) != (err == nil) {
			t.Fatalf("lookup %d: %v", i, err)
		}
	}
	e.wantState(t, breaker.StateClosed)
	e.changes.want(t)
}

// TestHalfOpen: after Timeout an open breaker lets one probe through; the
// probe's success closes it, its failure opens it again, and a lookup that
// says nothing of health (a 404) leaves it half-open for the next probe.
func TestHalfOpen(t *testing.T) {
	t.Parallel()
	// Long enough for the checks made while open (a few lookups that fail
	// at once) on a loaded machine: gobreaker reads the real clock.
	const timeout = 2 * time.Second
	open := func(t *testing.T) *env {
		t.Helper()
		e := newEnv(t, breaker.Options{Failures: 1, Timeout: timeout}, nil)
		e.sim.SetOutage(503)
		if err := e.lookup(context.Background()); defender.Classify(err) != defender.Transient {
			t.Fatalf("got %v, want a failure", err)
		}
		e.wantState(t, breaker.StateOpen)
		e.wantFastFail(t, 3)
		waitFor(t, "half-open", func() bool { return e.breaker.State() == breaker.StateHalfOpen })
		return e
	}

	t.Run("one probe, whose success closes it", func(t *testing.T) {
		t.Parallel()
		e := open(t)
		e.sim.SetOutage(0)
		release := e.holdNextUser(t) // the probe stays in flight until released
		before := e.sim.CallCount()
		probe := make(chan error, 1)
		go func() { probe <- e.lookup(context.Background()) }()
		waitFor(t, "the probe's call", func() bool { return e.sim.CallCount() == before+1 })
		e.wantFastFail(t, 3) // the probe is the only call let through
		release()
		if err := <-probe; err != nil {
			t.Fatalf("probe: %v", err)
		}
		e.wantState(t, breaker.StateClosed)
		if err := e.lookup(context.Background()); err != nil {
			t.Errorf("closed again, but %v", err)
		}
		e.changes.want(t, "closed->open", "open->half-open", "half-open->closed")
	})

	t.Run("a failed probe opens it again", func(t *testing.T) {
		t.Parallel()
		e := open(t)
		if err := e.lookup(context.Background()); defender.Classify(err) != defender.Transient {
			t.Fatalf("probe: %v, want a failure", err)
		}
		e.wantState(t, breaker.StateOpen)
		e.wantFastFail(t, 3)
		e.changes.want(t, "closed->open", "open->half-open", "half-open->open")
	})

	t.Run("a 404 probe leaves it half-open", func(t *testing.T) {
		t.Parallel()
		e := open(t)
		e.sim.SetOutage(0)
		e.sim.SetNotFound(alertA)
		if err := e.lookup(context.Background()); !errors.Is(err, defender.ErrNotFound) {
			t.Fatalf("probe: %v, want ErrNotFound", err)
		}
		e.wantState(t, breaker.StateHalfOpen)
		e.sim.SetUser(alertA, nil)
		if err := e.lookup(context.Background()); err != nil {
			t.Fatalf("second probe: %v", err)
		}
		e.wantState(t, breaker.StateClosed)
		e.changes.want(t, "closed->open", "open->half-open", "half-open->closed")
	})
}

// TestMetrics: the state gauge and the transition counter follow the
// breaker.
func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := newEnv(t, breaker.Options{Failures: 1, Timeout: time.Hour, Registerer: reg}, nil)
	e.sim.SetOutage(503)
	_ = e.lookup(context.Background())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += fmt.Sprintf("{%s=%s}", l.GetName(), l.GetValue())
			}
			if m.Gauge != nil {
				got[name] = m.GetGauge().GetValue()
			} else {
				got[name] = m.GetCounter().GetValue()
			}
		}
	}
	if got["enricher_breaker_state"] != float64(breaker.StateOpen) || got["enricher_breaker_transitions_total{to=open}"] != 1 {
		t.Errorf("metrics %v", got)
	}
	if _, err := breaker.New(nil, breaker.Options{Registerer: reg}); err == nil {
		t.Error("registering the metrics twice succeeded")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
