package defender_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/defender-enricher/defender-enricher/clock"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// documentedUser is the response example of the API's documentation, plus
// fields a later version of the API might add.
func documentedUser() map[string]any {
	return map[string]any{
		"id":                      `contoso\user1`,
		"accountName":             "user1",
		"accountDomain":           "contoso",
		"accountSid":              "S-1-5-21-72051607-1745760036-109187956-93922",
		"firstSeen":               "2019-12-08T06:33:39Z",
		"lastSeen":                "2020-01-05T06:58:34Z",
		"mostPrevalentMachineId":  "0111b647235c26159bec3e5eb6c8c3a0cc3ab766",
		"leastPrevalentMachineId": "0111b647235c26159bec3e5eb6c8c3a0cc3ab766",
		"logonTypes":              "Network",
		"logOnMachinesCount":      1,
		"isDomainAdmin":           false,
		"isOnlyNetworkUser":       false,
		"riskLevel":               "High",
		"futureObject":            map[string]any{"tags": []any{"a", "b"}, "score": 0.5},
		"displayNote":             "<b>R&D</b>",
	}
}

func ptr[T any](v T) *T { return &v }

// TestClientAnswers covers every answer of GET /api/alerts/{id}/user
// against the simulator: what User returns and which calls were made.
func TestClientAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// setup runs before the simulator's log is cleared; warm has the
		// client take a token and make one call first.
		setup  func(t *testing.T, s *simulator.Server, c *defender.Client)
		cred   func(s *simulator.Server) azcore.TokenCredential // nil: the real credential
		mod    func(o *defender.Options)
		calls  []int // statuses the simulator logged, in order; nil: not checked
		tokens int   // token requests after setup; -1: not checked
		check  func(t *testing.T, r result)
	}{
		{
			name: "200 with every documented field and an unknown one",
			setup: func(t *testing.T, s *simulator.Server, _ *defender.Client) {
				s.SetUser(alertA, documentedUser())
			},
			calls:  []int{200},
			tokens: 1,
			check: func(t *testing.T, r result) {
				if r.err != nil {
					t.Fatal(r.err)
				}
				u := r.user
				want := defender.User{
					ID: `contoso\user1`, AccountName: "user1", AccountDomain: "contoso",
					AccountSID:             "S-1-5-21-72051607-1745760036-109187956-93922",
					FirstSeen:              ptr(time.Date(2019, 12, 8, 6, 33, 39, 0, time.UTC)),
					LastSeen:               ptr(time.Date(2020, 1, 5, 6, 58, 34, 0, time.UTC)),
					MostPrevalentMachineID: "0111b647235c26159bec3e5eb6c8c3a0cc3ab766", LeastPrevalentMachineID: "0111b647235c26159bec3e5eb6c8c3a0cc3ab766",
					LogonTypes: "Network", LogOnMachinesCount: ptr(int64(1)),
					IsDomainAdmin: ptr(false), IsOnlyNetworkUser: ptr(false),
				}
				checkUser(t, u, want)
				var all map[string]json.RawMessage
				if err := json.Unmarshal(u.JSON, &all); err != nil {
					t.Fatalf("User.JSON %s: %v", u.JSON, err)
				}
				if _, ok := all["@odata.context"]; ok {
					t.Errorf("User.JSON kept @odata.context: %s", u.JSON)
				}
				if len(all) != 15 {
					t.Errorf("User.JSON has %d fields, want the 12 documented and 3 unknown: %s", len(all), u.JSON)
				}
				for k, v := range map[string]any{
					"riskLevel":    "High",
					"futureObject": map[string]any{"score": 0.5, "tags": []any{"a", "b"}},
					"displayNote":  "<b>R&D</b>",
					"id":           `contoso\user1`,
				} {
					var got any
					if err := json.Unmarshal(all[k], &got); err != nil || fmt.Sprint(got) != fmt.Sprint(v) {
						t.Errorf("User.JSON[%q] = %s, want %v", k, all[k], v)
					}
				}
			},
		},
		{
			name: "200 with nulls",
			setup: func(t *testing.T, s *simulator.Server, _ *defender.Client) {
				u := documentedUser()
				for k := range u {
					u[k] = nil
				}
				s.SetUser(alertA, u)
			},
			calls:  []int{200},
			tokens: -1,
			check: func(t *testing.T, r result) {
				if r.err != nil {
					t.Fatal(r.err)
				}
				checkUser(t, r.user, defender.User{})
				if !strings.Contains(string(r.user.JSON), `"accountSid":null`) {
					t.Errorf("User.JSON dropped a null: %s", r.user.JSON)
				}
			},
		},
		{
			name: "200 with fields missing and odd timestamps",
			setup: func(t *testing.T, s *simulator.Server, _ *defender.Client) {
				s.SetUser(alertA, map[string]any{
					"accountName": "user1",
					"firstSeen":   "2020-01-05T06:58:34.1234567",
					"lastSeen":    "last tuesday",
				})
			},
			calls:  []int{200},
			tokens: -1,
			check: func(t *testing.T, r result) {
				if r.err != nil {
					t.Fatal(r.err)
				}
				checkUser(t, r.user, defender.User{
					AccountName: "user1",
					FirstSeen:   ptr(time.Date(2020, 1, 5, 6, 58, 34, 123456700, time.UTC)),
				})
				if !strings.Contains(string(r.user.JSON), `"lastSeen":"last tuesday"`) {
					t.Errorf("User.JSON lost an unparsable timestamp: %s", r.user.JSON)
				}
			},
		},
		{
			name: "200 with a documented field of the wrong type is not retried",
			setup: func(t *testing.T, s *simulator.Server, _ *defender.Client) {
				s.SetUser(alertA, map[string]any{"logOnMachinesCount": "many"})
			},
			calls:  []int{200},
			tokens: -1,
			check: func(t *testing.T, r result) {
				te := asTransportError(t, r.err)
				if te.Attempts != 1 {
					t.Errorf("Attempts = %d, want 1", te.Attempts)
				}
			},
		},
		{
			name:   "404 is ErrNotFound",
			setup:  func(t *testing.T, s *simulator.Server, _ *defender.Client) { s.SetNotFound(alertA) },
			calls:  []int{404},
			tokens: 1,
			check: func(t *testing.T, r result) {
				if !errors.Is(r.err, defender.ErrNotFound) || r.user != nil {
					t.Fatalf("got %v, %v; want ErrNotFound", r.user, r.err)
				}
				if c := defender.Classify(r.err); c != defender.NotFound {
					t.Errorf("a 404 is %v, want not_found", c)
				}
			},
		},
		{
			name: "401 with a revoked token takes exactly one fresh token",
			setup: func(t *testing.T, s *simulator.Server, c *defender.Client) {
				if _, err := c.User(context.Background(), alertB); err != nil {
					t.Fatal(err)
				}
				s.RevokeTokens()
			},
			calls:  []int{401, 200},
			tokens: 1,
			check: func(t *testing.T, r result) {
				if r.err != nil {
					t.Fatal(r.err)
				}
				// The fresh token went to the credential's cache: the next
				// lookup uses it without asking again.
				if !r.sim.Calls()[1].TokenValid {
					t.Error("the retry did not carry a valid token")
				}
			},
		},
		{
			name: "401 and a fresh token in an outage asks for one token only",
			setup: func(t *testing.T, s *simulator.Server, c *defender.Client) {
				if _, err := c.User(context.Background(), alertB); err != nil {
					t.Fatal(err)
				}
				s.RevokeTokens()
				s.SetOutage(http.StatusServiceUnavailable)
			},
			calls:  []int{401, 503, 503, 503},
			tokens: 1,
			check: func(t *testing.T, r result) {
				if api := asAPIError(t, r.err); api.StatusCode != 503 || api.Attempts != 4 {
					t.Errorf("got %d after %d attempts, want 503 after 4", api.StatusCode, api.Attempts)
				}
			},
		},
		{
			name:   "persistent 401 gives up after two calls",
			cred:   func(*simulator.Server) azcore.TokenCredential { return &staticToken{token: "forged"} },
			calls:  []int{401, 401},
			tokens: 0,
			check: func(t *testing.T, r result) {
				api := asAPIError(t, r.err)
				if api.StatusCode != 401 || api.Attempts != 2 {
					t.Errorf("got %d after %d attempts, want 401 after 2", api.StatusCode, api.Attempts)
				}
				if c := defender.Classify(r.err); c != defender.Permanent {
					t.Errorf("a 401 after a fresh token is %v, want permanent", c)
				}
			},
		},
		{
			name:   "403 names the permission and the correlation id",
			setup:  func(t *testing.T, s *simulator.Server, _ *defender.Client) { s.SetForbidden(true) },
			calls:  []int{403},
			tokens: 1,
			check: func(t *testing.T, r result) {
				api := asAPIError(t, r.err)
				if api.StatusCode != 403 || api.Attempts != 1 || api.Code != "Forbidden" {
					t.Errorf("got %+v, want a 403 Forbidden after 1 attempt", api)
				}
				if len(api.Target) != 36 {
					t.Errorf("Target %q is not a correlation id", api.Target)
				}
				msg := r.err.Error()
				for _, want := range []string{"User.Read.All", api.Target, "403"} {
					if !strings.Contains(msg, want) {
						t.Errorf("Error() = %q lacks %q", msg, want)
					}
				}
			},
		},
		{
			name:   "500 is retried with backoff, then an APIError",
			setup:  func(t *testing.T, s *simulator.Server, _ *defender.Client) { s.SetOutage(500) },
			calls:  []int{500, 500, 500, 500},
			tokens: 1,
			check:  wantAPIError(500, 4),
		},
		{
			name:   "502 is retried with backoff, then an APIError",
			setup:  func(t *testing.T, s *simulator.Server, _ *defender.Client) { s.SetOutage(502) },
			calls:  []int{502, 502, 502, 502},
			tokens: 1,
			check:  wantAPIError(502, 4),
		},
		{
			name:   "503 is retried with backoff, then an APIError",
			setup:  func(t *testing.T, s *simulator.Server, _ *defender.Client) { s.SetOutage(503) },
			mod:    func(o *defender.Options) { o.MaxAttempts = 3 },
			calls:  []int{503, 503, 503},
			tokens: 1,
			check:  wantAPIError(503, 3),
		},
		{
			name:   "501 is not retried",
			setup:  func(t *testing.T, s *simulator.Server, _ *defender.Client) { s.SetOutage(501) },
			calls:  []int{501},
			tokens: 1,
			check:  wantAPIError(501, 1),
		},
		{
			name:   "connection reset is retried, then a TransportError",
			setup:  func(t *testing.T, s *simulator.Server, _ *defender.Client) { s.SetConnectionReset(true) },
			tokens: 1,
			check: func(t *testing.T, r result) {
				te := asTransportError(t, r.err)
				if te.Attempts != 4 {
					t.Errorf("Attempts = %d, want 4", te.Attempts)
				}
				if c := defender.Classify(r.err); c != defender.Transient {
					t.Errorf("a reset connection is %v, want transient", c)
				}
				// net/http resends an idempotent request once on a reused
				// connection that fails, so 4 attempts are 4 to 8 calls.
				calls := r.sim.Calls()
				if n := len(calls); n < 4 || n > 8 {
					t.Errorf("%d calls, want 4 to 8", n)
				}
				for _, c := range calls {
					if c.Status != 0 {
						t.Errorf("a call was answered %d", c.Status)
					}
				}
			},
		},
		{
			name: "a call slower than AttemptTimeout is a TransportError",
			// AttemptTimeout also bounds the token request, which a loaded
			// machine must get done in time; Close cuts the hour short.
			setup:  func(t *testing.T, s *simulator.Server, _ *defender.Client) { s.SetLatency(time.Hour) },
			mod:    func(o *defender.Options) { o.AttemptTimeout = 3 * time.Second; o.MaxAttempts = 2 },
			calls:  []int{200, 200}, // decided at arrival, never delivered
			tokens: 1,
			check: func(t *testing.T, r result) {
				te := asTransportError(t, r.err)
				if te.Attempts != 2 {
					t.Errorf("Attempts = %d, want 2", te.Attempts)
				}
				if !errors.Is(r.err, context.DeadlineExceeded) || defender.Classify(r.err) != defender.Transient {
					t.Errorf("%v: want a deadline exceeded that is transient", r.err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSimulator(t)
			o := testOptions(t, s)
			if tt.cred != nil {
				o.Credential = tt.cred(s)
			}
			if tt.mod != nil {
				tt.mod(&o)
			}
			c := newClient(t, o)
			if tt.setup != nil {
				tt.setup(t, s, c)
			}
			s.ResetLog()
			u, err := c.User(context.Background(), alertA)
			if tt.calls != nil {
				if got := statuses(s.Calls()); !slices.Equal(got, tt.calls) {
					t.Errorf("simulator answered %v, want %v", got, tt.calls)
				}
			}
			if tt.tokens >= 0 {
				if got := s.TokenRequests(); got != tt.tokens {
					t.Errorf("%d token requests, want %d", got, tt.tokens)
				}
			}
			for _, call := range s.Calls() {
				if call.AlertID != alertA {
					t.Errorf("a call for %q, want only %q", call.AlertID, alertA)
				}
			}
			tt.check(t, result{user: u, err: err, sim: s})
		})
	}
}

// result is what one lookup of TestClientAnswers returned.
type result struct {
	user *defender.User
	err  error
	sim  *simulator.Server
}

func wantAPIError(status, attempts int) func(t *testing.T, r result) {
	return func(t *testing.T, r result) {
		t.Helper()
		api := asAPIError(t, r.err)
		if api.StatusCode != status || api.Attempts != attempts {
			t.Errorf("got %d after %d attempts, want %d after %d", api.StatusCode, api.Attempts, status, attempts)
		}
		if api.Target == "" {
			t.Error("the correlation id was lost")
		}
		if attempts > 1 && !strings.Contains(r.err.Error(), fmt.Sprintf("after %d attempts", attempts)) {
			t.Errorf("Error() = %q does not say how many attempts", r.err)
		}
		want := defender.Transient
		if status == 501 {
			want = defender.Permanent
		}
		if c := defender.Classify(r.err); c != want {
			t.Errorf("a %d is %v, want %v", status, c, want)
		}
	}
}

func checkUser(t *testing.T, got *defender.User, want defender.User) {
	t.Helper()
	if got == nil {
		t.Fatal("no user")
	}
	g := *got
	g.JSON = nil
	eq := func(name string, a, b any) {
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("%s = %v, want %v", name, a, b)
		}
	}
	eq("ID", g.ID, want.ID)
	eq("AccountName", g.AccountName, want.AccountName)
	eq("AccountDomain", g.AccountDomain, want.AccountDomain)
	eq("AccountSID", g.AccountSID, want.AccountSID)
	eq("FirstSeen", deref(g.FirstSeen), deref(want.FirstSeen))
	eq("LastSeen", deref(g.LastSeen), deref(want.LastSeen))
	eq("MostPrevalentMachineID", g.MostPrevalentMachineID, want.MostPrevalentMachineID)
	eq("LeastPrevalentMachineID", g.LeastPrevalentMachineID, want.LeastPrevalentMachineID)
	eq("LogonTypes", g.LogonTypes, want.LogonTypes)
	eq("LogOnMachinesCount", deref(g.LogOnMachinesCount), deref(want.LogOnMachinesCount))
	eq("IsDomainAdmin", deref(g.IsDomainAdmin), deref(want.IsDomainAdmin))
	eq("IsOnlyNetworkUser", deref(g.IsOnlyNetworkUser), deref(want.IsOnlyNetworkUser))
}

