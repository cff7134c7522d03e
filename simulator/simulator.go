// Package simulator serves look-alikes of Microsoft Entra ID and of the
// Microsoft Defender for Endpoint API over HTTPS on 127.0.0.1, in the spirit
// of net/http/httptest. Tests and the demo run the real azidentity
// credential and HTTP client code against it, including the failures of the
// real services, without anything leaving the machine.
//
// Every Server has a certificate authority of its own that nothing trusts
// unless handed CertPool or CACertPEM. Entra ID and Defender listen on two
// ports, as they are two hosts in production: AuthorityHost is the one,
// URL the other.
//
// Entra ID answers what MSAL for Go asks when instance discovery is
// disabled: the tenant's OpenID configuration and the client credentials
// grant of the v2.0 token endpoint. Defender answers
// GET /api/alerts/{id}/user; Server documents the order in which its
// behaviour switches apply.
package simulator

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// Defaults used by New for the zero fields of Options.
const (
	DefaultTenantID      = "8c3f5d2e-6b1a-4f7e-9d0c-2a4b6e8f1c3d"
	DefaultClientID      = "3f9e1b7a-5c2d-4e8f-a1b3-c5d7e9f0a2b4"
	DefaultClientSecret  = "simulator-secret"
	DefaultTokenLifetime = time.Hour
)

// Options configures New. The zero value is ready to use.
type Options struct {
	// TenantID, ClientID and ClientSecret are the only credentials the
	// token endpoint accepts. They default to DefaultTenantID,
	// DefaultClientID and DefaultClientSecret. TenantID may hold only
	// letters, digits, '.' and '-', as azidentity demands, and is compared
	// without regard to case because MSAL lowercases the authority.
	TenantID, ClientID, ClientSecret string

	// TokenLifetime is how long an issued token is accepted by Defender,
	// reported to the client as expires_in (in whole seconds, rounded up).
	// Zero or less means DefaultTokenLifetime. MSAL for Go never serves a
	// cached token that expires within five minutes, so with a lifetime of
	// 300s or less every GetToken call reaches the token endpoint anew;
	// tests of expiring tokens rely on that.
	TokenLifetime time.Duration

	// Latency delays every Defender answer, error answers and connection
	// resets included. Entra ID answers without delay.
	Latency time.Duration

	// Users supplies the user related to an alert; ok false makes
	// Defender answer 404. Nil means SyntheticUser for every alert id, a
	// user of its own for almost every alert; UserPool.Users gives many
	// alerts one user instead, as a real tenant does.
	// SetUser and SetNotFound take precedence over it. Users is called
	// from many goroutines at once and must not modify the map it returns
	// afterwards.
	Users func(alertID string) (user map[string]any, ok bool)

	// Logf, if not nil, receives a line per answer and the HTTP servers'
	// own error messages (failed TLS handshakes, for instance). It is
	// never called after Close returns, so t.Logf is safe.
	Logf func(format string, args ...any)
}

// Call is one request to Defender's /api/ paths, as recorded by the Server.
type Call struct {
	// Time is when the request arrived, before any Latency.
	Time time.Time
	// AlertID is the {id} of /api/alerts/{id}/user, or "" for other paths.
	AlertID string
	// Path is the request's URL path.
	Path string
	// Status is the status answered, or 0 when the connection was reset
	// without an answer.
	Status int
	// TokenValid reports whether the request carried a token the Server
	// issued that was neither expired nor revoked.
	TokenValid bool
}

