package simulator

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"
)

// tokenInfo is what the simulator remembers of an access token it issued.
// Tokens are JWTs, as Entra ID's are, but unsigned (alg "none"): Defender
// looks them up rather than verifying them, and a Kafka broker configured
// for unsecured OAUTHBEARER tokens takes them as they are.
type tokenInfo struct {
	expires time.Time
	revoked bool
}

// tokenRetention is how long an expired token is remembered, so that it
// keeps being refused as expired rather than unknown.
const tokenRetention = time.Hour

// serveEntra answers the two requests MSAL for Go makes for a client
// credentials token once instance discovery is disabled.
func (s *Server) serveEntra(w http.ResponseWriter, r *http.Request) {
	tenant, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	switch rest {
	case "v2.0/.well-known/openid-configuration":
		s.serveOpenIDConfiguration(w, r, tenant)
	case "oauth2/v2.0/token":
		s.serveToken(w, r, tenant)
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) serveOpenIDConfiguration(w http.ResponseWriter, r *http.Request, tenant string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		s.writeEntraError(w, r, http.StatusMethodNotAllowed, "invalid_request", 900561, "The endpoint only accepts GET requests.")
		return
	}
	if !strings.EqualFold(tenant, s.tenantID) {
		s.writeEntraError(w, r, http.StatusBadRequest, "invalid_tenant", 90002,
			fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant))
		return
	}
	// MSAL requires authorization_endpoint, token_endpoint and issuer, and
	// accepts the issuer only on the authority's own scheme and host.
	base := s.entraURL + "/" + s.tenantID
	writeJSON(w, http.StatusOK, jsonContentType, map[string]any{
		"issuer":                                base + "/v2.0",
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	})
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, tenant string) {
	s.mu.Lock()
	s.tokenRequests++
	s.mu.Unlock()

	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		s.writeEntraError(w, r, http.StatusMethodNotAllowed, "invalid_request", 900561, "The endpoint only accepts POST requests.")
		return
	}
	if err := r.ParseForm(); err != nil {
		s.writeEntraError(w, r, http.StatusBadRequest, "invalid_request", 900144, "The request body must be form-urlencoded.")
		return
	}
	for _, p := range []string{"grant_type", "client_id", "scope"} {
		if r.PostForm.Get(p) == "" {
			s.writeEntraError(w, r, http.StatusBadRequest, "invalid_request", 900144,
				fmt.Sprintf("The request body must contain the following parameter: '%s'.", p))
			return
		}
	}
	if g := r.PostForm.Get("grant_type"); g != "client_credentials" {
		s.writeEntraError(w, r, http.StatusBadRequest, "unsupported_grant_type", 70003,
			fmt.Sprintf("The app requested an unsupported grant type '%s'.", g))
		return
	}
	if !validScope(r.PostForm.Get("scope")) {
		s.writeEntraError(w, r, http.StatusBadRequest, "invalid_scope", 1002012,
			fmt.Sprintf("The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", r.PostForm.Get("scope")))
		return
	}
	switch {
	case !strings.EqualFold(tenant, s.tenantID):
		s.writeEntraError(w, r, http.StatusUnauthorized, "invalid_tenant", 90002,
			fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant))
		return
	case r.PostForm.Get("client_id") != s.clientID:
		s.writeEntraError(w, r, http.StatusUnauthorized, "unauthorized_client", 700016,
			fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'.", r.PostForm.Get("client_id"), s.tenantID))
		return
	case r.PostForm.Get("client_secret") != s.clientSecret:
		s.writeEntraError(w, r, http.StatusUnauthorized, "invalid_client", 7000215,
			fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", s.clientID))
		return
	}

	token, lifetime := s.issueToken(time.Now(), tenant, r.PostForm.Get("scope"))
	seconds := max(int(math.Ceil(lifetime.Seconds())), 1)
	s.logf("simulator: entra issued a token for %s valid %s", s.clientID, lifetime)
	w.Header().Set("Cache-Control", "no-store, no-cache")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, jsonContentType, map[string]any{
		"token_type":     "Bearer",
		"expires_in":     seconds,
		"ext_expires_in": seconds,
		"access_token":   token,
	})
}

// validScope accepts what MSAL sends for a client credentials grant: one
// resource's "/.default" scope plus the OpenID scopes MSAL always appends.
func validScope(scope string) bool {
	defaults := 0
	for _, sc := range strings.Fields(scope) {
		switch {
		case sc == "openid" || sc == "offline_access" || sc == "profile":
		case strings.HasSuffix(sc, "/.default"):
			defaults++
		default:
			return false
		}
	}
	return defaults == 1
}

func (s *Server) issueToken(now time.Time, tenant, scope string) (string, time.Duration) {
	s.mu.Lock()
	lifetime := s.tokenLifetime
	s.mu.Unlock()
	audience := ""
	for _, sc := range strings.Fields(scope) {
		if r, ok := strings.CutSuffix(sc, "/.default"); ok {
			audience = r
		}
	}
	// The claims Entra ID's client-credentials tokens carry that a
	// resource checks, and a random jti that makes every token unique.
	claims, _ := json.Marshal(map[string]any{
		"aud": audience, "iss": s.entraURL + "/" + tenant + "/v2.0", "tid": tenant,
		"sub": s.clientID, "appid": s.clientID, "azp": s.clientID,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(lifetime).Unix(),
		"jti": rand.Text(),
	})
	b64 := base64.RawURLEncoding.EncodeToString
	token := b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64(claims) + "."
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.tokens {
		if now.Sub(t.expires) > tokenRetention {
			delete(s.tokens, k)
		}
	}
	s.tokens[token] = tokenInfo{expires: now.Add(lifetime)}
	return token, lifetime
}

// writeEntraError answers in the shape of Entra ID's OAuth errors.
func (s *Server) writeEntraError(w http.ResponseWriter, r *http.Request, status int, code string, aadsts int, description string) {
	traceID := newUUID()
	correlationID := r.Header.Get("client-request-id")
	if !uuidShaped(correlationID) {
		correlationID = newUUID()
	}
	now := time.Now().UTC().Format("2006-01-02 15:04:05Z")
	s.logf("simulator: entra %s %s: %d %s AADSTS%d", r.Method, r.URL.Path, status, code, aadsts)
	writeJSON(w, status, jsonContentType, map[string]any{
		"error":             code,
		"error_description": fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s", aadsts, description, traceID, correlationID, now),
		"error_codes":       []int{aadsts},
		"timestamp":         now,
		"trace_id":          traceID,
		"correlation_id":    correlationID,
		"error_uri":         fmt.Sprintf("%s/error?code=%d", s.entraURL, aadsts),
	})
}