// deref shows nil as "<nil>" and a value as itself.
func deref[T any](p *T) any {
	if p == nil {
		return "<nil>"
	}
	return *p
}

func TestClientRejectsInvalidAlertIDs(t *testing.T) {
	t.Parallel()
	s := newSimulator(t)
	c := newClient(t, testOptions(t, s))
	for _, id := range []string{
		"", "../../machines", "a/b", "a?b=c", "a%2Fb", "a b", "é", "a#b", "a.b", "a\x00b",
		"da637472900382838869_1364969609\n", strings.Repeat("a", defender.MaxAlertIDLength+1),
	} {
		u, err := c.User(context.Background(), id)
		if !errors.Is(err, defender.ErrInvalidAlertID) || u != nil {
			t.Errorf("User(%q) = %v, %v; want ErrInvalidAlertID", id, u, err)
		}
		if c := defender.Classify(err); c != defender.Permanent {
			t.Errorf("User(%q): an invalid id is %v, want permanent", id, c)
		}
	}
	if n := s.CallCount(); n != 0 {
		t.Errorf("invalid ids made %d calls: %+v", n, s.Calls())
	}
	if n := s.TokenRequests(); n != 0 {
		t.Errorf("invalid ids made %d token requests", n)
	}
	// The longest valid id goes through, escaped to itself.
	id := strings.Repeat("A", defender.MaxAlertIDLength)
	if _, err := c.User(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if calls := s.Calls(); len(calls) != 1 || calls[0].Path != "/api/alerts/"+id+"/user" {
		t.Errorf("calls %+v, want one to /api/alerts/%s/user", calls, id)
	}
}

// TestClientRetryAfterPausesEveryCall checks that a 429 pauses the whole
// budget for its Retry-After, given in seconds or as an HTTP date: the
// lookup that got it and a concurrent lookup of another alert both wait.
func TestClientRetryAfterPausesEveryCall(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		retryAfter func() string
		// notBefore is when the pause ends at the earliest, given the
		// header and the arrival of the call that got the 429.
		notBefore func(header string, throttled time.Time) time.Time
	}{
		{"seconds", func() string { return "2" }, func(_ string, at time.Time) time.Time { return at.Add(2 * time.Second) }},
		// An HTTP date has whole seconds: 3s ahead is 2 to 3 s ahead, and
		// the pause lasts until that date, however long the 429 took.
		{"HTTP date", func() string { return time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat) }, func(h string, _ time.Time) time.Time {
			d, err := http.ParseTime(h)
			if err != nil {
				panic(err)
			}
			return d
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSimulator(t)
			o := testOptions(t, s)
			w := newWindow(t, "100000/1s")
			o.Budget = w
			c := newClient(t, o)
			if _, err := c.User(context.Background(), alertC); err != nil { // a token, and a warm connection
				t.Fatal(err)
			}
			s.ResetLog()
			header := tt.retryAfter()
			s.ThrottleNext(1, header)

			var wg sync.WaitGroup
			errs := make(chan error, 2)
			wg.Go(func() {
				_, err := c.User(context.Background(), alertA)
				errs <- err
			})
			waitFor(t, "the budget to be paused", func() bool { return !w.PausedUntil().IsZero() })
			wg.Go(func() {
				_, err := c.User(context.Background(), alertB)
				errs <- err
			})
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			calls := s.Calls()
			if len(calls) != 3 || calls[0].Status != 429 || calls[0].AlertID != alertA {
				t.Fatalf("calls %+v, want a 429 for %s then two 200", calls, alertA)
			}
			for _, call := range calls[1:] {
				if call.Status != 200 {
					t.Errorf("call for %s answered %d", call.AlertID, call.Status)
				}
				if want := tt.notBefore(header, calls[0].Time); call.Time.Before(want) {
					t.Errorf("call for %s arrived %v after the 429, %v before the pause ended", call.AlertID, call.Time.Sub(calls[0].Time), want.Sub(call.Time))
				}
			}
		})
	}
}

