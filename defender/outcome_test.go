package defender_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/defender-enricher/defender-enricher/defender"
)

func TestCallOutcome(t *testing.T) {
	t.Parallel()
	api := func(status int) error { return &defender.APIError{StatusCode: status, Attempts: 1} }
	transport := func(err error) error { return &defender.TransportError{Attempts: 1, Err: err} }
	tests := []struct {
		name string
		err  error
		want defender.Outcome
	}{
		{"200", nil, defender.OutcomeSuccess},
		{"404", defender.ErrNotFound, defender.OutcomeSuccess},
		{"wrapped 404", fmt.Errorf("x: %w", defender.ErrNotFound), defender.OutcomeSuccess},
		{"401", api(401), defender.OutcomeSuccess},
		{"403", api(403), defender.OutcomeSuccess},
		{"400", api(400), defender.OutcomeSuccess},
		{"302", api(302), defender.OutcomeSuccess},
		{"501", api(501), defender.OutcomeSuccess},

		{"500", api(500), defender.OutcomeFailure},
		{"502", api(502), defender.OutcomeFailure},
		{"503", api(503), defender.OutcomeFailure},
		{"504", api(504), defender.OutcomeFailure},
		{"408", api(408), defender.OutcomeFailure},
		{"connection reset", transport(&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}), defender.OutcomeFailure},
		{"connection refused", transport(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), defender.OutcomeFailure},
		{"timeout", transport(fmt.Errorf("Get: %w", context.DeadlineExceeded)), defender.OutcomeFailure},
		{"cut short", transport(io.ErrUnexpectedEOF), defender.OutcomeFailure},

		{"429", api(429), defender.OutcomeNeutral},
		{"unknown authority", transport(x509.UnknownAuthorityError{}), defender.OutcomeNeutral},
		{"certificate does not verify", transport(&tls.CertificateVerificationError{Err: errors.New("expired")}), defender.OutcomeNeutral},
		{"no token", &defender.TokenError{Err: errors.New("AADSTS7000215: invalid client secret")}, defender.OutcomeNeutral},
		{"budget wait ended", fmt.Errorf("%w: waiting for the call budget: %w", defender.ErrUnavailable, context.DeadlineExceeded), defender.OutcomeNeutral},
		{"cancelled", context.Canceled, defender.OutcomeNeutral},
		{"invalid id", defender.ErrInvalidAlertID, defender.OutcomeNeutral},
		{"something else", errors.New("something else"), defender.OutcomeNeutral},
	}
	for _, tt := range tests {
		if got := defender.CallOutcome(tt.err); got != tt.want {
			t.Errorf("CallOutcome(%s: %v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
	for o, want := range map[defender.Outcome]string{
		defender.OutcomeNeutral: "neutral", defender.OutcomeSuccess: "success", defender.OutcomeFailure: "failure", 7: "unknown",
	} {
		if got := o.String(); got != want {
			t.Errorf("Outcome(%d).String() = %q, want %q", int(o), got, want)
		}
	}
}
