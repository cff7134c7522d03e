package defender

import (
	"errors"
	"fmt"
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
	// ErrUnavailable: no answer in time: the circuit breaker refused the
	// next call, or the caller stopped waiting (for the call budget, a
	// token or a retry).
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
	b.WriteString(e.hint())
	return b.String()
}

// hint says what the operator can do about the answer.
func (e *APIError) hint() string {
	switch e.StatusCode {
	case http.StatusUnauthorized:
		return ": a fresh token was refused too; check the tenant, the client id and that the token's audience matches ENRICHER_DEFENDER_SCOPE"
	case http.StatusForbidden:
		return ": grant the application permission User.Read.All (WindowsDefenderATP) to the app registration, with admin consent"
	case http.StatusTooManyRequests:
		return ": the API's rate limit was hit; lower ENRICHER_DEFENDER_RATE_LIMITS if other clients share the tenant's budget"
	}
	return ""
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
// Err is the credential's own error: azidentity's whole account of it, with
// Entra ID's answer or the DefaultAzureCredential chain, for the log.
type TokenError struct {
	Err error

	summary string // the short account for ErrorText, when the client made it
	text    string // Error's text, when the client made it
}

func (e *TokenError) Error() string {
	if e.text != "" {
		return e.text
	}
	return tokenText(e.Err)
}

// tokenText is a TokenError's text. azidentity builds its error's text from
// the response body each time, reading the body again: an error shared
// between goroutines must have it built once, before it is shared.
func tokenText(err error) string {
	return "defender: no access token: " + err.Error() + " (check ENRICHER_AZURE_CREDENTIAL and the AZURE_* variables)"
}

func (e *TokenError) Unwrap() error { return e.Err }