// Server is a running simulator. Its methods are safe for concurrent use,
// including while requests are being served; a behaviour switch takes
// effect for requests arriving after it returns.
//
// Defender decides each request at its arrival, in this order:
//
//  1. a missing, unknown, expired or revoked token: 401 Unauthorized;
//  2. SetConnectionReset: the connection is closed without an answer;
//  3. SetOutage: the outage status;
//  4. SetForbidden: 403 Forbidden;
//  5. ThrottleNext, then SetRateLimit: 429 TooManyRequests with Retry-After;
//  6. a path other than /api/alerts/{id}/user: 404 NotFound, or 405
//     MethodNotAllowed for a method other than GET;
//  7. SetNotFound, or Options.Users reporting no user: 404 NotFound;
//  8. otherwise 200 with the user.
//
// Every error answer carries {"error":{"code","message","target"}} with a
// fresh uuid-shaped target, as the real API does.
type Server struct {
	// Set by New and never changed.
	tenantID, clientID, clientSecret string
	users                            func(string) (map[string]any, bool)
	logFunc                          func(string, ...any)
	caPEM                            []byte
	pool                             *x509.CertPool
	client                           *http.Client
	entra, defender                  *http.Server
	entraURL, apiURL                 string

	serving   sync.WaitGroup // the Serve goroutines
	active    sync.WaitGroup // handlers and Logf calls in flight; Add only under mu while !closed
	done      chan struct{}  // closed by Close to cut Latency short
	closeOnce sync.Once

	mu                 sync.Mutex // guards the fields below
	closed             bool
	tokenLifetime      time.Duration
	latency            time.Duration
	tokens             map[string]tokenInfo
	overrides          map[string]map[string]any // from SetUser
	notFound           map[string]bool           // from SetNotFound
	outage             int
	reset, forbidden   bool
	rateLimit          int
	rateWindow         time.Duration
	admitted           []time.Time // arrival times of calls let through the rate limit, oldest first
	throttleLeft       int
	throttleRetryAfter string
	calls              []Call
	logGeneration      uint64 // bumped by ResetLog so that late status updates skip a cleared log
	tokenRequests      int
}

// New starts a simulator on two free ports of 127.0.0.1 with a freshly made
// certificate authority. Call Close when done with it.
func New(opts Options) (*Server, error) {
	s := &Server{
		tenantID:      cmp.Or(opts.TenantID, DefaultTenantID),
		clientID:      cmp.Or(opts.ClientID, DefaultClientID),
		clientSecret:  cmp.Or(opts.ClientSecret, DefaultClientSecret),
		users:         opts.Users,
		logFunc:       opts.Logf,
		done:          make(chan struct{}),
		tokenLifetime: DefaultTokenLifetime,
		latency:       max(opts.Latency, 0),
		tokens:        map[string]tokenInfo{},
		overrides:     map[string]map[string]any{},
		notFound:      map[string]bool{},
	}
	if opts.TokenLifetime > 0 {
		s.tokenLifetime = opts.TokenLifetime
	}
	if !validTenantID(s.tenantID) {
		return nil, fmt.Errorf("simulator: tenant id %q: only letters, digits, '.' and '-' are allowed", s.tenantID)
	}

	c, err := newCertificates(time.Now())
	if err != nil {
		return nil, err
	}
	s.caPEM, s.pool = c.caPEM, c.pool

	entraLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("simulator: %w", err)
	}
	apiLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		entraLn.Close()
		return nil, fmt.Errorf("simulator: %w", err)
	}
	s.entraURL = "https://" + entraLn.Addr().String()
	s.apiURL = "https://" + apiLn.Addr().String()
	s.client = newClient(s.pool, entraLn.Addr().String(), apiLn.Addr().String())

	s.entra = s.newHTTPServer(c.leaf, s.serveEntra)
	s.defender = s.newHTTPServer(c.leaf, s.serveDefender)
	s.serve(s.entra, entraLn)
	s.serve(s.defender, apiLn)
	return s, nil
}

func (s *Server) newHTTPServer(cert tls.Certificate, h http.HandlerFunc) *http.Server {
	errorLog := log.New(io.Discard, "", 0)
	if s.logFunc != nil {
		errorLog = log.New(logWriter(s.logf), "simulator: ", 0)
	}
	return &http.Server{
		Handler: s.guard(h),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"http/1.1"},
		},
		// HTTP/1.1 only: a connection reset needs Hijack, which HTTP/2
		// does not offer.
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          errorLog,
	}
}

func (s *Server) serve(srv *http.Server, ln net.Listener) {
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		// ServeTLS only ever returns http.ErrServerClosed or a listener
		// error after Close, neither of which anyone could act on.
		_ = srv.ServeTLS(ln, "", "")
	}()
}

