package defender

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/defender-enricher/defender-enricher/clock"
)

// Budget decides when a call may start. Every attempt, retries included,
// acquires one call; a 429's Retry-After pauses the whole budget.
// budget.Window implements it for one process.
type Budget interface {
	// Acquire blocks until a call may start and returns the function to call
	// once it has ended, or ctx's error.
	Acquire(ctx context.Context) (done func(), err error)
	// PauseUntil stops every call from starting before t.
	PauseUntil(t time.Time)
}

// Options configure a Client. Endpoint, Credential and Budget are required.
type Options struct {
	Endpoint   Endpoint
	Credential azcore.TokenCredential
	Budget     Budget
	// Breaker is asked before every attempt and told every call's outcome;
	// nil means none.
	Breaker Breaker
	// HTTPClient makes the calls; nil means NewHTTPClient(nil).
	HTTPClient *http.Client

	MaxAttempts       int           // calls per lookup, retries included; default 4
	BaseBackoff       time.Duration // first retry delay before jitter; default 500ms
	MaxBackoff        time.Duration // cap of the retry delay; default 30s
	AttemptTimeout    time.Duration // one call, from sending to the end of the body; default 15s
	DefaultRetryAfter time.Duration // pause after a 429 that carries no usable Retry-After; default 60s
	MaxRetryAfter     time.Duration // longest pause a Retry-After can impose; default 1h
	MaxBodyBytes      int64         // larger answers are an error; default 1 MiB
	// RefusalHold is how long a credential that Entra ID refused (a
	// Permanent TokenError) is not asked again: lookups in that time fail
	// at once with the same error, so that a wrong secret costs one token
	// request per RefusalHold, not one per alert. Default 30s.
	RefusalHold time.Duration

	Clock      clock.Clock           // nil: the real clock
	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: metrics are kept but not exported
	UserAgent  string
}

// Client calls GET {base}/api/alerts/{id}/user. It is safe for concurrent
// use. It neither caches nor coalesces: cache.Cache in front of it does.
type Client struct {
	opts    Options
	base    string
	metrics *clientMetrics
	log     *slog.Logger
	clock   clock.Clock
	refusal atomic.Pointer[refusal] // the last refused token request, if any
}

// refusal is a token request that Entra ID refused, kept for RefusalHold.
type refusal struct {
	err   error
	until time.Time
}

// New returns a Client. It does no I/O.
func New(opts Options) (*Client, error) {
	if opts.Endpoint.BaseURL == nil || opts.Endpoint.Scope == "" {
		return nil, errors.New("defender: Endpoint is required (see ResolveEndpoint)")
	}
	if opts.Credential == nil {
		return nil, errors.New("defender: Credential is required")
	}
	if opts.Budget == nil {
		return nil, errors.New("defender: Budget is required")
	}
	setDefault(&opts.MaxAttempts, 4)
	setDefault(&opts.BaseBackoff, 500*time.Millisecond)
	setDefault(&opts.MaxBackoff, 30*time.Second)
	setDefault(&opts.AttemptTimeout, 15*time.Second)
	setDefault(&opts.DefaultRetryAfter, 60*time.Second)
	setDefault(&opts.MaxRetryAfter, time.Hour)
	setDefault(&opts.MaxBodyBytes, 1<<20)
	setDefault(&opts.RefusalHold, 30*time.Second)
	if opts.HTTPClient == nil {
		opts.HTTPClient = NewHTTPClient(nil)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "defender-enricher"
	}
	m, err := newClientMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	return &Client{
		opts:    opts,
		base:    opts.Endpoint.BaseURL.String() + "/api/alerts/",
		metrics: m,
		log:     opts.Logger,
		clock:   opts.Clock,
	}, nil
}

