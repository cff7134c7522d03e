package defender

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// MaxErrorText is the most bytes ErrorText returns.
const MaxErrorText = 300

// ErrorText returns the account of a lookup error that may leave the
// connector, for the output event's enrichment.error: at most MaxErrorText
// bytes of valid UTF-8 on one line, without control or format characters.
// For an answer of Defender's it keeps the status, Defender's error code and
// correlation id and as much of its message as fits; for a token request
// Entra ID refused, the credential type, the status, Entra's error code and
// correlation id and the start of its description. err.Error() keeps the
// whole account, for the log. ErrorText(nil) is "".
func ErrorText(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	var inner error
	var prefix, cuttable, suffix string
	var (
		tok *TokenError
		api *APIError
	)
	switch {
	case errors.As(err, &tok):
		inner = tok
		prefix, cuttable = "defender: no access token: ", tok.short()
	case errors.As(err, &api):
		inner = api
		prefix, cuttable, suffix = api.short()
	}
	if inner != nil {
		// The long part of inner's text gives way to what surrounds it.
		full := inner.Error()
		if i := strings.Index(s, full); i >= 0 {
			before, after := s[:i], s[i+len(full):]
			room := max(MaxErrorText-len(before)-len(prefix)-len(suffix)-len(after), 60)
			// Cut before cleaning, so that a message of a megabyte is not
			// cleaned whole to keep a few hundred bytes of it.
			s = before + prefix + cut(clean(cut(cuttable, 4*room)), room) + suffix + after
		}
	}
	return cut(clean(s), MaxErrorText)
}

// short is the APIError's text in three parts, the message in the middle
// to be cut, and its correlation id ahead of it.
func (e *APIError) short() (prefix, message, hint string) {
	var b strings.Builder
	fmt.Fprintf(&b, "defender: GET /api/alerts/{id}/user answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " after %d attempts", e.Attempts)
	}
	if e.Target != "" {
		fmt.Fprintf(&b, " (correlation id %s)", cut(clean(e.Target), 64))
	}
	if e.Code != "" || e.Message != "" {
		fmt.Fprintf(&b, ": %s: ", cut(clean(e.Code), 64))
	}
	return b.String(), e.Message, e.hint()
}

// short is the account of the token error that ErrorText uses.
func (e *TokenError) short() string {
	if e.summary != "" {
		return e.summary
	}
	return tokenSummary(e.Err)
}

// newTokenError wraps a credential's error. It reads Entra ID's answer
// once, here, before the error can be shared between goroutines.
func newTokenError(err error) *TokenError {
	return &TokenError{Err: err, summary: tokenSummary(err), text: tokenText(err)}
}

var troubleshootLink = regexp.MustCompile(`(?:\.\s*)?To troubleshoot, visit \S+`)

// tokenSummary is "<credential>: Entra ID answered <status> <error>
// (correlation id <id>): <description>" for a refused token request, and
// azidentity's text without its troubleshooting link otherwise.
func tokenSummary(err error) string {
	var af *azidentity.AuthenticationFailedError
	if !errors.As(err, &af) || af.RawResponse == nil {
		return troubleshootLink.ReplaceAllString(err.Error(), "")
	}
	credType, _, _ := strings.Cut(af.Error(), " ")
	credType = strings.TrimSuffix(credType, ":")
	var b strings.Builder
	fmt.Fprintf(&b, "%s: Entra ID answered %d", cut(clean(credType), 64), af.RawResponse.StatusCode)
	var body struct {
		Error         string `json:"error"`
		Description   string `json:"error_description"`
		CorrelationID string `json:"correlation_id"`
	}
	if payload, perr := runtime.Payload(af.RawResponse); perr == nil && json.Unmarshal(payload, &body) == nil {
		if body.Error != "" {
			fmt.Fprintf(&b, " %s", cut(clean(body.Error), 64))
		}
		if body.CorrelationID != "" {
			fmt.Fprintf(&b, " (correlation id %s)", cut(clean(body.CorrelationID), 64))
		}
		// Entra's description repeats its trace and correlation ids and a
		// timestamp after the message.
		desc, _, _ := strings.Cut(body.Description, "Trace ID:")
		if desc = strings.TrimSpace(desc); desc != "" {
			fmt.Fprintf(&b, ": %s", desc)
		}
	}
	return b.String()
}

// clean makes s one line of valid UTF-8: invalid bytes become U+FFFD, runs
// of white space (line breaks included) one space, and control and format
// characters (bidirectional overrides, zero-width characters) are dropped.
func clean(s string) string {
	var b strings.Builder
	b.Grow(min(len(s), 4*MaxErrorText))
	space := false
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case unicode.IsSpace(r) || r == '\u2028' || r == '\u2029':
			space = b.Len() > 0
			continue
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}

// cut returns s if it has at most n bytes, and otherwise its start, cut at
// a rune boundary, and "…", in at most n bytes.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	i := max(n-len(ellipsis), 0)
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return strings.TrimRight(s[:i], " ") + ellipsis
}
