package simulator_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/defender-enricher/defender-enricher/simulator"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func start(t *testing.T, opts simulator.Options) *simulator.Server {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	s, err := simulator.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func token(t *testing.T, s *simulator.Server) string {
	t.Helper()
	cred, err := s.Credential()
	if err != nil {
		t.Fatal(err)
	}
	return tokenFrom(t, s, cred)
}

func tokenFrom(t *testing.T, s *simulator.Server, cred azcore.TokenCredential) string {
	t.Helper()
	tok, err := cred.GetToken(t.Context(), policy.TokenRequestOptions{Scopes: []string{s.Scope()}})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
}

// do sends a request to Defender and decodes the JSON answer.
func do(t *testing.T, s *simulator.Server, method, path, tok string) reply {
	t.Helper()
	resp, err := doErr(t, s, method, path, tok)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := reply{status: resp.StatusCode, header: resp.Header}
	if err := json.NewDecoder(resp.Body).Decode(&r.body); err != nil {
		t.Fatalf("%s %s: %d with a body that is not JSON: %v", method, path, resp.StatusCode, err)
	}
	return r
}

func doErr(t *testing.T, s *simulator.Server, method, path, tok string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.URL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return s.Client().Do(req)
}

func userPath(id string) string { return "/api/alerts/" + id + "/user" }

// checkAPIError asserts the Defender error shape: {"error":{"code","message","target"}}.
func checkAPIError(t *testing.T, r reply, code string) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	e, ok := r.body["error"].(map[string]any)
	if !ok || len(r.body) != 1 || len(e) != 3 {
		t.Fatalf("error body = %v", r.body)
	}
	if e["code"] != code {
		t.Errorf("code = %v, want %s", e["code"], code)
	}
	if m, _ := e["message"].(string); m == "" {
		t.Errorf("empty message")
	}
	if target, _ := e["target"].(string); !uuidRE.MatchString(target) {
		t.Errorf("target = %v, want a uuid", e["target"])
	}
}