func setDefault[T int | int64 | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

// NewHTTPClient returns the client the connector calls Defender with: TLS
// verified against the system roots (or roots, when not nil; SSL_CERT_FILE
// adds to the system roots), TLS 1.2 at least, bounded dial and handshake
// times, and no redirects: an answer that redirects is an error, so the
// bearer token never follows a Location header anywhere.
func NewHTTPClient(roots *tls.Config) *http.Client {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if roots != nil {
		tlsConfig = roots.Clone()
		if tlsConfig.MinVersion < tls.VersionTLS12 {
			tlsConfig.MinVersion = tls.VersionTLS12
		}
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:     tlsConfig,
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     90 * time.Second,
			// At most 32 connections: over HTTP/1.1 a burst of misses
			// (a cold start: hundreds of lookups the budget grants at
			// once) would otherwise open one TLS connection each. 32
			// calls at a time is more than any budget the API allows
			// keeps busy; over HTTP/2 one connection carries them all.
			MaxIdleConnsPerHost: 32,
			MaxConnsPerHost:     32,
			ForceAttemptHTTP2:   true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// User returns the user related to the alert.
//
// Errors: ErrInvalidAlertID before any call; ErrNotFound on a 404; *APIError
// for any other answer it gave up on (401 after one fresh token, 403, 429 or
// 5xx after MaxAttempts); *TransportError when no usable answer came (after
// MaxAttempts, except for a certificate that does not verify and an answer
// over MaxBodyBytes or unreadable, which no retry would change); *TokenError
// when the credential failed; an error matching ErrUnavailable when an
// attempt met an open Breaker, which ends the lookup at once, with no call
// and no token request, or the Breaker opened while the attempt waited for
// its token or the budget, and, matching ctx's error too, when ctx ended
// before a call, while waiting for the budget or between retries. An
// ErrUnavailable error after calls were made says in its text what the
// last of them got; it wraps no *APIError.
//
// Cancelling ctx stops waiting and stops retries, but never aborts a call
// already sent: its budget is spent, and its answer is worth keeping.
func (c *Client) User(ctx context.Context, alertID string) (*User, error) {
	if !ValidAlertID(alertID) {
		return nil, ErrInvalidAlertID
	}
	// Validated above, escaped anyway: a later change to ValidAlertID must
	// not be able to put a path into the URL.
	target := c.base + url.PathEscape(alertID) + "/user"
	var tm tokenMode
	var last error // what the previous attempt's call got
	for attempt := 1; ; attempt++ {
		u, retry, wait, err := c.attempt(ctx, target, alertID, attempt, tm)
		if last != nil && errors.Is(err, ErrUnavailable) {
			// No call this time (the breaker is open, or ctx ended while
			// waiting for a token or the budget): the lookup ends here.
			return nil, gaveUp(err, last, attempt-1)
		}
		if !retry || attempt >= c.opts.MaxAttempts {
			if err != nil {
				return nil, withAttempts(err, attempt)
			}
			return u, nil
		}
		// One fresh token per lookup, for the attempt right after the first
		// 401; later attempts use the credential's cache, which holds it.
		switch {
		case tm != tokenCached:
			tm = tokenRefreshed
		case isStatus(err, http.StatusUnauthorized):
			tm = tokenFresh
		}
		c.metrics.retries.Inc()
		if serr := sleep(ctx, c.clock, wait); serr != nil {
			return nil, gaveUp(fmt.Errorf("%w: %w", ErrUnavailable, serr), err, attempt)
		}
		last = err
	}
}

// gaveUp is err, an ErrUnavailable that ended a lookup before its next
// call, with the short account of what the last of its calls got, for the
// operator: as text, since no caller needs more of it.
func gaveUp(err, last error, calls int) error {
	return fmt.Errorf("%w: gave up retrying after %s", err, ErrorText(withAttempts(last, calls)))
}

// tokenMode is where a lookup stands with fresh tokens.
type tokenMode int

const (
	tokenCached    tokenMode = iota // the credential's cached token will do
	tokenFresh                      // a 401 refused it: take a fresh one now
	tokenRefreshed                  // a fresh one was taken: a 401 is final
)

func isStatus(err error, status int) bool {
	var api *APIError
	return errors.As(err, &api) && api.StatusCode == status
}

// errBodyTooLarge: a 200 answer over MaxBodyBytes, which a retry would only
// fetch again.
var errBodyTooLarge = errors.New("answer too large")

// errUnreadable: a 200 answer that is JSON but not a user object; the same
// on every attempt.
var errUnreadable = errors.New("200 answer unreadable")

// errCutShort: a 200 answer that is not JSON at all, empty or cut short (a
// proxy or a load balancer that dropped the connection): retried.
var errCutShort = errors.New("200 answer cut short")

// attempt makes one call and decides, in this one place, whether and when
// to retry. wait is the delay before the next attempt (a 429's pause is
// applied to the budget instead, so it holds every caller).
//
// The breaker is asked first, before the token and the budget, so that an
// open breaker costs neither; the token and the budget are waited for
// under its context, which ends if it opens meanwhile; and it is told the
// outcome as the attempt ends: every error of an attempt that made no call
// is neutral to CallOutcome.
func (c *Client) attempt(ctx context.Context, target, alertID string, attempt int, tm tokenMode) (u *User, retry bool, wait time.Duration, err error) {
	waitCtx := ctx // what the attempt waits under until its call starts
	if c.opts.Breaker != nil {
		bctx, report, berr := c.opts.Breaker.Allow(ctx)
		if berr != nil {
			c.log.Debug("defender call not made: the circuit breaker refused it", "alert_id", alertID, "attempt", attempt, "reason", berr)
			return nil, false, 0, fmt.Errorf("%w: %w", ErrUnavailable, berr)
		}
		defer func() { report(CallOutcome(err)) }()
		waitCtx = bctx
	}
	tro := policy.TokenRequestOptions{Scopes: []string{c.opts.Endpoint.Scope}}
	if tm == tokenFresh {
		// Claims make azidentity and MSAL skip their token cache; an nbf
		// challenge is what a resource sends when it refuses a token.
		tro.Claims = fmt.Sprintf(`{"access_token":{"nbf":{"essential":true,"value":"%d"}}}`, c.clock.Now().Unix())
	}
	// The token comes before the budget, so that a credential that fails
	// costs no call; ctx is checked once more after it, because a cached
	// token comes back whatever the state of ctx.
	tokenAt := c.clock.Now()
	tok, err := c.token(waitCtx, tro)
	if err != nil {
		return nil, false, 0, err
	}
	if waitCtx.Err() != nil {
		return nil, false, 0, fmt.Errorf("%w: %w", ErrUnavailable, context.Cause(waitCtx))
	}

	waitStart := c.clock.Now()
	done, err := c.opts.Budget.Acquire(waitCtx)
	granted := c.clock.Now()
	c.metrics.budgetWait.Observe(granted.Sub(waitStart).Seconds())
	if err != nil {
		if waitCtx.Err() != nil {
			// The caller's deadline or cancellation, or the breaker opened.
			err = context.Cause(waitCtx)
		}
		return nil, false, 0, fmt.Errorf("%w: waiting for the call budget: %w", ErrUnavailable, err)
	}
	if waitCtx.Err() != nil {
		// Granted just as the breaker opened or the caller left: no call.
		done()
		return nil, false, 0, fmt.Errorf("%w: %w", ErrUnavailable, context.Cause(waitCtx))
	}
	// A token good for the call when taken but no longer after the wait for
	// the budget (which can last as long as the caller allows) is taken
	// again from the credential, which renews a token near its expiry.
	if exp := tok.ExpiresOn; exp.After(tokenAt.Add(c.opts.AttemptTimeout)) && exp.Before(granted.Add(c.opts.AttemptTimeout)) {
		tro.Claims = ""
		if tok, err = c.token(context.WithoutCancel(ctx), tro); err != nil {
			done()
			return nil, false, 0, err
		}
	}
	// The call runs to its end even if ctx ends now (see User).
	callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.AttemptTimeout)
	defer cancel()
	start := c.clock.Now()
	status, body, header, err := c.do(callCtx, target, tok.Token)
	var api *APIError
	if err == nil && status == http.StatusTooManyRequests {
		// Paused before the call's slot is given back: a waiting call must
		// not slip through in between.
		api = parseAPIError(status, body)
		api.RetryAfter = c.retryAfter(header.Get("Retry-After"))
		until := c.clock.Now().Add(api.RetryAfter)
		c.opts.Budget.PauseUntil(until)
		c.metrics.throttled.Inc()
		c.log.Warn("defender throttled the client: every call paused", "retry_after", api.RetryAfter, "until", until.UTC().Format(time.RFC3339), "correlation_id", api.Target)
	}
	done()
	elapsed := c.clock.Now().Sub(start)
	c.metrics.duration.Observe(elapsed.Seconds())
	c.metrics.calls.WithLabelValues(statusLabel(status, err)).Inc()

	if err != nil {
		c.log.Warn("defender call failed", "alert_id", alertID, "attempt", attempt, "error", err)
		return nil, ctx.Err() == nil && !permanent(err), c.backoff(attempt), &TransportError{Err: err}
	}
	c.log.Debug("defender call", "alert_id", alertID, "attempt", attempt, "status", status, "duration", elapsed)
	switch {
	case status == http.StatusOK:
		u, err := ParseUser(body)
		if err != nil {
			if !json.Valid(body) {
				c.log.Warn("defender answered 200 with a body that is not JSON", "alert_id", alertID, "attempt", attempt, "bytes", len(body))
				return nil, ctx.Err() == nil, c.backoff(attempt), &TransportError{Err: fmt.Errorf("%w (%d bytes): %w", errCutShort, len(body), err)}
			}
			return nil, false, 0, &TransportError{Err: fmt.Errorf("%w: %w", errUnreadable, err)}
		}
		return u, false, 0, nil
	case status == http.StatusNotFound:
		return nil, false, 0, ErrNotFound
	case status == http.StatusTooManyRequests:
		return nil, true, 0, api
	}
	api = parseAPIError(status, body)
	switch {
	case status == http.StatusUnauthorized:
		return nil, tm == tokenCached, 0, api
	case status >= 500 && status != http.StatusNotImplemented:
		c.log.Warn("defender answered a server error", "alert_id", alertID, "attempt", attempt, "status", status, "correlation_id", api.Target)
		return nil, true, c.backoff(attempt), api
	}
	return nil, false, 0, api
}

// token asks the credential for a token, within AttemptTimeout. After
// Entra ID refused the credential it answers with that refusal, without
// asking, until RefusalHold has passed.
func (c *Client) token(ctx context.Context, tro policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if r := c.refusal.Load(); r != nil && c.clock.Now().Before(r.until) {
		return azcore.AccessToken{}, r.err
	}
	tokCtx, cancel := context.WithTimeout(ctx, c.opts.AttemptTimeout)
	defer cancel()
	tok, err := c.opts.Credential.GetToken(tokCtx, tro)
	if err != nil {
		if ctx.Err() != nil {
			return tok, fmt.Errorf("%w: %w", ErrUnavailable, context.Cause(ctx))
		}
		terr := newTokenError(err)
		if Classify(terr) == Permanent {
			c.refusal.Store(&refusal{err: terr, until: c.clock.Now().Add(c.opts.RefusalHold)})
			c.log.Warn("no access token: the credential was refused; lookups fail without asking again for a while",
				"hold", c.opts.RefusalHold.String(), "error", err)
		} else {
			c.log.Warn("no access token from the credential", "error", err)
		}
		return tok, terr
	}
	c.refusal.Store(nil)
	return tok, nil
}

// permanent transport errors are not retried: a certificate that does not
// verify, or an answer too large or unreadable, is the same on the next
// attempt.
func permanent(err error) bool {
	return errors.Is(err, errBodyTooLarge) || errors.Is(err, errUnreadable) || certificateError(err)
}

// do makes one call. The body of a 200 over MaxBodyBytes is an error; that
// of any other answer is cut at MaxBodyBytes, since it only feeds the
// error's message and the status is what counts.
func (c *Client) do(ctx context.Context, target, token string) (int, []byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.opts.UserAgent)
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return 0, nil, nil, redactURLError(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.opts.MaxBodyBytes+1))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("reading the %d answer: %w", resp.StatusCode, err)
	}
	if int64(len(body)) > c.opts.MaxBodyBytes {
		if resp.StatusCode == http.StatusOK {
			return 0, nil, nil, fmt.Errorf("the %d answer is larger than %d bytes: %w", resp.StatusCode, c.opts.MaxBodyBytes, errBodyTooLarge)
		}
		body = body[:c.opts.MaxBodyBytes]
	}
	return resp.StatusCode, body, resp.Header, nil
}

