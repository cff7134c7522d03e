package simulator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	jsonContentType  = "application/json; charset=utf-8"
	odataContentType = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
)

// answer is what Defender decided for one request at its arrival.
type answer struct {
	status            int
	code, message     string
	retryAfter, allow string // headers, when not empty
	body              []byte // the 200 answer
	reset             bool
	latency           time.Duration
	alertID           string
	lookup            bool           // the user is yet to be found, outside the lock
	override          map[string]any // from SetUser, when lookup
	hasOverride       bool
}

func (a *answer) fail(status int, code, message string) {
	a.status, a.code, a.message = status, code, message
}

// callRef locates a Call whose Status is decided after it was logged.
type callRef struct {
	generation uint64
	index      int
}

func (s *Server) serveDefender(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api" && !strings.HasPrefix(r.URL.Path, "/api/") {
		writeAPIError(w, http.StatusNotFound, "NotFound", fmt.Sprintf("Resource %s not found.", r.URL.Path))
		return
	}
	a, ref := s.decide(r)
	if a.lookup {
		// Options.Users is the caller's code: run it without holding mu.
		s.findUser(&a)
		s.finish(ref, a.status)
	}
	if !s.sleep(r.Context(), a.latency) {
		// Cut short: the client went away or Close began. Returning would
		// have net/http send an empty 200, which a client still reading
		// (its Close of the connection under way) takes for an answer;
		// aborting closes the connection with no answer at all.
		panic(http.ErrAbortHandler)
	}
	if a.reset {
		s.logf("simulator: defender %s %s: connection reset", r.Method, r.URL.Path)
		resetConnection(w)
		return
	}
	s.logf("simulator: defender %s %s: %d", r.Method, r.URL.Path, a.status)
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	if a.allow != "" {
		w.Header().Set("Allow", a.allow)
	}
	if a.status != http.StatusOK {
		writeAPIError(w, a.status, a.code, a.message)
		return
	}
	w.Header().Set("Content-Type", odataContentType)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(a.body)
}

// decide applies the behaviour switches, in the order Server documents, at
// the request's arrival, and logs the Call.
func (s *Server) decide(r *http.Request) (answer, callRef) {
	alertID, routed := alertIDFromPath(r.URL.Path)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	a := answer{alertID: alertID, latency: s.latency}
	problem := s.tokenProblem(r.Header.Get("Authorization"), now)
	switch {
	case problem != "":
		a.fail(http.StatusUnauthorized, "Unauthorized", problem)
	case s.reset:
		a.reset = true
	case s.outage != 0:
		a.fail(s.outage, errorCode(s.outage), http.StatusText(s.outage)+". Please try again later.")
	case s.forbidden:
		a.fail(http.StatusForbidden, "Forbidden",
			"The application does not have any of the required application permissions (User.Read.All) to access the resource.")
	case s.throttled(now, &a):
	case !routed:
		a.fail(http.StatusNotFound, "NotFound", fmt.Sprintf("Resource %s not found.", r.URL.Path))
	case r.Method != http.MethodGet:
		a.allow = http.MethodGet
		a.fail(http.StatusMethodNotAllowed, "MethodNotAllowed", fmt.Sprintf("The requested resource does not support http method '%s'.", r.Method))
	case s.notFound[alertID]:
		a.fail(http.StatusNotFound, "NotFound", fmt.Sprintf("User for alert %s not found.", alertID))
	default:
		a.lookup = true
		a.override, a.hasOverride = s.overrides[alertID]
	}
	s.calls = append(s.calls, Call{Time: now, AlertID: alertID, Path: r.URL.Path, Status: a.status, TokenValid: problem == ""})
	return a, callRef{generation: s.logGeneration, index: len(s.calls) - 1}
}

// tokenProblem says why the Authorization header does not carry a valid
// token, or returns "" when it does. Callers hold mu.
func (s *Server) tokenProblem(header string, now time.Time) string {
	scheme, token, ok := strings.Cut(header, " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "Authorization header with a Bearer token is required."
	}
	t, known := s.tokens[token]
	switch {
	case !known:
		return "The access token is invalid."
	case t.revoked:
		return "The access token has been revoked."
	case !now.Before(t.expires):
		return "The access token has expired."
	}
	return ""
}

// throttled applies ThrottleNext and then the rate limit, filling in a when
// the call may not pass. Callers hold mu.
func (s *Server) throttled(now time.Time, a *answer) bool {
	if s.throttleLeft > 0 {
		s.throttleLeft--
		a.retryAfter = s.throttleRetryAfter
		a.fail(http.StatusTooManyRequests, "TooManyRequests", "Too many requests. Please retry later.")
		return true
	}
	if s.rateLimit <= 0 {
		return false
	}
	cutoff := now.Add(-s.rateWindow)
	i := 0
	for i < len(s.admitted) && !s.admitted[i].After(cutoff) {
		i++
	}
	s.admitted = append(s.admitted[:0], s.admitted[i:]...)
	if len(s.admitted) < s.rateLimit {
		s.admitted = append(s.admitted, now)
		return false
	}
	wait := s.admitted[len(s.admitted)-s.rateLimit].Add(s.rateWindow).Sub(now)
	seconds := max(int(math.Ceil(wait.Seconds())), 1)
	a.retryAfter = strconv.Itoa(seconds)
	a.fail(http.StatusTooManyRequests, "TooManyRequests",
		fmt.Sprintf("API calls quota exceeded! Maximum allowed %d per %s. Try again in %d seconds.", s.rateLimit, s.rateWindow, seconds))
	return true
}