// pauseOrder is a budget that records the order in which a call's slot is
// released and a pause is applied.
type pauseOrder struct {
	freeBudget
	events []string
}

func (b *pauseOrder) Acquire(ctx context.Context) (func(), error) {
	if _, err := b.freeBudget.Acquire(ctx); err != nil {
		return nil, err
	}
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.events = append(b.events, "done")
	}, nil
}

func (b *pauseOrder) PauseUntil(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events = append(b.events, "pause")
}

// TestClientPausesBeforeReleasingTheCall: the pause of a 429 must be in
// force before the call that got it gives its slot back, or a waiting call
// may be granted in between and reach the API during the Retry-After.
func TestClientPausesBeforeReleasingTheCall(t *testing.T) {
	t.Parallel()
	s := newSimulator(t)
	o := testOptions(t, s)
	b := &pauseOrder{}
	o.Budget = b
	o.MaxAttempts = 1
	c := newClient(t, o)
	s.ThrottleNext(1, "1")
	_, err := c.User(context.Background(), alertA)
	if api := asAPIError(t, err); api.StatusCode != 429 || api.RetryAfter != time.Second {
		t.Fatalf("got %+v, want a 429 with a RetryAfter of 1s", api)
	}
	if want := []string{"pause", "done"}; !slices.Equal(b.events, want) {
		t.Errorf("budget saw %v, want %v", b.events, want)
	}
}

