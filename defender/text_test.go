package defender_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/defender-enricher/defender-enricher/defender"
)

// checkBounded fails unless text is what may reach the SIEM: at most
// MaxErrorText bytes of valid UTF-8, one line, no control or format
// characters.
func checkBounded(t *testing.T, text string) {
	t.Helper()
	if len(text) > defender.MaxErrorText {
		t.Errorf("ErrorText is %d bytes, over %d: %q", len(text), defender.MaxErrorText, text)
	}
	if !utf8.ValidString(text) {
		t.Errorf("ErrorText is not valid UTF-8: %q", text)
	}
	for _, r := range text {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
			t.Errorf("ErrorText has %U: %q", r, text)
		}
	}
}

func TestErrorText(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("déjà vu ", 1<<17) // 1 MiB of two-byte runes and spaces
	chain := errors.New("DefaultAzureCredential: failed to acquire a token.\nAttempted credentials:\n\tEnvironmentCredential: missing environment variable AZURE_TENANT_ID\n\t" +
		"WorkloadIdentityCredential: no client ID specified\n\tManagedIdentityCredential: no response from the IMDS endpoint\n\t" +
		"AzureCLICredential: Azure CLI not found on path\n\t" + strings.Repeat("more detail ", 200) +
		"\nTo troubleshoot, visit https://aka.ms/azsdk/go/identity/troubleshoot#dac")
	tests := []struct {
		name   string
		err    error
		want   []string // in the text
		absent []string
	}{
		{name: "nil", err: nil},
		{"403 with a 1 MiB message", &defender.APIError{StatusCode: 403, Code: "Forbidden", Message: huge, Target: "6c9b2c1e-1f0e-4c1a-9b5a-1d2e3f4a5b6c", Attempts: 1},
			[]string{"answered 403 Forbidden", "(correlation id 6c9b2c1e-1f0e-4c1a-9b5a-1d2e3f4a5b6c)", ": Forbidden: déjà vu", "…", "User.Read.All"}, nil},
		{"503 after 4 attempts", &defender.APIError{StatusCode: 503, Code: "ServiceUnavailable", Message: "try later", Target: "c0ffee", Attempts: 4},
			[]string{"503 Service Unavailable after 4 attempts (correlation id c0ffee): ServiceUnavailable: try later"}, []string{"…"}},
		{"a wrapped 503 with a long message", fmt.Errorf("lookup of an alert: %w: after the deadline",
			&defender.APIError{StatusCode: 503, Code: "ServiceUnavailable", Message: huge, Target: "c0ffee", Attempts: 2}),
			[]string{"lookup of an alert: defender: GET", "503 Service Unavailable after 2 attempts (correlation id c0ffee)", ": after the deadline"}, nil},
		{"given up after a 503 with a long message", fmt.Errorf("%w: %w: gave up retrying after %s", defender.ErrUnavailable, context.DeadlineExceeded,
			defender.ErrorText(&defender.APIError{StatusCode: 503, Code: "ServiceUnavailable", Message: huge, Target: "c0ffee", Attempts: 2})),
			[]string{"defender: unavailable: context deadline exceeded: gave up retrying after", "503 Service Unavailable after 2 attempts (correlation id c0ffee)"}, nil},
		{"control characters, bidi overrides and line breaks", &defender.APIError{StatusCode: 400, Code: "Bad\x00Request", Message: "line one\r\nline\x1b[31mtwo\u202e\u2028three\x7f", Target: "t\n1"},
			[]string{"(correlation id t 1): BadRequest: line one line[31mtwo three"}, nil},
		{"invalid UTF-8", &defender.APIError{StatusCode: 400, Message: "bad \xff\xfe bytes"},
			[]string{"bad \uFFFD"}, nil},
		{"a long correlation id", &defender.APIError{StatusCode: 403, Target: strings.Repeat("x", 10_000)},
			[]string{"answered 403 Forbidden (correlation id xxx"}, nil},
		{"token chain", &defender.TokenError{Err: chain},
			[]string{"defender: no access token: DefaultAzureCredential: failed to acquire a token. Attempted credentials: EnvironmentCredential: missing environment variable AZURE_TENANT_ID"},
			[]string{"aka.ms", "check ENRICHER_AZURE_CREDENTIAL"}},
		{"token, Entra's answer", &defender.TokenError{Err: &azidentity.AuthenticationFailedError{RawResponse: &http.Response{
			StatusCode: 401, Status: "401 Unauthorized", Body: io.NopCloser(strings.NewReader(`{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. ` +
				strings.Repeat("Ensure the secret is right. ", 40) + `\r\nTrace ID: 1\r\nCorrelation ID: 2\r\nTimestamp: 3","error_codes":[7000215],"correlation_id":"7d1e2c8b-0000-4000-8000-000000000001"}`)),
		}}},
			[]string{"Entra ID answered 401 invalid_client (correlation id 7d1e2c8b-0000-4000-8000-000000000001): AADSTS7000215: Invalid client secret provided."}, nil},
		{"transport", &defender.TransportError{Attempts: 4, Err: errors.New("dial tcp 127.0.0.1:443: connect: connection refused")},
			[]string{"failed after 4 attempts: dial tcp 127.0.0.1:443: connect: connection refused"}, nil},
		{"not found", defender.ErrNotFound, []string{"defender: alert or user not found (404)"}, nil},
		{"something long", errors.New(strings.Repeat("é", 1000)), []string{"é…"}, nil},
	}
	for _, tt := range tests {
		text := defender.ErrorText(tt.err)
		checkBounded(t, text)
		if tt.err == nil && text != "" {
			t.Errorf("%s: ErrorText(nil) = %q", tt.name, text)
		}
		for _, w := range tt.want {
			if !strings.Contains(text, w) {
				t.Errorf("%s: ErrorText = %q lacks %q", tt.name, text, w)
			}
		}
		for _, a := range tt.absent {
			if strings.Contains(text, a) {
				t.Errorf("%s: ErrorText = %q has %q", tt.name, text, a)
			}
		}
	}
}