// findUser resolves the user of a call that got past every switch.
func (s *Server) findUser(a *answer) {
	user, ok := a.override, a.hasOverride
	if !ok {
		if s.users != nil {
			user, ok = s.users(a.alertID)
		} else {
			user, ok = SyntheticUser(a.alertID), true
		}
	}
	if !ok {
		a.fail(http.StatusNotFound, "NotFound", fmt.Sprintf("User for alert %s not found.", a.alertID))
		return
	}
	body := make(map[string]any, len(user)+1)
	maps.Copy(body, user)
	body["@odata.context"] = s.apiURL + "/api/$metadata#Users/$entity"
	b, err := json.Marshal(body)
	if err != nil {
		a.fail(http.StatusInternalServerError, "InternalServerError", "The user could not be serialized: "+err.Error())
		return
	}
	a.status, a.body = http.StatusOK, b
}

func (s *Server) finish(ref callRef, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ref.generation == s.logGeneration && ref.index < len(s.calls) {
		s.calls[ref.index].Status = status
	}
}

// sleep waits d and reports whether the answer is still wanted.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.done:
		return false
	}
}

// resetConnection drops the TCP connection with an RST rather than a TLS
// close_notify, which is what a client sees of a crashed proxy or a load
// balancer giving up.
func resetConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeAPIError(w, http.StatusInternalServerError, "InternalServerError", "The connection could not be reset: "+err.Error())
		return
	}
	if tc, ok := conn.(*tls.Conn); ok {
		if tcp, ok := tc.NetConn().(*net.TCPConn); ok {
			_ = tcp.SetLinger(0)
			tcp.Close()
			return
		}
	}
	conn.Close()
}

func alertIDFromPath(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/api/alerts/")
	if !ok {
		return "", false
	}
	id, ok := strings.CutSuffix(rest, "/user")
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", false
	}
	return id, true
}

// errorCode turns a status into a code in the style of the API's own,
// "ServiceUnavailable" for 503.
func errorCode(status int) string {
	code := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, http.StatusText(status))
	if code == "" {
		return "Error"
	}
	return code
}

type apiError struct {
	Error apiErrorDetail `json:"error"`
}

type apiErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Target  string `json:"target"`
}

func writeAPIError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, jsonContentType, apiError{Error: apiErrorDetail{Code: code, Message: message, Target: newUUID()}})
}

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "simulator: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// newUUID returns a random version 4 UUID, the shape of the correlation ids
// Microsoft services put in their errors.
func newUUID() string {
	var b [16]byte
	// crypto/rand.Read never returns an error; see its documentation.
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func uuidShaped(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
				return false
			}
		}
	}
	return true
}

// SyntheticUser returns the user Defender answers for alertID when
// Options.Users is nil and neither SetUser nor SetNotFound applies, without
// the "@odata.context" the answer adds. It is shaped like the documented
// example of the API and derived from a hash of alertID alone, so the same
// id always yields the same user, in every Server. The map is new on every
// call.
func SyntheticUser(alertID string) map[string]any {
	hash := func(field string) [sha256.Size]byte {
		return sha256.Sum256([]byte(field + "\x00" + alertID))
	}
	num := func(field string, n uint64) uint64 {
		h := hash(field)
		return binary.BigEndian.Uint64(h[:8]) % n
	}
	machineID := func(field string) string {
		h := hash(field)
		return hex.EncodeToString(h[:20])
	}
	domains := [...]string{"contoso", "fabrikam", "northwind", "adatum", "woodgrove", "tailspin", "litware", "wingtip"}
	names := [...]string{"alex", "bianca", "chen", "dana", "emeka", "farah", "gustavo", "hana", "ivan", "jonas", "kiri", "lena", "malik", "nora", "oskar", "priya"}
	logonTypes := [...]string{"Network", "Interactive", "RemoteInteractive"}

	domain := domains[num("domain", uint64(len(domains)))]
	account := fmt.Sprintf("%s%d", names[num("name", uint64(len(names)))], 1+num("number", 99))
	firstSeen := time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(num("firstSeen", 1500*86400)) * time.Second)
	lastSeen := firstSeen.Add(time.Duration(num("lastSeen", 365*86400)) * time.Second)
	machines := 1 + int(num("logOnMachinesCount", 12))
	most := machineID("mostPrevalentMachineId")
	least := most // one machine is both, as in the documented example
	if machines > 1 {
		least = machineID("leastPrevalentMachineId")
	}
	logonType := logonTypes[num("logonTypes", uint64(len(logonTypes)))]
	return map[string]any{
		"id":                      domain + `\` + account,
		"accountName":             account,
		"accountDomain":           domain,
		"accountSid":              fmt.Sprintf("S-1-5-21-%d-%d-%d-%d", num("sid1", 1<<32), num("sid2", 1<<32), num("sid3", 1<<32), 1000+num("rid", 100000)),
		"firstSeen":               firstSeen.Format(time.RFC3339),
		"lastSeen":                lastSeen.Format(time.RFC3339),
		"mostPrevalentMachineId":  most,
		"leastPrevalentMachineId": least,
		"logonTypes":              logonType,
		"logOnMachinesCount":      machines,
		"isDomainAdmin":           num("isDomainAdmin", 8) == 0,
		"isOnlyNetworkUser":       logonType == "Network",
	}
}
