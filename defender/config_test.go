package defender_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/defender-enricher/defender-enricher/defender"
)

func TestResolveEndpoint(t *testing.T) {
	t.Parallel()
	const (
		commercial = "https://api.securitycenter.microsoft.com/.default"
		gcc        = "https://api-gcc.securitycenter.microsoft.us/.default"
		gov        = "https://api-gov.securitycenter.microsoft.us/.default"
	)
	type want struct {
		base, scope, authority string
		err                    string // a part of the error; "" for none
	}
	tests := []struct {
		url, scope, authority string
		want                  want
	}{
		{"", "", "", want{base: "https://api.securitycenter.microsoft.com", scope: commercial, authority: defender.AuthorityPublic}},
		{"https://API.SecurityCenter.Microsoft.com/", "", "", want{base: "https://API.SecurityCenter.Microsoft.com", scope: commercial, authority: defender.AuthorityPublic}},
		{"https://api.securitycenter.microsoft.com//", "", "", want{base: "https://api.securitycenter.microsoft.com", scope: commercial, authority: defender.AuthorityPublic}},
		{"https://api.securitycenter.microsoft.com:443", "", "", want{base: "https://api.securitycenter.microsoft.com:443", scope: commercial, authority: defender.AuthorityPublic}},
		{"https://api.security.microsoft.com", "", "", want{base: "https://api.security.microsoft.com", scope: commercial, authority: defender.AuthorityPublic}},
		{"https://api-eu.securitycenter.microsoft.com", "", "", want{base: "https://api-eu.securitycenter.microsoft.com", scope: commercial, authority: defender.AuthorityPublic}},
		{"https://api-us.securitycenter.microsoft.com", "", "", want{base: "https://api-us.securitycenter.microsoft.com", scope: commercial, authority: defender.AuthorityPublic}},
		{"https://api-uk.securitycenter.microsoft.com", "", "", want{base: "https://api-uk.securitycenter.microsoft.com", scope: commercial, authority: defender.AuthorityPublic}},
		{"https://api-au.securitycenter.microsoft.com", "", "", want{base: "https://api-au.securitycenter.microsoft.com", scope: commercial, authority: defender.AuthorityPublic}},
		{"https://us.api.security.microsoft.com", "", "", want{base: "https://us.api.security.microsoft.com", scope: commercial, authority: defender.AuthorityPublic}},
		{"https://eu.api.security.microsoft.com", "", "", want{base: "https://eu.api.security.microsoft.com", scope: commercial, authority: defender.AuthorityPublic}},
		{"https://uk.api.security.microsoft.com", "", "", want{base: "https://uk.api.security.microsoft.com", scope: commercial, authority: defender.AuthorityPublic}},
		{"https://au.api.security.microsoft.com", "", "", want{base: "https://au.api.security.microsoft.com", scope: commercial, authority: defender.AuthorityPublic}},
		{"https://swa.api.security.microsoft.com", "", "", want{base: "https://swa.api.security.microsoft.com", scope: commercial, authority: defender.AuthorityPublic}},
		{"https://ina.api.security.microsoft.com", "", "", want{base: "https://ina.api.security.microsoft.com", scope: commercial, authority: defender.AuthorityPublic}},
		// Government clouds.
		{"https://api-gcc.securitycenter.microsoft.us", "", "", want{base: "https://api-gcc.securitycenter.microsoft.us", scope: gcc, authority: defender.AuthorityPublic}},
		{"https://api-gov.securitycenter.microsoft.us", "", "", want{base: "https://api-gov.securitycenter.microsoft.us", scope: gov, authority: defender.AuthorityUSGov}},
		// Overrides.
		{"https://api.securitycenter.microsoft.com", "https://api.security.microsoft.com/.default", "", want{base: "https://api.securitycenter.microsoft.com", scope: "https://api.security.microsoft.com/.default", authority: defender.AuthorityPublic}},
		{"https://api-gov.securitycenter.microsoft.us", "api://custom/.default", "", want{base: "https://api-gov.securitycenter.microsoft.us", scope: "api://custom/.default", authority: defender.AuthorityUSGov}},
		{"https://api.securitycenter.microsoft.com", "", "https://login.example.test", want{base: "https://api.securitycenter.microsoft.com", scope: commercial, authority: "https://login.example.test/"}},
		{"https://api-gov.securitycenter.microsoft.us", "", "https://login.example.test/", want{base: "https://api-gov.securitycenter.microsoft.us", scope: gov, authority: "https://login.example.test/"}},
		// A host nobody vouched for needs a scope.
		{"https://defender.example.test", "", "", want{err: "ENRICHER_DEFENDER_SCOPE"}},
		{"https://api.securitycenter.microsoft.com.example.test", "", "", want{err: "not a known Defender host"}},
		{"https://defender.example.test/proxy/", "https://defender.example.test/.default", "", want{base: "https://defender.example.test/proxy", scope: "https://defender.example.test/.default", authority: defender.AuthorityPublic}},
		{"https://127.0.0.1:8443", "https://127.0.0.1:8443/.default", "https://127.0.0.1:8444/", want{base: "https://127.0.0.1:8443", scope: "https://127.0.0.1:8443/.default", authority: "https://127.0.0.1:8444/"}},
		// Refused.
		{"http://api.securitycenter.microsoft.com", "", "", want{err: "must be https"}},
		{"http://defender.example.test", "https://defender.example.test/.default", "", want{err: "must be https"}},
		{"api.securitycenter.microsoft.com", "", "", want{err: "not a URL"}},
		{"https://", "", "", want{err: "not a URL"}},
		{"https://user:pw@api.securitycenter.microsoft.com", "", "", want{err: "no user info"}},
		{"https://api.securitycenter.microsoft.com?x=1", "", "", want{err: "no user info, query or fragment"}},
		{"https://api.securitycenter.microsoft.com#x", "", "", want{err: "no user info, query or fragment"}},
		{"https://api.securitycenter.microsoft.com", "User.Read.All", "", want{err: "ENRICHER_DEFENDER_SCOPE must be a resource scope"}},
		{"https://api.securitycenter.microsoft.com", "", "http://login.example.test/", want{err: "AZURE_AUTHORITY_HOST"}},
		{"https://api.securitycenter.microsoft.com", "", "login.example.test", want{err: "AZURE_AUTHORITY_HOST"}},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s|%s|%s", tt.url, tt.scope, tt.authority)
		ep, err := defender.ResolveEndpoint(tt.url, tt.scope, tt.authority)
		if tt.want.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.want.err) {
				t.Errorf("%s: error %v, want one containing %q", name, err, tt.want.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := ep.BaseURL.String(); got != tt.want.base {
			t.Errorf("%s: BaseURL %q, want %q", name, got, tt.want.base)
		}
		if ep.Scope != tt.want.scope || ep.AuthorityHost != tt.want.authority {
			t.Errorf("%s: scope %q authority %q, want %q %q", name, ep.Scope, ep.AuthorityHost, tt.want.scope, tt.want.authority)
		}
	}
}

// refusingTransport fails every request and counts them: credentials built
// with it prove that construction does no network I/O.
type refusingTransport struct{ requests atomic.Int32 }

func (rt *refusingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.requests.Add(1)
	return nil, fmt.Errorf("no network I/O expected, got %s %s", r.Method, r.URL)
}

func TestNewCredential(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("eyJ.fake.jwt"), 0o600); err != nil {
		t.Fatal(err)
	}
	all := map[string]string{
		"AZURE_TENANT_ID":               "8c3f5d2e-6b1a-4f7e-9d0c-2a4b6e8f1c3d",
		"AZURE_CLIENT_ID":               "3f9e1b7a-5c2d-4e8f-a1b3-c5d7e9f0a2b4",
		"AZURE_CLIENT_SECRET":           "secret",
		"AZURE_CLIENT_CERTIFICATE_PATH": garbage,
		"AZURE_FEDERATED_TOKEN_FILE":    tokenFile,
	}
	without := func(names ...string) map[string]string {
		m := make(map[string]string, len(all))
		for k, v := range all {
			m[k] = v
		}
		for _, n := range names {
			delete(m, n)
		}
		return m
	}
	tests := []struct {
		kind    defender.CredentialKind
		env     map[string]string
		wantErr string // "" for success
	}{
		{defender.CredentialClientSecret, without("AZURE_TENANT_ID"), "AZURE_TENANT_ID"},
		{defender.CredentialClientSecret, without("AZURE_CLIENT_ID"), "AZURE_CLIENT_ID"},
		{defender.CredentialClientSecret, without("AZURE_CLIENT_SECRET"), "AZURE_CLIENT_SECRET"},
		{defender.CredentialClientSecret, map[string]string{}, "needs AZURE_TENANT_ID"},
		{defender.CredentialClientSecret, all, ""},
		{defender.CredentialClientCert, without("AZURE_TENANT_ID"), "AZURE_TENANT_ID"},
		{defender.CredentialClientCert, without("AZURE_CLIENT_ID"), "AZURE_CLIENT_ID"},
		{defender.CredentialClientCert, without("AZURE_CLIENT_CERTIFICATE_PATH"), "AZURE_CLIENT_CERTIFICATE_PATH"},
		{defender.CredentialClientCert, all, "AZURE_CLIENT_CERTIFICATE_PATH " + garbage},
		{defender.CredentialClientCert, map[string]string{
			"AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_CLIENT_CERTIFICATE_PATH": filepath.Join(dir, "missing.pem"),
		}, "AZURE_CLIENT_CERTIFICATE_PATH"},
		{defender.CredentialWorkloadIdentity, without("AZURE_TENANT_ID"), "AZURE_TENANT_ID"},
		{defender.CredentialWorkloadIdentity, without("AZURE_CLIENT_ID"), "AZURE_CLIENT_ID"},
		{defender.CredentialWorkloadIdentity, without("AZURE_FEDERATED_TOKEN_FILE"), "AZURE_FEDERATED_TOKEN_FILE"},
		{defender.CredentialWorkloadIdentity, all, ""},
		{defender.CredentialManagedIdentity, map[string]string{}, ""},
		{defender.CredentialManagedIdentity, all, ""},
		{"kerberos", all, `"kerberos" is not one of`},
	}
	for _, tt := range tests {
		rt := &refusingTransport{}
		var read []string
		cred, err := defender.NewCredential(tt.kind, defender.CredentialOptions{
			AuthorityHost:            "https://login.example.test/",
			DisableInstanceDiscovery: true,
			HTTPClient:               &http.Client{Transport: rt},
			Getenv: func(name string) string {
				read = append(read, name)
				return tt.env[name]
			},
		})
		name := fmt.Sprintf("%s with %d variables", tt.kind, len(tt.env))
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case tt.wantErr == "" && cred == nil:
			t.Errorf("%s: no credential", name)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: error %v, want one containing %q", name, err, tt.wantErr)
		}
		if n := rt.requests.Load(); n != 0 {
			t.Errorf("%s: %d requests while building a credential", name, n)
		}
		for _, v := range read {
			if !strings.HasPrefix(v, "AZURE_") {
				t.Errorf("%s: read variable %s", name, v)
			}
		}
	}
}

