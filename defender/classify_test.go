package defender_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/defender-enricher/defender-enricher/clock"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/simulator"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	api := func(status int) error { return &defender.APIError{StatusCode: status, Attempts: 1} }
	entra := func(status int) error {
		return &defender.TokenError{Err: &azidentity.AuthenticationFailedError{RawResponse: &http.Response{StatusCode: status}}}
	}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name string
		err  error
		want defender.Class
	}{
		{"nil", nil, defender.Found},
		{"not found", defender.ErrNotFound, defender.NotFound},
		{"wrapped not found", fmt.Errorf("x: %w", defender.ErrNotFound), defender.NotFound},

		{"500", api(500), defender.Transient},
		{"502", api(502), defender.Transient},
		{"503", api(503), defender.Transient},
		{"504", api(504), defender.Transient},
		{"wrapped 503", fmt.Errorf("lookup: %w", api(503)), defender.Transient},
		{"429", api(429), defender.Transient},
		{"408", api(408), defender.Transient},
		{"unavailable", defender.ErrUnavailable, defender.Transient},
		{"breaker open", fmt.Errorf("%w: circuit breaker open", defender.ErrUnavailable), defender.Transient},
		{"budget wait ended", fmt.Errorf("%w: waiting for the call budget: %w", defender.ErrUnavailable, context.DeadlineExceeded), defender.Transient},
		{"gave up retrying a 503", fmt.Errorf("%w: %w: gave up retrying after %s", defender.ErrUnavailable, context.Canceled, api(503)), defender.Transient},
		{"cancelled", context.Canceled, defender.Transient},
		{"call timed out", context.DeadlineExceeded, defender.Transient},
		{"transport", &defender.TransportError{Attempts: 4, Err: io.ErrUnexpectedEOF}, defender.Transient},
		{"transport timeout", &defender.TransportError{Attempts: 1, Err: fmt.Errorf("Get: %w", context.DeadlineExceeded)}, defender.Transient},
		{"connection refused", refused, defender.Transient},
		{"Entra 500", entra(500), defender.Transient},
		{"Entra 503", entra(503), defender.Transient},
		{"Entra 429", entra(429), defender.Transient},
		{"Entra unreachable", &defender.TokenError{Err: refused}, defender.Transient},
		{"Entra timed out", &defender.TokenError{Err: fmt.Errorf("POST: %w", context.DeadlineExceeded)}, defender.Transient},

		{"400", api(400), defender.Permanent},
		{"401", api(401), defender.Permanent},
		{"403", api(403), defender.Permanent},
		{"302", api(302), defender.Permanent},
		{"501", api(501), defender.Permanent},
		{"invalid id", defender.ErrInvalidAlertID, defender.Permanent},
		{"certificate", &defender.TransportError{Attempts: 1, Err: x509.UnknownAuthorityError{}}, defender.Permanent},
		{"Entra 400 (unknown tenant)", entra(400), defender.Permanent},
		{"Entra 401 (invalid_client)", entra(401), defender.Permanent},
		{"credential unavailable", &defender.TokenError{Err: azidentity.NewCredentialUnavailableError("no managed identity")}, defender.Permanent},
		{"managed identity endpoint timed out", &defender.TokenError{Err: azidentity.NewCredentialUnavailableError("managed identity timed out. See https://aka.ms/azsdk/go/identity/troubleshoot#dac for more information")}, defender.Transient},
		{"managed identity endpoint unreachable", &defender.TokenError{Err: azidentity.NewCredentialUnavailableError("failed to authenticate a system assigned identity. The endpoint responded with dial tcp 127.0.0.1:1: connect: connection refused")}, defender.Transient},
		{"credential failed without an answer", &defender.TokenError{Err: &azidentity.AuthenticationFailedError{}}, defender.Permanent},
		{"token, unknown", &defender.TokenError{Err: errors.New("AADSTS7000215: invalid client secret")}, defender.Permanent},
		{"something else", errors.New("something else"), defender.Permanent},
	}
	for _, tt := range tests {
		if got := defender.Classify(tt.err); got != tt.want {
			t.Errorf("Classify(%s: %v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// credentialFor is a client-secret credential built as the connector builds
// it, against authority, through hc.
func credentialFor(t *testing.T, s *simulator.Server, authority, secret string, hc *http.Client) *defender.Options {
	t.Helper()
	vars := map[string]string{"AZURE_TENANT_ID": s.TenantID(), "AZURE_CLIENT_ID": s.ClientID(), "AZURE_CLIENT_SECRET": secret}
	cred, err := defender.NewCredential(defender.CredentialClientSecret, defender.CredentialOptions{
		AuthorityHost: authority, DisableInstanceDiscovery: true, HTTPClient: hc,
		Getenv: func(k string) string { return vars[k] },
	})
	if err != nil {
		t.Fatal(err)
	}
	o := testOptions(t, s)
	o.Credential = cred
	return &o
}

// TestTokenErrorsAgainstEntra: a secret the simulated Entra ID refuses is
// Permanent, with a short account for the SIEM that keeps Entra's status,
// error code, AADSTS code and correlation id; an Entra ID that cannot be
// reached is Transient.
func TestTokenErrorsAgainstEntra(t *testing.T) {
	t.Parallel()
	s := newSimulator(t)

	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, *credentialFor(t, s, s.AuthorityHost(), "wrong-secret", s.Client()))
		_, err := c.User(context.Background(), alertA)
		var tok *defender.TokenError
		if !errors.As(err, &tok) {
			t.Fatalf("got %v, want a TokenError", err)
		}
		if c := defender.Classify(err); c != defender.Permanent {
			t.Fatalf("a refused secret is %v, want permanent: %v", c, err)
		}
		text := defender.ErrorText(err)
		t.Logf("ErrorText: %s", text)
		checkBounded(t, text)
		for _, want := range []string{"no access token", "ClientSecretCredential", "401", "invalid_client", "AADSTS7000215", "correlation id "} {
			if !strings.Contains(text, want) {
				t.Errorf("ErrorText = %q lacks %q", text, want)
			}
		}
		if !strings.Contains(err.Error(), "\n") || len(err.Error()) <= len(text) {
			t.Errorf("the full account for the log was lost: %q", err.Error())
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		// A port on 127.0.0.1 that nothing listens on.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := ln.Addr().String()
		ln.Close()
		o := credentialFor(t, s, "https://"+closed+"/", s.ClientSecret(), defender.NewHTTPClient(nil))
		o.AttemptTimeout = 20 * time.Second
		c := newClient(t, *o)
		_, err = c.User(context.Background(), alertA)
		var tok *defender.TokenError
		if !errors.As(err, &tok) {
			t.Fatalf("got %v, want a TokenError", err)
		}
		if c := defender.Classify(err); c != defender.Transient {
			t.Fatalf("an unreachable Entra ID is %v, want transient: %v", c, err)
		}
		checkBounded(t, defender.ErrorText(err))
	})
}

// TestClassifyDefenderAnswers: the simulator's refusals are Permanent, its
// outages and throttling Transient.
func TestClassifyDefenderAnswers(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		setup func(*simulator.Server)
		want  defender.Class
	}{
		{"found", func(*simulator.Server) {}, defender.Found},
		{"404", func(s *simulator.Server) { s.SetNotFound(alertA) }, defender.NotFound},
		{"403", func(s *simulator.Server) { s.SetForbidden(true) }, defender.Permanent},
		{"503", func(s *simulator.Server) { s.SetOutage(503) }, defender.Transient},
		{"429 on every attempt", func(s *simulator.Server) { s.ThrottleNext(10, "1") }, defender.Transient},
		{"connection reset", func(s *simulator.Server) { s.SetConnectionReset(true) }, defender.Transient},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSimulator(t)
			tt.setup(s)
			o := testOptions(t, s)
			o.MaxAttempts = 2
			o.MaxRetryAfter = time.Millisecond
			_, err := newClient(t, o).User(context.Background(), alertA)
			if c := defender.Classify(err); c != tt.want {
				t.Fatalf("%v: %v, want %v", err, c, tt.want)
			}
			checkBounded(t, defender.ErrorText(err))
		})
	}
}