func TestClientRetryAfterValues(t *testing.T) {
	t.Parallel()
	s := newSimulator(t)
	for _, tt := range []struct {
		header string
		want   time.Duration
	}{
		{"7", 7 * time.Second},
		{" 3 ", 3 * time.Second},
		{"0", time.Second},  // refused all the same: do not hammer
		{"-5", time.Second}, // ditto
		{"", 45 * time.Second},
		{"soon", 45 * time.Second},
		{"1.5", 45 * time.Second},
		{"99999999999999999999", 10 * time.Minute}, // clamped, no overflow
		{"86400", 10 * time.Minute},
		{"Wed, 21 Oct 2015 07:28:00 GMT", time.Second}, // in the past
	} {
		o := testOptions(t, s)
		b := &freeBudget{}
		o.Budget, o.MaxAttempts = b, 1
		o.DefaultRetryAfter, o.MaxRetryAfter = 45*time.Second, 10*time.Minute
		c := newClient(t, o)
		s.ThrottleNext(1, tt.header)
		before := time.Now()
		_, err := c.User(context.Background(), alertA)
		api := asAPIError(t, err)
		if api.StatusCode != 429 || api.RetryAfter != tt.want {
			t.Errorf("Retry-After %q: got %d, %v; want 429, %v", tt.header, api.StatusCode, api.RetryAfter, tt.want)
		}
		if len(b.pauses) != 1 || b.pauses[0].Before(before.Add(tt.want)) || b.pauses[0].After(time.Now().Add(tt.want)) {
			t.Errorf("Retry-After %q: pauses %v, want one until about now+%v", tt.header, b.pauses, tt.want)
		}
		if !strings.Contains(err.Error(), "ENRICHER_DEFENDER_RATE_LIMITS") || defender.Classify(err) != defender.Transient {
			t.Errorf("Retry-After %q: %v: want a hint and a transient 429", tt.header, err)
		}
	}
}

