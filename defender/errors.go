package defender

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// Sentinel errors that callers branch on with errors.Is.
var (
	// ErrNotFound: the API answered 404, no such alert or no user for it.
	ErrNotFound = errors.New("defender: alert or user not found (404)")
	// ErrInvalidAlertID: the id is not 1 to 128 characters of A-Z a-z 0-9 _ -;
	// no call was made.
	ErrInvalidAlertID = errors.New("defender: invalid alert id")
	// ErrUnavailable: no answer in time without the API having failed: the
	// breaker is open, or the call budget was spent for longer than the
	// caller could wait.
	ErrUnavailable = errors.New("defender: unavailable")
)

// APIError is an answer other than 200 or 404 that the client gave up on,
// with Defender's error body. Target is Microsoft's correlation id, which
// support needs.
type APIError struct {
	StatusCode int
	Code       string        // Defender's error code, such as "Forbidden"
	Message    string        // Defender's message
	Target     string        // correlation id
	RetryAfter time.Duration // from a 429's Retry-After, zero otherwise
	Attempts   int           // calls made, retries included
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "defender: GET /api/alerts/{id}/user answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " after %d attempts", e.Attempts)
	}
	if e.Code != "" || e.Message != "" {
		fmt.Fprintf(&b, ": %s: %s", e.Code, e.Message)
	}
	if e.Target != "" {
		fmt.Fprintf(&b, " (correlation id %s)", e.Target)
	}
	switch e.StatusCode {
	case http.StatusUnauthorized:
		b.WriteString(": a fresh token was refused too; check the tenant, the client id and that the token's audience matches ENRICHER_DEFENDER_SCOPE")
	case http.StatusForbidden:
		b.WriteString(": grant the application permission User.Read.All (WindowsDefenderATP) to the app registration, with admin consent")
	case http.StatusTooManyRequests:
		b.WriteString(": the API's rate limit was hit; lower ENRICHER_DEFENDER_RATE_LIMITS if other clients share the tenant's budget")
	}
	return b.String()
}

// Unhealthy reports whether err means the API is unwell: a 5xx answer, a
// timeout of the call itself, a connection that failed or a token that could
// not be obtained. These trip the circuit breaker. A 404, a 429, a 4xx, an
// invalid id, an open breaker, a spent budget and the caller's own
// cancellation do not.
func Unhealthy(err error) bool {
	if err == nil {
		return false
	}
	// The sentinels first: an error that says the lookup was given up on
	// (ErrUnavailable, a cancelled caller) is not the API's fault, whatever
	// answer it may also carry.
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidAlertID) || errors.Is(err, ErrUnavailable) ||
		errors.Is(err, context.Canceled) {
		return false
	}
	var api *APIError
	if errors.As(err, &api) {
		return api.StatusCode >= 500
	}
	var tok *TokenError
	if errors.As(err, &tok) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var te *TransportError
	return errors.As(err, &te)
}

// TransportError is a call that got no usable answer: the connection failed
// or was reset, it timed out, or the body was unreadable or too large.
type TransportError struct {
	Attempts int
	Err      error
}

func (e *TransportError) Error() string {
	if e.Attempts == 1 {
		return fmt.Sprintf("defender: GET /api/alerts/{id}/user failed: %v", e.Err)
	}
	return fmt.Sprintf("defender: GET /api/alerts/{id}/user failed after %d attempts: %v", e.Attempts, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// TokenError is a failure to obtain an access token from the credential.
type TokenError struct{ Err error }

func (e *TokenError) Error() string {
	return "defender: no access token: " + e.Err.Error() + " (check ENRICHER_AZURE_CREDENTIAL and the AZURE_* variables)"
}

func (e *TokenError) Unwrap() error { return e.Err }