// TestSharedRefusalIsReadSafely: the refusal the client hands to every
// lookup during its hold is read by many goroutines at once (each event's
// ErrorText, the log); reading it must not touch azidentity's response.
func TestSharedRefusalIsReadSafely(t *testing.T) {
	t.Parallel()
	s := newSimulator(t)
	c := newClient(t, *credentialFor(t, s, s.AuthorityHost(), "wrong-secret", s.Client()))
	if _, err := c.User(context.Background(), alertA); defender.Classify(err) != defender.Permanent {
		t.Fatalf("first lookup: %v, want the refusal", err)
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			_, err := c.User(context.Background(), alertA)
			if text := defender.ErrorText(err); !strings.Contains(text, "invalid_client") || !strings.Contains(err.Error(), "invalid_client") {
				t.Errorf("ErrorText %q / Error %q", text, err)
			}
		})
	}
	wg.Wait()
}

// TestRefusedCredentialIsNotAskedAgain: once Entra ID refused the secret,
// lookups fail at once with that refusal for RefusalHold, so that a wrong
// secret costs one token request per hold, not one per alert; after it, the
// credential is asked again.
func TestRefusedCredentialIsNotAskedAgain(t *testing.T) {
	t.Parallel()
	s := newSimulator(t)
	clk := clock.NewManual(time.Now())
	o := credentialFor(t, s, s.AuthorityHost(), "wrong-secret", s.Client())
	o.Clock, o.RefusalHold = clk, time.Minute
	c := newClient(t, *o)
	for i := range 20 {
		_, err := c.User(context.Background(), alertA)
		if defender.Classify(err) != defender.Permanent {
			t.Fatalf("lookup %d: %v, want the permanent refusal", i, err)
		}
	}
	if n := s.TokenRequests(); n != 1 {
		t.Fatalf("%d token requests for 20 lookups with a refused secret, want 1", n)
	}
	if n := len(s.Calls()); n != 0 {
		t.Fatalf("%d API calls without a token", n)
	}
	clk.Advance(time.Minute)
	if _, err := c.User(context.Background(), alertA); defender.Classify(err) != defender.Permanent {
		t.Fatalf("after the hold: %v", err)
	}
	if n := s.TokenRequests(); n != 2 {
		t.Fatalf("%d token requests after the hold, want 2", n)
	}
}