// TestClientCancelledContextMakesNoCall: a lookup whose caller has gone
// before the call is made makes none, even with a token at hand and a
// budget that would grant at once.
func TestClientCancelledContextMakesNoCall(t *testing.T) {
	t.Parallel()
	s := newSimulator(t)
	c := newClient(t, testOptions(t, s))
	if _, err := c.User(context.Background(), alertB); err != nil { // the token is cached now
		t.Fatal(err)
	}
	s.ResetLog()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.User(ctx, alertA)
	if !errors.Is(err, defender.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want ErrUnavailable and context.Canceled", err)
	}
	if c := defender.Classify(err); c != defender.Transient {
		t.Errorf("a cancelled caller is %v, want transient", c)
	}
	if n := s.CallCount(); n != 0 {
		t.Errorf("a cancelled lookup made %d calls", n)
	}
}

// TestClientStopsRetryingWhenCancelled: a cancelled caller ends the wait
// between retries; the call already made is not aborted.
func TestClientStopsRetryingWhenCancelled(t *testing.T) {
	t.Parallel()
	s := newSimulator(t)
	o := testOptions(t, s)
	o.BaseBackoff, o.MaxBackoff = time.Hour, time.Hour
	c := newClient(t, o)
	s.SetOutage(503)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for s.CallCount() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	_, err := c.User(ctx, alertA)
	if !errors.Is(err, defender.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want ErrUnavailable and context.Canceled", err)
	}
	wantGaveUpAfter(t, err, "answered 503 Service Unavailable")
	if c := defender.Classify(err); c != defender.Transient {
		t.Errorf("a lookup its caller gave up on is %v, want transient", c)
	}
	if d := time.Since(start); d > 30*time.Second { // the backoff is an hour
		t.Errorf("took %v to give up", d)
	}
	if n := s.CallCount(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

// wantGaveUpAfter checks that err, a lookup given up before its next
// call, says what the last call got, as text: it wraps no *APIError.
func wantGaveUpAfter(t *testing.T, err error, answer string) {
	t.Helper()
	if want := "gave up retrying after defender: GET /api/alerts/{id}/user " + answer; !strings.Contains(err.Error(), want) {
		t.Errorf("%q does not say %q", err, want)
	}
	var api *defender.APIError
	if errors.As(err, &api) {
		t.Errorf("%v wraps the last call's %d: an unavailable lookup is not an answer", err, api.StatusCode)
	}
}

// TestClientGivesUpWaitingForTheBudget: a lookup whose caller stops
// waiting for the budget of its retry ends with ErrUnavailable and the
// caller's error, and says what the last call got.
func TestClientGivesUpWaitingForTheBudget(t *testing.T) {
	t.Parallel()
	s := newSimulator(t)
	o := testOptions(t, s)
	w := newWindow(t, "1/1h")
	o.Budget = w
	c := newClient(t, o)
	s.SetOutage(502)
	// The caller's deadline passes once the retry waits for the budget.
	ctx := newExpiring(t)
	go func() {
		for w.Waiting() == 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		ctx.expire()
	}()
	_, err := c.User(ctx, alertA)
	if !errors.Is(err, defender.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	wantGaveUpAfter(t, err, "answered 502 Bad Gateway")
	if n := s.CallCount(); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

// TestClientVerifiesTLS: the connector's own HTTP client trusts the
// simulator only when handed its CA, and a certificate error is final.
func TestClientVerifiesTLS(t *testing.T) {
	t.Parallel()
	s := newSimulator(t)

	o := testOptions(t, s)
	o.HTTPClient = defender.NewHTTPClient(&tls.Config{RootCAs: s.CertPool()})
	u, err := newClient(t, o).User(context.Background(), alertA)
	if err != nil {
		t.Fatal(err)
	}
	if want := simulator.SyntheticUser(alertA)["id"]; u.ID != want {
		t.Errorf("ID %q, want %q", u.ID, want)
	}

	o = testOptions(t, s)
	o.HTTPClient = defender.NewHTTPClient(nil) // system roots only
	s.ResetLog()
	_, err = newClient(t, o).User(context.Background(), alertA)
	te := asTransportError(t, err)
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	if !errors.As(err, &unknown) || !errors.As(err, &verify) {
		t.Errorf("%v: want a certificate verification error", err)
	}
	if te.Attempts != 1 {
		t.Errorf("a certificate error was retried: %d attempts", te.Attempts)
	}
	if n := s.CallCount(); n != 0 {
		t.Errorf("%d calls reached the simulator over an untrusted connection", n)
	}
}

// TestClientRefetchesATokenThatExpiredWhileWaiting: a token taken before a
// long wait for the budget is taken again if it would expire during the
// call, rather than being sent stale and refused.
func TestClientRefetchesATokenThatExpiredWhileWaiting(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []string
	_, o := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Write([]byte(`{"id":"contoso\\user1"}`))
	})
	// Good for the call when taken, but not after the wait. The wait is on
	// a manual clock, so AttemptTimeout can leave the call plenty of time.
	clk := clock.NewManual(time.Unix(1_700_000_000, 0))
	o.Clock = clk
	o.Credential = &expiringCredential{clock: clk, lifetime: 45 * time.Second}
	o.AttemptTimeout = 30 * time.Second
	o.Budget = &slowBudget{clock: clk, wait: 30 * time.Second}
	if _, err := newClient(t, o).User(context.Background(), alertA); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0] != "Bearer token-2" {
		t.Errorf("Authorization %q, want the token taken after the wait", seen)
	}
}

// expiringCredential hands out numbered tokens that expire after lifetime.
type expiringCredential struct {
	clock    clock.Clock
	lifetime time.Duration
	mu       sync.Mutex
	n        int
}

func (c *expiringCredential) GetToken(ctx context.Context, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return azcore.AccessToken{Token: fmt.Sprintf("token-%d", c.n), ExpiresOn: c.clock.Now().Add(c.lifetime)}, nil
}

// slowBudget grants every call after wait, which it lets pass on a manual
// clock.
type slowBudget struct {
	clock *clock.Manual
	wait  time.Duration
}

func (b *slowBudget) Acquire(ctx context.Context) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.clock.Advance(b.wait)
	return func() {}, nil
}