func TestErrorMessages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want []string
	}{
		{&defender.APIError{StatusCode: 401, Attempts: 2}, []string{"401 Unauthorized", "after 2 attempts", "ENRICHER_DEFENDER_SCOPE"}},
		{&defender.APIError{StatusCode: 403, Code: "Forbidden", Message: "no", Target: "c0ffee"}, []string{"403 Forbidden: Forbidden: no", "(correlation id c0ffee)", "User.Read.All"}},
		{&defender.APIError{StatusCode: 429}, []string{"429 Too Many Requests", "ENRICHER_DEFENDER_RATE_LIMITS"}},
		{&defender.APIError{StatusCode: 503, Attempts: 4}, []string{"503 Service Unavailable after 4 attempts"}},
		{&defender.TransportError{Attempts: 4, Err: io.ErrUnexpectedEOF}, []string{"failed after 4 attempts: unexpected EOF"}},
		{&defender.TransportError{Attempts: 1, Err: io.ErrUnexpectedEOF}, []string{"failed: unexpected EOF"}},
		{&defender.TokenError{Err: errors.New("AADSTS7000215")}, []string{"no access token: AADSTS7000215", "AZURE_"}},
	}
	for _, tt := range tests {
		msg := tt.err.Error()
		for _, w := range tt.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%q lacks %q", msg, w)
			}
		}
	}
	te := &defender.TransportError{Err: io.ErrUnexpectedEOF}
	if !errors.Is(te, io.ErrUnexpectedEOF) {
		t.Error("TransportError does not unwrap")
	}
	tok := &defender.TokenError{Err: io.ErrUnexpectedEOF}
	if !errors.Is(tok, io.ErrUnexpectedEOF) {
		t.Error("TokenError does not unwrap")
	}
}
