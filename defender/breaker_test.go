package defender_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/defender-enricher/defender-enricher/breaker"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// The client and the circuit breaker together, against the simulator: the
// breaker is asked before every attempt and told every call's outcome.

// recordingBreaker lets every call through and records the outcomes.
type recordingBreaker struct {
	mu  sync.Mutex
	got []defender.Outcome
}

func (b *recordingBreaker) Allow(ctx context.Context) (context.Context, func(defender.Outcome), error) {
	return ctx, func(o defender.Outcome) {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.got = append(b.got, o)
	}, nil
}

func (b *recordingBreaker) outcomes() []defender.Outcome {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.got)
}

// countingCredential counts the tokens asked of the credential.
type countingCredential struct {
	azcore.TokenCredential
	calls atomic.Int32
}

func (c *countingCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.calls.Add(1)
	return c.TokenCredential.GetToken(ctx, o)
}

// breakerClient is a client of s behind a breaker of o, asking tokens of a
// countingCredential.
func breakerClient(t *testing.T, s *simulator.Server, o breaker.Options, mod func(*defender.Options)) (*defender.Client, *breaker.Breaker, *countingCredential) {
	t.Helper()
	b, err := breaker.New(o)
	if err != nil {
		t.Fatal(err)
	}
	cred := &countingCredential{TokenCredential: simCredential(t, s)}
	co := testOptions(t, s)
	co.Credential, co.Breaker = cred, b
	if mod != nil {
		mod(&co)
	}
	return newClient(t, co), b, cred
}

func wantBreaker(t *testing.T, b *breaker.Breaker, want breaker.State) {
	t.Helper()
	if got := b.State(); got != want {
		t.Fatalf("breaker %v, want %v", got, want)
	}
}

// wantRefused checks that err is a lookup ended by the open breaker.
func wantRefused(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, defender.ErrUnavailable) || !errors.Is(err, breaker.ErrOpen) || defender.Classify(err) != defender.Transient {
		t.Fatalf("got %v, want ErrUnavailable from the open breaker", err)
	}
}

// TestClientBreakerStopsRetries: the lookup whose failed calls open the
// breaker makes no more, though it had attempts left, and says what its
// last call got; a lookup that meets the open breaker makes no call and
// asks for no token.
func TestClientBreakerStopsRetries(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		outage func(s *simulator.Server)
		mod    func(*defender.Options)
		calls  int // calls the simulator sees for the two failed ones
		answer string
	}{
		{"503", func(s *simulator.Server) { s.SetOutage(http.StatusServiceUnavailable) }, nil,
			2, "answered 503 Service Unavailable after 2 attempts"},
		{"500", func(s *simulator.Server) { s.SetOutage(http.StatusInternalServerError) }, nil,
			2, "answered 500 Internal Server Error after 2 attempts"},
		// net/http tries a reused connection that was reset once more
		// itself: up to two simulator calls per client call.
		{"connection reset", func(s *simulator.Server) { s.SetConnectionReset(true) }, nil,
			-1, "failed after 2 attempts"},
		// AttemptTimeout is what makes the calls time out; it also bounds
		// the warm-up's token and call, which a loaded machine must get
		// done in time. Close cuts the hour short.
		{"timeout", func(s *simulator.Server) { s.SetLatency(time.Hour) }, func(o *defender.Options) { o.AttemptTimeout = 2 * time.Second },
			2, "failed after 2 attempts"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSimulator(t)
			c, b, cred := breakerClient(t, s, breaker.Options{Failures: 2, FirstTimeout: time.Hour, Timeout: time.Hour}, func(o *defender.Options) {
				o.MaxAttempts = 4
				if tt.mod != nil {
					tt.mod(o)
				}
			})
			if _, err := c.User(context.Background(), alertC); err != nil { // a token and a connection
				t.Fatal(err)
			}
			s.ResetLog()
			tt.outage(s)
			_, err := c.User(context.Background(), alertA)
			wantRefused(t, err)
			if want := "gave up retrying after defender: GET /api/alerts/{id}/user " + tt.answer; !strings.Contains(err.Error(), want) {
				t.Errorf("%q does not say %q", err, want)
			}
			n := s.CallCount()
			if tt.calls > 0 && n != tt.calls || n < 2 || n > 4 {
				t.Errorf("%d calls, want %d: the retries after the breaker opened were made", n, max(tt.calls, 2))
			}
			wantBreaker(t, b, breaker.StateOpen)

			tokens, tokenRequests := cred.calls.Load(), s.TokenRequests()
			for _, id := range []string{alertA, alertB} {
				_, err := c.User(context.Background(), id)
				wantRefused(t, err)
				if strings.Contains(err.Error(), "gave up retrying") {
					t.Errorf("%v: no call was made", err)
				}
			}
			if got := s.CallCount(); got != n {
				t.Errorf("%d calls with the breaker open", got-n)
			}
			if got := cred.calls.Load(); got != tokens {
				t.Errorf("%d tokens asked of the credential with the breaker open", got-tokens)
			}
			if got := s.TokenRequests(); got != tokenRequests {
				t.Errorf("%d token requests with the breaker open", got-tokenRequests)
			}
		})
	}
}

