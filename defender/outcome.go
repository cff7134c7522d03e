package defender

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
)

// Breaker is a circuit breaker the Client asks before every attempt of a
// lookup, retries included, before it takes a token or a call of the
// Budget. package breaker implements it.
type Breaker interface {
	// Allow reports whether an attempt may go ahead. When it may not, err
	// says why; the Client makes no call, asks for no token, and ends the
	// lookup with an error that matches ErrUnavailable and wraps err.
	//
	// When it may, the attempt waits for its token and its call of the
	// Budget under wait: ctx, ended too, with a cause that says so, if the
	// breaker opens before the call starts, so that no call starts while
	// it is open. done must be called exactly once, when the attempt ends:
	// with the call's outcome (CallOutcome), or OutcomeNeutral when it
	// ended without a call; wait is not used after that.
	Allow(ctx context.Context) (wait context.Context, done func(Outcome), err error)
}

// Outcome is what one attempt tells a Breaker about the API's health.
type Outcome int

// The outcomes CallOutcome returns.
const (
	// OutcomeNeutral: nothing is known of the API's health: no call was
	// made (the caller stopped waiting for the budget or the token, the
	// credential failed, the certificate did not verify), or the API
	// answered 429, which says the client asked too often, not that the
	// API is unwell. Neither a success nor a failure: in a half-open
	// breaker it gives the probe's place back.
	OutcomeNeutral Outcome = iota
	// OutcomeSuccess: the API answered on purpose: 200, 404, 401, 403, 501
	// or another answer Classify does not call Transient, including a 200
	// too large or unreadable. A half-open breaker closes on it.
	OutcomeSuccess
	// OutcomeFailure: the API is unwell: a 5xx but 501, a 408, a timeout, a
	// connection failure, a 200 cut short: an answered call Classify calls
	// Transient, 429 excepted.
	OutcomeFailure
)

func (o Outcome) String() string {
	switch o {
	case OutcomeNeutral:
		return "neutral"
	case OutcomeSuccess:
		return "success"
	case OutcomeFailure:
		return "failure"
	}
	return "unknown"
}

// CallOutcome says what the error of one call to the API (nil for a 200
// that was read) means for a Breaker. An error that no call produced (a
// *TokenError, ErrUnavailable, a context's error, ErrInvalidAlertID) is
// OutcomeNeutral.
func CallOutcome(err error) Outcome {
	if err == nil || errors.Is(err, ErrNotFound) {
		return OutcomeSuccess
	}
	var api *APIError
	if errors.As(err, &api) {
		switch {
		case api.StatusCode == http.StatusTooManyRequests:
			return OutcomeNeutral
		case classifyStatus(api.StatusCode) == Transient:
			return OutcomeFailure
		}
		return OutcomeSuccess
	}
	var te *TransportError
	if errors.As(err, &te) {
		switch {
		case certificateError(te.Err):
			// The handshake failed: the call never reached the API.
			return OutcomeNeutral
		case Classify(te) == Transient:
			return OutcomeFailure
		}
		// An answer too large or unreadable: the API did answer.
		return OutcomeSuccess
	}
	return OutcomeNeutral
}

// certificateError reports whether err is a certificate that does not
// verify.
func certificateError(err error) bool {
	var (
		verify    *tls.CertificateVerificationError
		authority x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &authority) || errors.As(err, &hostname) || errors.As(err, &invalid)
}
