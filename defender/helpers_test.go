package defender_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/defender-enricher/defender-enricher/breaker"
	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/cache"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// Real alert ids have these shapes.
const (
	alertA = "da637472900382838869_1364969609"
	alertB = "da637308392288907382_-880718168"
	alertC = "636688558380765161_2136280442"
)

func newSimulator(t testing.TB) *simulator.Server {
	t.Helper()
	s, err := simulator.New(simulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func simEndpoint(t testing.TB, s *simulator.Server) defender.Endpoint {
	t.Helper()
	ep, err := defender.ResolveEndpoint(s.URL(), s.Scope(), s.AuthorityHost())
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

func simCredential(t testing.TB, s *simulator.Server) azcore.TokenCredential {
	t.Helper()
	cred, err := s.Credential()
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

func newWindow(t testing.TB, limits string) *budget.Window {
	t.Helper()
	ls, err := budget.ParseLimits(limits)
	if err != nil {
		t.Fatal(err)
	}
	w, err := budget.New(ls, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

// testOptions are client options against s with fast retries: a budget that
// never throttles, the real credential and the simulator's HTTP client.
func testOptions(t testing.TB, s *simulator.Server) defender.Options {
	t.Helper()
	return defender.Options{
		Endpoint:    simEndpoint(t, s),
		Credential:  simCredential(t, s),
		Budget:      newWindow(t, "100000/1s"),
		HTTPClient:  s.Client(),
		BaseBackoff: time.Millisecond,
		MaxBackoff:  5 * time.Millisecond,
	}
}

func newClient(t testing.TB, o defender.Options) *defender.Client {
	t.Helper()
	c, err := defender.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// stack is the whole lookup stack the pipeline uses: cache, breaker, client
// and budget, against a simulator.
type stack struct {
	sim     *simulator.Server
	cred    azcore.TokenCredential
	budget  *budget.Window
	client  *defender.Client
	breaker *breaker.Breaker
	cache   *cache.Cache
}

func newStack(t testing.TB, s *simulator.Server, limits string, mod func(*defender.Options)) *stack {
	t.Helper()
	b, err := breaker.New(breaker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := testOptions(t, s)
	o.Budget = newWindow(t, limits)
	o.Breaker = b
	if mod != nil {
		mod(&o)
	}
	c := newClient(t, o)
	cc, err := cache.New(c, cache.Options{Store: cache.NewLRU(100_000, time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return &stack{sim: s, cred: o.Credential, budget: o.Budget.(*budget.Window), client: c, breaker: b, cache: cc}
}

// warm has the stack's credential take its token, so that a run starts
// with the calls.
func (st *stack) warm(t testing.TB) {
	t.Helper()
	_, err := st.cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{st.sim.Scope()}})
	if err != nil {
		t.Fatal(err)
	}
}

// staticToken is a credential that hands out one token without any I/O and
// counts how often it was asked.
type staticToken struct {
	token   string
	expires time.Time // zero: an hour from now
	calls   atomic.Int32
}

func (c *staticToken) GetToken(ctx context.Context, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.calls.Add(1)
	if err := ctx.Err(); err != nil {
		return azcore.AccessToken{}, err
	}
	exp := c.expires
	if exp.IsZero() {
		exp = time.Now().Add(time.Hour)
	}
	return azcore.AccessToken{Token: c.token, ExpiresOn: exp}, nil
}

// freeBudget grants every call at once and records pauses.
type freeBudget struct {
	mu     sync.Mutex
	calls  int
	pauses []time.Time
}

func (b *freeBudget) Acquire(ctx context.Context) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.calls++
	b.mu.Unlock()
	return func() {}, nil
}

func (b *freeBudget) PauseUntil(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pauses = append(b.pauses, t)
}

// tlsServer is an httptest TLS server on 127.0.0.1 serving h, with a client
// options set that reaches it with a static token.
func tlsServer(t testing.TB, h http.HandlerFunc) (*httptest.Server, defender.Options) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = false
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ep, err := defender.ResolveEndpoint(srv.URL, srv.URL+"/.default", "")
	if err != nil {
		t.Fatal(err)
	}
	return srv, defender.Options{
		Endpoint:    ep,
		Credential:  &staticToken{token: "test-token"},
		Budget:      &freeBudget{},
		HTTPClient:  defender.NewHTTPClient(&tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}),
		BaseBackoff: time.Millisecond,
		MaxBackoff:  5 * time.Millisecond,
	}
}

// statuses returns the status of every logged simulator call.
func statuses(calls []simulator.Call) []int {
	out := make([]int, len(calls))
	for i, c := range calls {
		out[i] = c.Status
	}
	return out
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func asAPIError(t testing.TB, err error) *defender.APIError {
	t.Helper()
	var api *defender.APIError
	if !errors.As(err, &api) {
		t.Fatalf("error %v (%T) is not an *APIError", err, err)
	}
	return api
}

func asTransportError(t testing.TB, err error) *defender.TransportError {
	t.Helper()
	var te *defender.TransportError
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) is not a *TransportError", err, err)
	}
	return te
}

// expiring is a context whose deadline passes when the test calls expire,
// not after some time: a caller's deadline the test can place exactly.
type expiring struct {
	context.Context
	done chan struct{}
	once sync.Once
}

// newExpiring returns an expiring context that expires when the test ends
// at the latest.
func newExpiring(t testing.TB) *expiring {
	c := &expiring{Context: context.Background(), done: make(chan struct{})}
	t.Cleanup(c.expire)
	return c
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