// guard lets Close wait for every handler.
func (s *Server) guard(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.enter() {
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		defer s.active.Done()
		h(w, r)
	})
}

// enter counts an activity Close has to wait for, unless Close has begun.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.active.Add(1)
	return true
}

// Close stops both listeners, closes every connection, cuts any Latency
// short and returns once no handler is running any more. Requests in flight
// get no answer. Close may be called more than once, but not from
// Options.Users or Options.Logf, which it would wait for.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		// Connections first, so that a handler cut short by done cannot
		// get an empty answer out.
		s.entra.Close()
		s.defender.Close()
		close(s.done)
		s.active.Wait()
		s.serving.Wait()
		s.client.CloseIdleConnections()
	})
}

// URL returns the Defender API base URL, https://127.0.0.1:PORT, without a
// trailing slash.
func (s *Server) URL() string { return s.apiURL }

// AuthorityHost returns the Entra ID authority host,
// https://127.0.0.1:PORT/, with the trailing slash that
// cloud.Configuration.ActiveDirectoryAuthorityHost expects.
func (s *Server) AuthorityHost() string { return s.entraURL + "/" }

// TenantID returns the only tenant the token endpoint knows.
func (s *Server) TenantID() string { return s.tenantID }

// ClientID returns the only client id the token endpoint accepts.
func (s *Server) ClientID() string { return s.clientID }

// ClientSecret returns the only client secret the token endpoint accepts.
func (s *Server) ClientSecret() string { return s.clientSecret }

// Scope returns the scope to request tokens for: URL()+"/.default".
func (s *Server) Scope() string { return s.apiURL + "/.default" }

// CertPool returns a new pool holding only the simulator's CA, which signed
// the certificate both listeners present.
func (s *Server) CertPool() *x509.CertPool { return s.pool.Clone() }

// CACertPEM returns the simulator's CA certificate in PEM, for instance to
// write to a file named by SSL_CERT_FILE for a separately built binary.
func (s *Server) CACertPEM() []byte { return append([]byte(nil), s.caPEM...) }

// Client returns an HTTP client that verifies TLS against the simulator's
// CA only and ignores proxy settings. It dials nothing but the simulator's
// two listeners, so a misconfigured caller fails at once instead of
// reaching a real Microsoft host. It has no timeout of its own. Every call
// returns the same client; Close closes its idle connections.
func (s *Server) Client() *http.Client { return s.client }

// Credential returns a new azidentity.ClientSecretCredential for the
// simulator's tenant, client and secret, with instance discovery disabled,
// the authority host set to AuthorityHost and Client as its transport.
// Each credential has its own token cache.
//
// It refuses when AZURE_REGIONAL_AUTHORITY_NAME is set, because azidentity
// then makes MSAL look for a regional endpoint, which can mean the instance
// metadata service or a Microsoft host.
func (s *Server) Credential() (*azidentity.ClientSecretCredential, error) {
	if v := os.Getenv("AZURE_REGIONAL_AUTHORITY_NAME"); v != "" {
		return nil, errors.New("simulator: AZURE_REGIONAL_AUTHORITY_NAME is set; unset it so that token requests stay on the simulator")
	}
	return azidentity.NewClientSecretCredential(s.tenantID, s.clientID, s.clientSecret, &azidentity.ClientSecretCredentialOptions{
		ClientOptions: azcore.ClientOptions{
			Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: s.AuthorityHost()},
			Transport: s.client,
		},
		DisableInstanceDiscovery: true,
	})
}

// SetUser makes Defender answer user for alertID, overriding Options.Users
// and an earlier SetNotFound. The map is copied, its values are not. A nil
// user removes any SetUser or SetNotFound for alertID.
func (s *Server) SetUser(alertID string, user map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.notFound, alertID)
	delete(s.overrides, alertID)
	if user != nil {
		s.overrides[alertID] = maps.Clone(user)
	}
}