// TestClientBreaker429IsNeutral: 429 answers neither count as failures nor
// break a run of them.
func TestClientBreaker429IsNeutral(t *testing.T) {
	t.Parallel()
	s := newSimulator(t)
	c, b, _ := breakerClient(t, s, breaker.Options{Failures: 2, FirstTimeout: time.Hour, Timeout: time.Hour}, func(o *defender.Options) {
		o.MaxAttempts = 1
		o.Budget = &freeBudget{} // the 429s pause nothing
	})
	s.SetOutage(http.StatusServiceUnavailable)
	if _, err := c.User(context.Background(), alertA); defender.CallOutcome(err) != defender.OutcomeFailure {
		t.Fatalf("got %v, want a 503", err)
	}
	s.SetOutage(0)
	for range 5 {
		s.ThrottleNext(1, "1")
		if _, err := c.User(context.Background(), alertA); asAPIError(t, err).StatusCode != 429 {
			t.Fatalf("got %v, want a 429", err)
		}
		wantBreaker(t, b, breaker.StateClosed)
	}
	s.SetOutage(http.StatusServiceUnavailable)
	if _, err := c.User(context.Background(), alertA); defender.CallOutcome(err) != defender.OutcomeFailure {
		t.Fatalf("got %v, want a 503", err)
	}
	wantBreaker(t, b, breaker.StateOpen)
	if n := s.CallCount(); n != 7 {
		t.Errorf("%d calls, want 7", n)
	}
}

// TestClientBreakerHalfOpen: a half-open breaker's probe that makes no
// call (its caller has gone) or gets a 429 gives its place to the next
// lookup; a 404 answer closes the breaker.
func TestClientBreakerHalfOpen(t *testing.T) {
	t.Parallel()
	s := newSimulator(t)
	c, b, _ := breakerClient(t, s, breaker.Options{Failures: 1, FirstTimeout: time.Millisecond, Timeout: time.Hour}, func(o *defender.Options) {
		o.MaxAttempts = 1
		o.Budget = &freeBudget{}
	})
	s.SetOutage(http.StatusServiceUnavailable)
	if _, err := c.User(context.Background(), alertA); defender.CallOutcome(err) != defender.OutcomeFailure {
		t.Fatalf("got %v, want a 503", err)
	}
	s.SetOutage(0)
	s.SetNotFound(alertA)
	waitFor(t, "the breaker to be half-open", func() bool { return b.State() == breaker.StateHalfOpen })

	// Half-open stays half-open from here on: only a probe's answer or
	// failure changes it.
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := c.User(ctx, alertA); !errors.Is(err, defender.ErrUnavailable) || !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want ErrUnavailable of a cancelled caller", err)
		}
		wantBreaker(t, b, breaker.StateHalfOpen)
	}
	for range 3 {
		s.ThrottleNext(1, "1")
		if _, err := c.User(context.Background(), alertA); asAPIError(t, err).StatusCode != 429 {
			t.Fatalf("got %v, want a 429", err)
		}
		wantBreaker(t, b, breaker.StateHalfOpen)
	}
	if _, err := c.User(context.Background(), alertA); !errors.Is(err, defender.ErrNotFound) {
		t.Fatalf("got %v, want the 404", err)
	}
	wantBreaker(t, b, breaker.StateClosed)
	if _, err := c.User(context.Background(), alertB); err != nil {
		t.Fatalf("closed, but %v", err)
	}
	if got, want := statuses(s.Calls()), []int{503, 429, 429, 429, 404, 200}; !slices.Equal(got, want) {
		t.Errorf("calls answered %v, want %v", got, want)
	}
}

// gateBudget holds every call until the test opens it, or the caller's
// context ends.
type gateBudget struct {
	waiting atomic.Int32
	open    chan struct{}
}

func (b *gateBudget) Acquire(ctx context.Context) (func(), error) {
	b.waiting.Add(1)
	defer b.waiting.Add(-1)
	select {
	case <-b.open:
		return func() {}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (b *gateBudget) PauseUntil(time.Time) {}

// TestClientBreakerOpensWhileWaiting: a lookup let through while the
// breaker was closed, waiting for the budget when the breaker opens, stops
// waiting then, and makes no call once the budget would let it.
func TestClientBreakerOpensWhileWaiting(t *testing.T) {
	t.Parallel()
	s := newSimulator(t)
	gate := &gateBudget{open: make(chan struct{})}
	c, b, _ := breakerClient(t, s, breaker.Options{Failures: 1, FirstTimeout: time.Hour, Timeout: time.Hour}, func(o *defender.Options) {
		o.Budget = gate
	})
	errc := make(chan error, 1)
	go func() {
		_, err := c.User(context.Background(), alertA)
		errc <- err
	}()
	waitFor(t, "the lookup to wait for the budget", func() bool { return gate.waiting.Load() == 1 })
	// Another lookup's call fails: the breaker opens.
	_, done, err := b.Allow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	done(defender.OutcomeFailure)
	err = <-errc
	wantRefused(t, err)
	if want := "waiting for the call budget: circuit breaker open"; !strings.Contains(err.Error(), want) {
		t.Errorf("%q does not say %q", err, want)
	}
	close(gate.open)
	if n := s.CallCount(); n != 0 {
		t.Errorf("%d calls", n)
	}
}