func TestDefenderAnswers(t *testing.T) {
	const id = "da637472900382838869_1364969609"
	custom := map[string]any{"id": "corp\\jdoe", "accountName": "jdoe", "accountDomain": "corp"}
	tests := []struct {
		name   string
		opts   simulator.Options
		setup  func(*simulator.Server)
		method string
		path   string
		token  string // "valid" (default), "none", "bogus" or "revoked"
		status int
		code   string // for error answers
		check  func(*testing.T, *simulator.Server, reply)
	}{
		{name: "synthetic user", status: 200, check: func(t *testing.T, s *simulator.Server, r reply) {
			want := simulator.SyntheticUser(id)
			want["@odata.context"] = s.URL() + "/api/$metadata#Users/$entity"
			b, _ := json.Marshal(want)
			var w map[string]any
			_ = json.Unmarshal(b, &w)
			if !equalJSON(r.body, w) {
				t.Errorf("body = %v\nwant %v", r.body, w)
			}
		}},
		{name: "SetUser", setup: func(s *simulator.Server) { s.SetUser(id, custom) }, status: 200,
			check: func(t *testing.T, s *simulator.Server, r reply) {
				if r.body["accountName"] != "jdoe" || r.body["id"] != `corp\jdoe` || len(r.body) != 4 {
					t.Errorf("body = %v", r.body)
				}
			}},
		{name: "Users option", opts: simulator.Options{Users: func(string) (map[string]any, bool) { return custom, true }}, status: 200,
			check: func(t *testing.T, s *simulator.Server, r reply) {
				if r.body["accountDomain"] != "corp" {
					t.Errorf("body = %v", r.body)
				}
			}},
		{name: "Users option without user", opts: simulator.Options{Users: func(string) (map[string]any, bool) { return nil, false }}, status: 404, code: "NotFound"},
		{name: "SetNotFound", setup: func(s *simulator.Server) { s.SetNotFound(id) }, status: 404, code: "NotFound",
			check: func(t *testing.T, s *simulator.Server, r reply) {
				if m := r.body["error"].(map[string]any)["message"].(string); !strings.Contains(m, id) {
					t.Errorf("message %q does not name the alert", m)
				}
			}},
		{name: "SetNotFound undone by SetUser nil", setup: func(s *simulator.Server) { s.SetNotFound(id); s.SetUser(id, nil) }, status: 200},
		{name: "no token", token: "none", status: 401, code: "Unauthorized"},
		{name: "unknown token", token: "bogus", status: 401, code: "Unauthorized"},
		{name: "revoked token", token: "revoked", status: 401, code: "Unauthorized"},
		{name: "outage", setup: func(s *simulator.Server) { s.SetOutage(503) }, status: 503, code: "ServiceUnavailable"},
		{name: "outage ended", setup: func(s *simulator.Server) { s.SetOutage(500); s.SetOutage(0) }, status: 200},
		{name: "forbidden", setup: func(s *simulator.Server) { s.SetForbidden(true) }, status: 403, code: "Forbidden",
			check: func(t *testing.T, s *simulator.Server, r reply) {
				if m := r.body["error"].(map[string]any)["message"].(string); !strings.Contains(m, "User.Read.All") {
					t.Errorf("message %q does not name User.Read.All", m)
				}
			}},
		{name: "unknown path", path: "/api/machines", status: 404, code: "NotFound"},
		{name: "path outside api", path: "/", token: "none", status: 404, code: "NotFound"},
		{name: "wrong method", method: http.MethodPost, status: 405, code: "MethodNotAllowed",
			check: func(t *testing.T, s *simulator.Server, r reply) {
				if a := r.header.Get("Allow"); a != "GET" {
					t.Errorf("Allow = %q", a)
				}
			}},
		{name: "token checked before outage", setup: func(s *simulator.Server) { s.SetOutage(503) }, token: "none", status: 401, code: "Unauthorized"},
		{name: "outage before forbidden", setup: func(s *simulator.Server) { s.SetForbidden(true); s.SetOutage(502) }, status: 502, code: "BadGateway"},
		{name: "forbidden before throttling", setup: func(s *simulator.Server) { s.ThrottleNext(1, "5"); s.SetForbidden(true) }, status: 403, code: "Forbidden"},
		{name: "throttling before not found", setup: func(s *simulator.Server) { s.SetNotFound(id); s.ThrottleNext(1, "5") }, status: 429, code: "TooManyRequests"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := start(t, tc.opts)
			var tok string
			switch tc.token {
			case "", "valid":
				tok = token(t, s)
			case "bogus":
				tok = "not-a-token-the-simulator-issued"
			case "revoked":
				tok = token(t, s)
				s.RevokeTokens()
			}
			if tc.setup != nil {
				tc.setup(s)
			}
			method, path := cmpOr(tc.method, http.MethodGet), cmpOr(tc.path, userPath(id))
			r := do(t, s, method, path, tok)
			if r.status != tc.status {
				t.Fatalf("status = %d, want %d; body %v", r.status, tc.status, r.body)
			}
			if tc.status == 200 {
				want := "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
				if ct := r.header.Get("Content-Type"); ct != want {
					t.Errorf("Content-Type = %q", ct)
				}
				if r.body["@odata.context"] != s.URL()+"/api/$metadata#Users/$entity" {
					t.Errorf("@odata.context = %v", r.body["@odata.context"])
				}
			} else {
				checkAPIError(t, r, tc.code)
			}
			if tc.check != nil {
				tc.check(t, s, r)
			}
		})
	}
}