// SetNotFound makes Defender answer 404 for alertID, overriding
// Options.Users and an earlier SetUser.
func (s *Server) SetNotFound(alertID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.overrides, alertID)
	s.notFound[alertID] = true
}

// SetLatency replaces Options.Latency for requests arriving from now on.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = max(d, 0)
}

// SetOutage makes every authenticated Defender call answer status with the
// error body; 0 ends the outage. A status outside 400-599 counts as 503.
func (s *Server) SetOutage(status int) {
	if status != 0 && (status < 400 || status > 599) {
		status = http.StatusServiceUnavailable
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outage = status
}

// SetConnectionReset makes every authenticated Defender call end with the
// TCP connection reset and no answer, while on is true. Note that
// net/http retries an idempotent request once when a reused connection
// fails like this, so one client call may show as two Calls.
func (s *Server) SetConnectionReset(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reset = on
}

// SetForbidden makes every authenticated Defender call answer 403, naming
// the missing application permission User.Read.All, while on is true.
func (s *Server) SetForbidden(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forbidden = on
}

// SetRateLimit lets at most limit Defender calls through in any sliding
// window of the given length, counted by arrival time. A call over the
// limit answers 429 with a Retry-After of the whole seconds, at least 1,
// until a counted call leaves the window. Only calls that get as far as
// this check, in the order Server documents, count, and those answered 429
// do not. Setting a limit forgets the calls counted so far; a limit or
// window of zero or less disables limiting.
func (s *Server) SetRateLimit(limit int, window time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if limit <= 0 || window <= 0 {
		limit, window = 0, 0
	}
	s.rateLimit, s.rateWindow = limit, window
	s.admitted = nil
}

// ThrottleNext makes the next n Defender calls that get past the token,
// reset, outage and forbidden checks answer 429 with retryAfter as the
// Retry-After header, verbatim (delay seconds or an HTTP date; "" omits the
// header). It replaces any throttling still pending; n <= 0 cancels it.
func (s *Server) ThrottleNext(n int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttleLeft, s.throttleRetryAfter = max(n, 0), retryAfter
}

// SetTokenLifetime replaces Options.TokenLifetime for tokens issued from
// now on; tokens already issued keep the lifetime they were issued with.
// Zero or less means DefaultTokenLifetime.
func (s *Server) SetTokenLifetime(d time.Duration) {
	if d <= 0 {
		d = DefaultTokenLifetime
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenLifetime = d
}

// RevokeTokens makes every token issued so far answer 401. Credentials keep
// serving a revoked token from their cache until it nears expiry, as they
// would with the real service.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.tokens {
		t.revoked = true
		s.tokens[k] = t
	}
}

// Calls returns a copy of the log of requests to Defender's /api/ paths, in
// arrival order. A request whose user is still being looked up may show
// Status 0 for that moment.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// CallCount returns len(Calls()).
func (s *Server) CallCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// TokenRequests returns how many requests reached the token endpoint,
// whatever their outcome. OpenID configuration requests do not count.
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenRequests
}

// ResetLog empties Calls and zeroes TokenRequests. It leaves tokens, the
// rate limit's count and every behaviour switch as they are.
func (s *Server) ResetLog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
	s.logGeneration++
	s.tokenRequests = 0
}

// logf drops messages once Close has begun: the HTTP servers log from
// connection goroutines that Close cannot wait for, and t.Logf must not be
// called after its test has finished.
func (s *Server) logf(format string, args ...any) {
	if s.logFunc == nil || !s.enter() {
		return
	}
	defer s.active.Done()
	s.logFunc(format, args...)
}

type logWriter func(format string, args ...any)

func (f logWriter) Write(p []byte) (int, error) {
	f("%s", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func newClient(pool *x509.CertPool, allowed ...string) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			for _, a := range allowed {
				if addr == a {
					return dialer.DialContext(ctx, network, addr)
				}
			}
			return nil, fmt.Errorf("simulator: refusing to dial %s: this client only reaches the simulator", addr)
		},
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}}
}

func validTenantID(id string) bool {
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-') {
			return false
		}
	}
	return id != ""
}
