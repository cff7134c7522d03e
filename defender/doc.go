// Package defender is the Microsoft Defender for Endpoint API client of the
// connector: one call, GET {base}/api/alerts/{id}/user, with the bearer
// token of an azidentity credential, under a call budget, with the retry
// decision in one place.
//
// # The contract
//
// Client.User validates the alert id (ValidAlertID: 1 to MaxAlertIDLength
// characters of A-Z a-z 0-9 _ -) before anything else, so that nothing but
// a valid id reaches a URL, and escapes it anyway. Every attempt, retries
// included, asks the Breaker first, when there is one (an open breaker
// ends the lookup at once, with no token request and no call), then takes
// a token (a credential that fails costs no call), then one call of the
// Budget, and tells the Breaker what the call got (CallOutcome: a 5xx but
// 501, a timeout or a connection failure is a failure, an answer given on
// purpose a success, a 429 or no call at all neither). A 429 pauses the
// whole Budget until its Retry-After (seconds or an HTTP date,
// DefaultRetryAfter when absent, never longer than MaxRetryAfter). A 429
// (after its pause), a 5xx but 501 and a transport failure are retried,
// the last two after capped, jittered exponential backoff, up to
// MaxAttempts; a 401 is retried once with a fresh token. A certificate that
// does not verify and an answer over MaxBodyBytes are not retried.
// Cancelling the caller's context stops waiting and retrying, but a call
// already sent runs to its end (its budget is spent and its answer is worth
// keeping). A Client is safe for concurrent use.
//
// The token only ever goes where an operator sent it. ResolveEndpoint
// accepts an https API URL without user info, query or fragment, and
// derives the token scope and the Entra authority from the known Defender
// hosts (commercial and geo hosts, GCC, GCC High and DoD); any other host
// is refused unless the scope is given with it. NewHTTPClient verifies TLS
// (1.2 at least) and follows no redirect, so the token never follows a
// Location header. NewCredential builds one credential of a
// CredentialKind from azidentity's own AZURE_* variables, without network
// I/O; a missing variable is an error that names it.
//
// ParseUser keeps every field of the answer in User.JSON (keys sorted, no
// OData annotations), the form the output envelope carries, and decodes
// the documented fields, each optional.
//
// # Errors, and what callers branch on
//
// The sentinels, matched with errors.Is:
//   - ErrInvalidAlertID: the id is not a valid alert id; no call was made.
//     The pipeline never asks for one (its parser rejects such input first).
//   - ErrNotFound: a 404, no such alert or no user for it. An answer, not a
//     failure: the cache keeps it for its negative TTL and the pipeline
//     publishes the event as not_found.
//   - ErrUnavailable: no answer in time: the caller's context ended while
//     it waited for the budget, a token or a retry (the error also matches
//     the context's error), or an attempt met an open circuit breaker (the
//     error also wraps the Breaker's). When calls were made before, its
//     text ends with the short account of what the last one got; it wraps
//     none of their errors. The pipeline publishes the event as
//     unavailable.
//
// The typed errors, matched with errors.As, carry data:
//   - *APIError: an answer other than 200 or 404 that the client gave up on:
//     401 after a fresh token, 403, 429 or 5xx after MaxAttempts. It holds
//     the status, Defender's code and message, the correlation id support
//     asks for, the Retry-After of a 429 and the number of attempts; its
//     message says what to fix for a 401, 403 or 429.
//   - *TransportError: no usable answer (connection failed or reset,
//     timeout, unreadable or oversized body). The request URL is left out
//     of its message.
//   - *TokenError: the credential could not give a token.
//
// Classify is the one classification of an outcome: Found, NotFound,
// Transient (the API or Entra ID down, slow, unreachable or throttling, or
// the lookup gave up waiting: asking later can succeed) or Permanent (a
// refusal or a configuration error: asking again gets the same answer).
// The wait policy holds Transient lookups and publishes Permanent ones as
// failed at once. CallOutcome is what one call tells the circuit breaker,
// decided with the same classification. ErrorText gives the short, single-line text of an error
// that goes to the SIEM in enrichment.error (at most MaxErrorText bytes,
// with Defender's status, code and correlation id kept); the full error,
// which never holds the token, is for the log.
//
// # What it leaves out
//
// Caching and coalescing of lookups (package cache), the circuit breaker
// itself (package breaker: the Breaker interface is what the client needs
// of it), the sliding-window budget itself (package budget: the Budget
// interface is what the client needs of it), and any other Defender
// API: the client reads one endpoint and writes nothing. It keeps no state
// between lookups except the credential's token cache.
package defender
