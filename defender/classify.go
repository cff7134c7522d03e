package defender

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// Class is what a lookup's outcome means for the alert waiting on it.
type Class int

// The classes Classify returns.
const (
	// Found: the user is known (a nil error).
	Found Class = iota
	// NotFound: the API answered 404.
	NotFound
	// Transient: the API or Entra ID is down, slow, unreachable or
	// throttling, or the lookup gave up waiting (breaker open, call budget
	// spent, caller's deadline): asking again later can succeed.
	Transient
	// Permanent: asking again will get the same answer until someone changes
	// the configuration: a 401 after a fresh token, a 403, another 4xx, a
	// credential Entra ID refuses or that cannot be used at all, a
	// certificate that does not verify, an answer that cannot be read, an
	// invalid alert id.
	Permanent
)

func (c Class) String() string {
	switch c {
	case Found:
		return "found"
	case NotFound:
		return "not_found"
	case Transient:
		return "transient"
	case Permanent:
		return "permanent"
	}
	return "unknown"
}

// Classify says what err, an error from Client.User or a lookup stack in
// front of it, means: the one place that decides whether waiting can help.
// The wait policy holds Transient lookups and publishes Permanent ones as
// failed at once; CallOutcome, what a call tells the breaker, follows it.
// An error Classify does not know is Permanent, so that nothing is held
// for ever on a guess.
//
// A token request is Transient when Entra ID gave no answer (connection
// failure, timeout) or answered 429 or 5xx, and Permanent when Entra ID
// answered anything else (invalid_client, unauthorized_client, an unknown
// tenant) or the credential could not even try (a missing variable, no
// managed identity, no Azure CLI sign-in).
func Classify(err error) Class {
	if err == nil {
		return Found
	}
	// The sentinels first: a lookup given up on (ErrUnavailable, a
	// cancelled or expired caller) can succeed later, whatever answer it
	// also carries.
	switch {
	case errors.Is(err, ErrNotFound):
		return NotFound
	case errors.Is(err, ErrInvalidAlertID):
		return Permanent
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.Canceled):
		return Transient
	}
	var tok *TokenError
	if errors.As(err, &tok) {
		return classifyToken(tok.Err)
	}
	var api *APIError
	if errors.As(err, &api) {
		return classifyStatus(api.StatusCode)
	}
	var te *TransportError
	if errors.As(err, &te) {
		if permanent(te.Err) {
			return Permanent
		}
		return Transient
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return Transient
	}
	return Permanent
}

// classifyStatus classifies an HTTP answer that is not 200 or 404.
func classifyStatus(status int) Class {
	switch {
	case status == http.StatusTooManyRequests, status == http.StatusRequestTimeout:
		return Transient
	case status == http.StatusNotImplemented:
		return Permanent
	case status >= 500:
		return Transient
	}
	return Permanent
}

// classifyToken tells a credential that cannot reach Entra ID from one that
// Entra ID refuses. azidentity reports both as an AuthenticationFailedError:
// with Entra's answer when there was one; without it when the request
// failed, keeping only the network error's text, and also when a developer
// tool (the Azure CLI) failed. So an error without an answer is Transient
// only when its text is a network failure's. A credential that could not
// try at all is azidentity's credentialUnavailableError, which is not
// exported: it too is Transient when its text is a network failure's or a
// timeout's (a managed identity endpoint not ready yet), and Permanent
// otherwise (a missing variable, no Azure CLI sign-in).
func classifyToken(err error) Class {
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return Transient
	}
	var af *azidentity.AuthenticationFailedError
	if errors.As(err, &af) && af.RawResponse != nil {
		return classifyStatus(af.RawResponse.StatusCode)
	}
	// No answer: a network failure's text, in an AuthenticationFailedError
	// or in a credential that could not try (a managed identity endpoint
	// that timed out while the node's agent starts), is Transient.
	msg := strings.ToLower(err.Error())
	for _, s := range networkFailures {
		if strings.Contains(msg, s) {
			return Transient
		}
	}
	return Permanent
}

// networkFailures are the texts of Go's network and timeout errors, as they
// appear in an azidentity error that kept no answer.
var networkFailures = []string{
	"dial tcp", "connection refused", "connection reset", "no such host", "i/o timeout",
	"network is unreachable", "no route to host", "server misbehaving", "broken pipe",
	"tls handshake", "unexpected eof", "context deadline exceeded", "timeout awaiting",
	"client.timeout exceeded", "timed out",
}