// redactURLError keeps the error's cause but not the URL's query, which a
// proxy could have filled; the path is the validated alert id only.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

func parseAPIError(status int, body []byte) *APIError {
	api := &APIError{StatusCode: status}
	var eb struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Target  string `json:"target"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &eb) == nil {
		api.Code, api.Message, api.Target = eb.Error.Code, eb.Error.Message, eb.Error.Target
	} else if len(bytes.TrimSpace(body)) > 0 {
		api.Message = truncate(string(body), 200)
	}
	return api
}

func truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// retryAfter reads Retry-After as seconds or an HTTP date, clamped to
// (0, MaxRetryAfter]; an absent or unreadable value means DefaultRetryAfter.
func (c *Client) retryAfter(v string) time.Duration {
	d := c.opts.DefaultRetryAfter
	v = strings.TrimSpace(v)
	// A number too large for int64 is still a number of seconds: ParseInt
	// returns the largest int64 with ErrRange, and the clamp below applies.
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		if secs > 0 {
			d = time.Duration(min(secs, int64(c.opts.MaxRetryAfter/time.Second)+1)) * time.Second
		} else {
			d = 0
		}
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(c.clock.Now())
	}
	if d <= 0 {
		// "Retry-After: 0" or a date in the past: the server still refused
		// this call, so do not hammer it.
		d = time.Second
	}
	return min(d, c.opts.MaxRetryAfter)
}

// backoff is capped exponential with equal jitter: half fixed, half random,
// so that retries neither synchronise nor collapse to zero.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.opts.BaseBackoff << min(attempt-1, 20)
	if d <= 0 || d > c.opts.MaxBackoff {
		d = c.opts.MaxBackoff
	}
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, clk clock.Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	ch := make(chan struct{})
	t := clk.AfterFunc(d, func() { close(ch) })
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
}

func withAttempts(err error, attempts int) error {
	var api *APIError
	if errors.As(err, &api) {
		api.Attempts = attempts
	}
	var te *TransportError
	if errors.As(err, &te) {
		te.Attempts = attempts
	}
	return err
}

func statusLabel(status int, err error) string {
	switch {
	case err != nil:
		return "error"
	case status == 200, status == 404, status == 401, status == 403, status == 429:
		return strconv.Itoa(status)
	case status >= 500:
		return "5xx"
	}
	return "other"
}

type clientMetrics struct {
	calls      *prometheus.CounterVec
	duration   prometheus.Histogram
	budgetWait prometheus.Histogram
	retries    prometheus.Counter
	throttled  prometheus.Counter
}

func newClientMetrics(reg prometheus.Registerer) (*clientMetrics, error) {
	m := &clientMetrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enricher_defender_calls_total",
			Help: "Calls made to the Defender API, by answer (200, 404, 401, 403, 429, 5xx, other, error).",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "enricher_defender_call_duration_seconds",
			Help:    "Time from sending a Defender call to the end of its answer.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 9),
		}),
		budgetWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "enricher_defender_budget_wait_seconds",
			Help:    "Time a call waited for the call budget (and any Retry-After pause).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "enricher_defender_retries_total",
			Help: "Calls retried after a 401, 429, 5xx or transport failure.",
		}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "enricher_defender_throttled_total",
			Help: "429 answers; each pauses every call until its Retry-After.",
		}),
	}
	for _, code := range []string{"200", "404", "401", "403", "429", "5xx", "other", "error"} {
		m.calls.WithLabelValues(code) // at zero from the start, for rates and ratios
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, m.duration, m.budgetWait, m.retries, m.throttled} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("defender: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}