func TestSyntheticUser(t *testing.T) {
	a, b := simulator.SyntheticUser("alert-1"), simulator.SyntheticUser("alert-1")
	if !equalJSON(a, b) {
		t.Fatalf("not deterministic: %v vs %v", a, b)
	}
	hex40 := regexp.MustCompile(`^[0-9a-f]{40}$`)
	sid := regexp.MustCompile(`^S-1-5-21-\d+-\d+-\d+-\d+$`)
	distinct := map[string]bool{}
	for i := range 200 {
		u := simulator.SyntheticUser("da63747290038283886" + strconv.Itoa(i))
		distinct[u["id"].(string)] = true
		if u["id"] != u["accountDomain"].(string)+`\`+u["accountName"].(string) {
			t.Errorf("id %v does not match domain and account", u["id"])
		}
		if !sid.MatchString(u["accountSid"].(string)) {
			t.Errorf("accountSid = %v", u["accountSid"])
		}
		first, err1 := time.Parse(time.RFC3339, u["firstSeen"].(string))
		last, err2 := time.Parse(time.RFC3339, u["lastSeen"].(string))
		if err1 != nil || err2 != nil || last.Before(first) || !strings.HasSuffix(u["lastSeen"].(string), "Z") {
			t.Errorf("firstSeen %v, lastSeen %v", u["firstSeen"], u["lastSeen"])
		}
		if !hex40.MatchString(u["mostPrevalentMachineId"].(string)) || !hex40.MatchString(u["leastPrevalentMachineId"].(string)) {
			t.Errorf("machine ids %v %v", u["mostPrevalentMachineId"], u["leastPrevalentMachineId"])
		}
		switch u["logonTypes"] {
		case "Network", "Interactive", "RemoteInteractive":
		default:
			t.Errorf("logonTypes = %v", u["logonTypes"])
		}
		if n := u["logOnMachinesCount"].(int); n < 1 {
			t.Errorf("logOnMachinesCount = %d", n)
		}
		if u["isOnlyNetworkUser"] != (u["logonTypes"] == "Network") {
			t.Errorf("isOnlyNetworkUser %v with logonTypes %v", u["isOnlyNetworkUser"], u["logonTypes"])
		}
		_ = u["isDomainAdmin"].(bool)
	}
	if len(distinct) < 100 {
		t.Errorf("only %d distinct users for 200 alerts", len(distinct))
	}
}

func TestCredential(t *testing.T) {
	t.Parallel()
	s := start(t, simulator.Options{})
	cred, err := s.Credential()
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	tok, err := cred.GetToken(t.Context(), policy.TokenRequestOptions{Scopes: []string{s.Scope()}})
	if err != nil {
		t.Fatal(err)
	}
	if d := tok.ExpiresOn.Sub(before); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("token expires in %s, want about an hour", d)
	}
	again := tokenFrom(t, s, cred)
	if again != tok.Token {
		t.Errorf("second GetToken returned another token")
	}
	if n := s.TokenRequests(); n != 1 {
		t.Errorf("TokenRequests = %d, want 1: MSAL should have served the second from its cache", n)
	}
	if r := do(t, s, http.MethodGet, userPath("a1"), tok.Token); r.status != 200 {
		t.Errorf("status = %d", r.status)
	}
}

// A credential built by hand, as the connector builds it, with a client of
// its own that trusts the simulator's CA.
func TestHandBuiltCredential(t *testing.T) {
	t.Parallel()
	s := start(t, simulator.Options{TenantID: "Contoso-Tenant.1", ClientID: "app", ClientSecret: "s3cret"})
	newCred := func(tenant, client, secret string) *azidentity.ClientSecretCredential {
		cred, err := azidentity.NewClientSecretCredential(tenant, client, secret, &azidentity.ClientSecretCredentialOptions{
			ClientOptions: azcore.ClientOptions{
				Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: s.AuthorityHost()},
				Transport: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CertPool()}}},
				Retry:     policy.RetryOptions{MaxRetries: -1},
			},
			DisableInstanceDiscovery: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		return cred
	}
	if tok := tokenFrom(t, s, newCred(s.TenantID(), s.ClientID(), s.ClientSecret())); tok == "" {
		t.Fatal("empty token")
	}

	for _, tc := range []struct {
		name, tenant, client, secret string
		status                       int
	}{
		{"wrong secret", s.TenantID(), s.ClientID(), "wrong", 401},
		{"wrong client", s.TenantID(), "other-app", s.ClientSecret(), 401},
		{"wrong tenant", "other-tenant", s.ClientID(), s.ClientSecret(), 400},
	} {
		_, err := newCred(tc.tenant, tc.client, tc.secret).GetToken(t.Context(), policy.TokenRequestOptions{Scopes: []string{s.Scope()}})
		var afe *azidentity.AuthenticationFailedError
		if !errors.As(err, &afe) {
			t.Errorf("%s: err = %v, want an AuthenticationFailedError", tc.name, err)
			continue
		}
		if afe.RawResponse == nil || afe.RawResponse.StatusCode != tc.status {
			t.Errorf("%s: response %v, want status %d", tc.name, afe.RawResponse, tc.status)
		}
	}
}

func TestTokenEndpointErrors(t *testing.T) {
	t.Parallel()
	s := start(t, simulator.Options{})
	post := func(tenant string, form url.Values) (int, map[string]any) {
		t.Helper()
		resp, err := s.Client().PostForm(s.AuthorityHost()+tenant+"/oauth2/v2.0/token", form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	form := func(mod func(url.Values)) url.Values {
		v := url.Values{
			"grant_type":    {"client_credentials"},
			"client_id":     {s.ClientID()},
			"client_secret": {s.ClientSecret()},
			"scope":         {s.Scope() + " openid offline_access profile"},
		}
		if mod != nil {
			mod(v)
		}
		return v
	}
	status, body := post(s.TenantID(), form(nil))
	if status != 200 || body["token_type"] != "Bearer" || body["expires_in"] != 3600.0 || body["ext_expires_in"] != 3600.0 || body["access_token"] == "" {
		t.Fatalf("success: %d %v", status, body)
	}
	for _, tc := range []struct {
		name   string
		tenant string
		mod    func(url.Values)
		status int
		code   string
		aadsts float64
	}{
		{"wrong secret", s.TenantID(), func(v url.Values) { v.Set("client_secret", "x") }, 401, "invalid_client", 7000215},
		{"no secret", s.TenantID(), func(v url.Values) { v.Del("client_secret") }, 401, "invalid_client", 7000215},
		{"wrong client", s.TenantID(), func(v url.Values) { v.Set("client_id", "x") }, 401, "unauthorized_client", 700016},
		{"wrong tenant", "other", nil, 401, "invalid_tenant", 90002},
		{"wrong grant", s.TenantID(), func(v url.Values) { v.Set("grant_type", "password") }, 400, "unsupported_grant_type", 70003},
		{"scope without .default", s.TenantID(), func(v url.Values) { v.Set("scope", "User.Read.All") }, 400, "invalid_scope", 1002012},
		{"no scope", s.TenantID(), func(v url.Values) { v.Del("scope") }, 400, "invalid_request", 900144},
	} {
		status, body := post(tc.tenant, form(tc.mod))
		if status != tc.status || body["error"] != tc.code {
			t.Errorf("%s: %d %v, want %d %s", tc.name, status, body["error"], tc.status, tc.code)
			continue
		}
		desc, _ := body["error_description"].(string)
		codes, _ := body["error_codes"].([]any)
		if !strings.HasPrefix(desc, "AADSTS"+strconv.Itoa(int(tc.aadsts))+": ") || len(codes) != 1 || codes[0] != tc.aadsts {
			t.Errorf("%s: error_description %q, error_codes %v", tc.name, desc, codes)
		}
		for _, k := range []string{"trace_id", "correlation_id"} {
			if v, _ := body[k].(string); !uuidRE.MatchString(v) {
				t.Errorf("%s: %s = %v", tc.name, k, body[k])
			}
		}
	}
	if n := s.TokenRequests(); n != 8 {
		t.Errorf("TokenRequests = %d, want 8", n)
	}
}

func TestOpenIDConfiguration(t *testing.T) {
	t.Parallel()
	s := start(t, simulator.Options{})
	get := func(path string) (int, map[string]any) {
		t.Helper()
		resp, err := s.Client().Get(s.AuthorityHost() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	status, body := get(s.TenantID() + "/v2.0/.well-known/openid-configuration")
	host := strings.TrimSuffix(s.AuthorityHost(), "/")
	if status != 200 ||
		body["issuer"] != host+"/"+s.TenantID()+"/v2.0" ||
		body["token_endpoint"] != host+"/"+s.TenantID()+"/oauth2/v2.0/token" ||
		body["authorization_endpoint"] != host+"/"+s.TenantID()+"/oauth2/v2.0/authorize" {
		t.Errorf("%d %v", status, body)
	}
	if status, body := get("other/v2.0/.well-known/openid-configuration"); status != 400 || body["error"] != "invalid_tenant" {
		t.Errorf("unknown tenant: %d %v", status, body)
	}
	if status, _ := get("common/discovery/instance"); status != 404 {
		t.Errorf("other path: %d", status)
	}
}

func TestShortTokenLifetime(t *testing.T) {
	t.Parallel()
	s := start(t, simulator.Options{TokenLifetime: time.Second})
	cred, err := s.Credential()
	if err != nil {
		t.Fatal(err)
	}
	old := tokenFrom(t, s, cred)
	if r := do(t, s, http.MethodGet, userPath("a1"), old); r.status != 200 {
		t.Fatalf("fresh token: %d", r.status)
	}
	time.Sleep(1100 * time.Millisecond)
	r := do(t, s, http.MethodGet, userPath("a1"), old)
	if r.status != 401 {
		t.Fatalf("expired token: %d", r.status)
	}
	checkAPIError(t, r, "Unauthorized")

	// A lifetime under MSAL's five minute margin is never served from cache.
	fresh := tokenFrom(t, s, cred)
	if fresh == old || s.TokenRequests() != 2 {
		t.Fatalf("MSAL served the expired token again (token requests: %d)", s.TokenRequests())
	}
	if r := do(t, s, http.MethodGet, userPath("a1"), fresh); r.status != 200 {
		t.Errorf("new token: %d", r.status)
	}

	s.SetTokenLifetime(time.Hour)
	tok, err := cred.GetToken(t.Context(), policy.TokenRequestOptions{Scopes: []string{s.Scope()}})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(tok.ExpiresOn); d < 59*time.Minute {
		t.Errorf("after SetTokenLifetime(1h) the token expires in %s", d)
	}
}

func TestRevokeTokens(t *testing.T) {
	t.Parallel()
	s := start(t, simulator.Options{})
	tok := token(t, s)
	s.RevokeTokens()
	if r := do(t, s, http.MethodGet, userPath("a1"), tok); r.status != 401 {
		t.Fatalf("revoked token: %d", r.status)
	}
	if r := do(t, s, http.MethodGet, userPath("a1"), token(t, s)); r.status != 200 {
		t.Fatalf("token issued after revocation: %d", r.status)
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	s := start(t, simulator.Options{})
	tok := token(t, s)
	s.SetRateLimit(2, time.Second)
	for i := range 2 {
		if r := do(t, s, http.MethodGet, userPath("a1"), tok); r.status != 200 {
			t.Fatalf("call %d: %d", i, r.status)
		}
	}
	r := do(t, s, http.MethodGet, userPath("a1"), tok)
	if r.status != 429 {
		t.Fatalf("over the limit: %d", r.status)
	}
	checkAPIError(t, r, "TooManyRequests")
	if ra := r.header.Get("Retry-After"); ra != "1" {
		t.Fatalf("Retry-After = %q, want 1", ra)
	}
	time.Sleep(time.Second)
	if r := do(t, s, http.MethodGet, userPath("a1"), tok); r.status != 200 {
		t.Errorf("after Retry-After: %d", r.status)
	}

	s.SetRateLimit(1, time.Minute)
	do(t, s, http.MethodGet, userPath("a1"), tok)
	r = do(t, s, http.MethodGet, userPath("a1"), tok)
	if n, err := strconv.Atoi(r.header.Get("Retry-After")); r.status != 429 || err != nil || n < 59 || n > 60 {
		t.Errorf("status %d, Retry-After %q, want 429 and 59 or 60", r.status, r.header.Get("Retry-After"))
	}
	s.SetRateLimit(0, 0)
	if r := do(t, s, http.MethodGet, userPath("a1"), tok); r.status != 200 {
		t.Errorf("limit disabled: %d", r.status)
	}
}

func TestThrottleNext(t *testing.T) {
	t.Parallel()
	s := start(t, simulator.Options{})
	tok := token(t, s)
	date := time.Now().Add(time.Minute).UTC().Format(http.TimeFormat)
	s.ThrottleNext(2, "7")
	for range 2 {
		r := do(t, s, http.MethodGet, userPath("a1"), tok)
		if r.status != 429 || r.header.Get("Retry-After") != "7" {
			t.Fatalf("%d, Retry-After %q", r.status, r.header.Get("Retry-After"))
		}
		checkAPIError(t, r, "TooManyRequests")
	}
	if r := do(t, s, http.MethodGet, userPath("a1"), tok); r.status != 200 {
		t.Fatalf("after the throttled calls: %d", r.status)
	}
	s.ThrottleNext(1, date)
	if r := do(t, s, http.MethodGet, userPath("a1"), tok); r.status != 429 || r.header.Get("Retry-After") != date {
		t.Errorf("%d, Retry-After %q, want %q", r.status, r.header.Get("Retry-After"), date)
	}
	// A throttled call does not spend a token-less call's turn.
	s.ThrottleNext(1, "1")
	if r := do(t, s, http.MethodGet, userPath("a1"), ""); r.status != 401 {
		t.Errorf("no token: %d", r.status)
	}
	if r := do(t, s, http.MethodGet, userPath("a1"), tok); r.status != 429 {
		t.Errorf("throttle pending: %d", r.status)
	}
}

func TestConnectionReset(t *testing.T) {
	t.Parallel()
	s := start(t, simulator.Options{})
	tok := token(t, s)
	s.SetConnectionReset(true)
	resp, err := doErr(t, s, http.MethodGet, userPath("a1"), tok)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got %d, want a connection error", resp.StatusCode)
	}
	t.Logf("client error: %v", err)
	for _, c := range s.Calls() {
		if c.Status != 0 || !c.TokenValid {
			t.Errorf("call %+v, want status 0 with a valid token", c)
		}
	}
	s.SetConnectionReset(false)
	if r := do(t, s, http.MethodGet, userPath("a1"), tok); r.status != 200 {
		t.Errorf("after the resets: %d", r.status)
	}
}

func TestCallsLog(t *testing.T) {
	t.Parallel()
	s := start(t, simulator.Options{})
	tok := token(t, s)
	s.SetNotFound("gone")
	t0 := time.Now()
	do(t, s, http.MethodGet, userPath("a1"), tok)
	do(t, s, http.MethodGet, userPath("gone"), tok)
	do(t, s, http.MethodGet, userPath("a2"), "")
	do(t, s, http.MethodGet, "/api/machines", tok)
	do(t, s, http.MethodGet, "/elsewhere", tok) // not under /api/: not logged

	want := []simulator.Call{
		{AlertID: "a1", Path: "/api/alerts/a1/user", Status: 200, TokenValid: true},
		{AlertID: "gone", Path: "/api/alerts/gone/user", Status: 404, TokenValid: true},
		{AlertID: "a2", Path: "/api/alerts/a2/user", Status: 401, TokenValid: false},
		{AlertID: "", Path: "/api/machines", Status: 404, TokenValid: true},
	}
	calls := s.Calls()
	if len(calls) != len(want) || s.CallCount() != len(want) {
		t.Fatalf("calls = %+v", calls)
	}
	prev := t0
	for i, c := range calls {
		if c.Time.Before(prev) || c.Time.After(time.Now()) {
			t.Errorf("call %d at %v, not in arrival order", i, c.Time)
		}
		prev = c.Time
		c.Time = time.Time{}
		if c != want[i] {
			t.Errorf("call %d = %+v, want %+v", i, c, want[i])
		}
	}

	// Time is the arrival, before Latency.
	s.ResetLog()
	if s.CallCount() != 0 || s.TokenRequests() != 0 {
		t.Fatalf("after ResetLog: %d calls, %d token requests", s.CallCount(), s.TokenRequests())
	}
	s.SetLatency(200 * time.Millisecond)
	sent := time.Now()
	do(t, s, http.MethodGet, userPath("a1"), tok)
	answered := time.Now()
	took := answered.Sub(sent)
	calls = s.Calls()
	if took < 200*time.Millisecond {
		t.Errorf("answer took %s despite a latency of 200ms", took)
	}
	// Logged at arrival: at least the latency before the answer came,
	// however long the request took to arrive.
	if len(calls) != 1 || calls[0].Time.Before(sent) || calls[0].Time.After(answered.Add(-200*time.Millisecond)) {
		t.Errorf("calls = %+v, sent at %v, answered at %v", calls, sent, answered)
	}
}

func TestCertificates(t *testing.T) {
	t.Parallel()
	s := start(t, simulator.Options{})
	block, _ := pem.Decode(s.CACertPEM())
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatal("CACertPEM is not a PEM certificate")
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !ca.IsCA {
		t.Fatalf("CA: %v, %v", ca, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, u := range []string{s.URL(), s.AuthorityHost()} {
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := client.Get(u)
		if err != nil {
			t.Fatalf("%s with the PEM CA: %v", u, err)
		}
		resp.Body.Close()
		client.CloseIdleConnections()
	}
	// Without the CA, TLS verification fails.
	untrusting := &http.Client{Transport: &http.Transport{}}
	if resp, err := untrusting.Get(s.URL()); err == nil {
		resp.Body.Close()
		t.Error("a client without the CA trusted the simulator")
	}
	untrusting.CloseIdleConnections()
}

func TestClientDialsOnlyTheSimulator(t *testing.T) {
	t.Parallel()
	s := start(t, simulator.Options{})
	resp, err := s.Client().Get("https://127.0.0.1:1/")
	if err == nil {
		resp.Body.Close()
		t.Fatal("the client reached another address")
	}
	if !strings.Contains(err.Error(), "refusing to dial") {
		t.Errorf("err = %v", err)
	}
}

func TestCredentialRefusesRegionalAuthority(t *testing.T) {
	t.Setenv("AZURE_REGIONAL_AUTHORITY_NAME", "westus2")
	s := start(t, simulator.Options{})
	if _, err := s.Credential(); err == nil {
		t.Fatal("Credential ignored AZURE_REGIONAL_AUTHORITY_NAME")
	}
}

func TestNewRejectsBadTenant(t *testing.T) {
	if s, err := simulator.New(simulator.Options{TenantID: "a/b"}); err == nil {
		s.Close()
		t.Fatal("New accepted a tenant id with a slash")
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	s, err := simulator.New(simulator.Options{Logf: t.Logf, Latency: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tok := token(t, s)
	req, err := http.NewRequest(http.MethodGet, s.URL()+userPath("a1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	errc := make(chan error, 1)
	go func() {
		resp, err := s.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	for s.CallCount() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	done := make(chan struct{})
	go func() { s.Close(); s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second): // the latency is an hour
		t.Fatal("Close waited for the latency")
	}
	if err := <-errc; err == nil {
		t.Error("the request in flight got an answer")
	}
	if resp, err := s.Client().Get(s.URL()); err == nil {
		resp.Body.Close()
		t.Error("the server answered after Close")
	}
}

// Switches flipped while calls are in flight, for the race detector.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	s := start(t, simulator.Options{Logf: func(string, ...any) {}})
	tok := token(t, s)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL()+userPath("a"+strconv.Itoa(i)), nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				if resp, err := s.Client().Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			s.SetOutage([]int{0, 503}[i%2])
			s.SetForbidden(i%3 == 0)
			s.SetConnectionReset(i%5 == 0)
			s.ThrottleNext(i%2, "1")
			s.SetRateLimit(i%4, time.Second)
			s.SetLatency(time.Duration(i%3) * time.Millisecond)
			s.SetUser("a1", map[string]any{"id": "x"})
			s.SetNotFound("a2")
			s.SetTokenLifetime(time.Hour)
			_ = s.Calls()
			_ = s.CallCount()
			_ = s.TokenRequests()
			if i%10 == 0 {
				s.ResetLog()
			}
			time.Sleep(time.Millisecond)
		}
	})
	wg.Wait()
}

func equalJSON(a, b map[string]any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