func (b *slowBudget) PauseUntil(time.Time) {}

// TestClientBodies covers answers the simulator does not give: bodies too
// large or malformed, redirects and error bodies that are not JSON.
func TestClientBodies(t *testing.T) {
	t.Parallel()
	const limit = 1024
	pad := func(n int) string { // a JSON object of exactly n bytes
		s := `{"id":"x","pad":""}`
		return strings.Replace(s, `""`, `"`+strings.Repeat("p", n-len(s))+`"`, 1)
	}
	tests := []struct {
		name     string
		status   int
		header   http.Header
		body     string
		requests int
		class    defender.Class
		outcome  defender.Outcome // of every call, as the breaker is told
		check    func(t *testing.T, u *defender.User, err error)
	}{
		{
			name: "a body of MaxBodyBytes is read", status: 200, body: pad(limit), requests: 1, class: defender.Found, outcome: defender.OutcomeSuccess,
			check: func(t *testing.T, u *defender.User, err error) {
				if err != nil || u.ID != "x" || len(u.JSON) != limit {
					t.Errorf("got %v, %v", u, err)
				}
			},
		},
		{
			name: "a body over MaxBodyBytes is an error, not retried", status: 200, body: pad(limit + 1), requests: 1, class: defender.Permanent, outcome: defender.OutcomeSuccess,
			check: func(t *testing.T, u *defender.User, err error) {
				te := asTransportError(t, err)
				if !strings.Contains(err.Error(), "larger than 1024 bytes") || te.Attempts != 1 {
					t.Errorf("got %v after %d attempts", err, te.Attempts)
				}
			},
		},
		{
			name: "a 503 with a huge body is still a 503", status: 503, body: strings.Repeat("x", 1<<20), requests: 4, class: defender.Transient, outcome: defender.OutcomeFailure,
			check: func(t *testing.T, u *defender.User, err error) {
				api := asAPIError(t, err)
				if api.StatusCode != 503 || api.Attempts != 4 || len(api.Message) > 210 {
					t.Errorf("got %d after %d attempts, message of %d bytes", api.StatusCode, api.Attempts, len(api.Message))
				}
			},
		},
		{
			// Not JSON at all: a proxy that dropped the connection, retried.
			name: "a 200 cut short is retried", status: 200, body: `{"id":`, requests: 4, class: defender.Transient, outcome: defender.OutcomeFailure,
			check: func(t *testing.T, u *defender.User, err error) {
				if te := asTransportError(t, err); te.Attempts != 4 {
					t.Errorf("%d attempts", te.Attempts)
				}
			},
		},
		{
			name: "an empty 200 is retried", status: 200, body: ``, requests: 4, class: defender.Transient, outcome: defender.OutcomeFailure,
			check: func(t *testing.T, u *defender.User, err error) { asTransportError(t, err) },
		},
		{
			name: "a 200 of null is an error", status: 200, body: `null`, requests: 1, class: defender.Permanent, outcome: defender.OutcomeSuccess,
			check: func(t *testing.T, u *defender.User, err error) { asTransportError(t, err) },
		},
		{
			name: "a 200 array is an error", status: 200, body: `[{"id":"x"}]`, requests: 1, class: defender.Permanent, outcome: defender.OutcomeSuccess,
			check: func(t *testing.T, u *defender.User, err error) { asTransportError(t, err) },
		},
		{
			name: "a redirect is not followed", status: 302, header: http.Header{"Location": {"/elsewhere"}}, requests: 1, class: defender.Permanent, outcome: defender.OutcomeSuccess,
			check: func(t *testing.T, u *defender.User, err error) {
				if api := asAPIError(t, err); api.StatusCode != 302 || api.Attempts != 1 {
					t.Errorf("got %+v", api)
				}
			},
		},
		{
			name: "an HTML 502 keeps a short message", status: 502, body: "<html>" + strings.Repeat("gateway ", 100) + "</html>", requests: 4, class: defender.Transient, outcome: defender.OutcomeFailure,
			check: func(t *testing.T, u *defender.User, err error) {
				api := asAPIError(t, err)
				if !strings.HasPrefix(api.Message, "<html>gateway") || len(api.Message) > 210 || api.Attempts != 4 {
					t.Errorf("got %+v", api)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var paths []string
			_, o := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				paths = append(paths, r.URL.Path)
				mu.Unlock()
				for k, v := range tt.header {
					w.Header()[k] = v
				}
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			})
			o.MaxBodyBytes = limit
			rb := &recordingBreaker{}
			o.Breaker = rb
			u, err := newClient(t, o).User(context.Background(), alertA)
			tt.check(t, u, err)
			if got := rb.outcomes(); len(got) != tt.requests || slices.ContainsFunc(got, func(o defender.Outcome) bool { return o != tt.outcome }) {
				t.Errorf("the breaker was told %v, want %d times %v", got, tt.requests, tt.outcome)
			}
			if c := defender.Classify(err); c != tt.class {
				t.Errorf("%v is %v, want %v", err, c, tt.class)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(paths) != tt.requests {
				t.Errorf("%d requests %v, want %d", len(paths), paths, tt.requests)
			}
			for _, p := range paths {
				if p != "/api/alerts/"+alertA+"/user" {
					t.Errorf("request to %s", p)
				}
			}
		})
	}
}
