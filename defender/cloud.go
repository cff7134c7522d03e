package defender

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// DefaultAPIURL is the commercial cloud's API.
const DefaultAPIURL = "https://api.securitycenter.microsoft.com"

// Authority hosts of the clouds Defender for Endpoint runs in.
const (
	AuthorityPublic = "https://login.microsoftonline.com/"
	AuthorityUSGov  = "https://login.microsoftonline.us/"
)

// Endpoint is where the client calls and how it asks for a token.
type Endpoint struct {
	BaseURL       *url.URL // scheme and host (and an optional path prefix), no trailing slash
	Scope         string   // OAuth scope of the token, such as https://api.securitycenter.microsoft.com/.default
	AuthorityHost string   // Entra authority host, such as https://login.microsoftonline.com/
}

// commercialHosts share one scope: the token's audience is the original
// securitycenter host whatever geo host serves the call.
var commercialHosts = map[string]bool{
	"api.securitycenter.microsoft.com":    true,
	"api-us.securitycenter.microsoft.com": true,
	"api-eu.securitycenter.microsoft.com": true,
	"api-uk.securitycenter.microsoft.com": true,
	"api-au.securitycenter.microsoft.com": true,
	"api.security.microsoft.com":          true,
	"us.api.security.microsoft.com":       true,
	"eu.api.security.microsoft.com":       true,
	"uk.api.security.microsoft.com":       true,
	"au.api.security.microsoft.com":       true,
	"swa.api.security.microsoft.com":      true,
	"ina.api.security.microsoft.com":      true,
	"aea.api.security.microsoft.com":      true,
}

// ResolveEndpoint derives the scope and authority from the API URL.
//
//   - commercial hosts (api.securitycenter.microsoft.com, api.security.microsoft.com
//     and their geo hosts): scope https://api.securitycenter.microsoft.com/.default,
//     authority login.microsoftonline.com;
//   - GCC (api-gcc.securitycenter.microsoft.us): the API host's /.default,
//     authority login.microsoftonline.com;
//   - GCC High and DoD (api-gov.securitycenter.microsoft.us): the API host's
//     /.default, authority login.microsoftonline.us.
//
// scope, when not empty, overrides the derived scope (public sources disagree
// on the government ones). authority, when not empty (AZURE_AUTHORITY_HOST),
// overrides the derived authority. Any other host is refused unless the
// operator set the scope: a token must not be sent to a host nobody vouched
// for. The URL must be https.
func ResolveEndpoint(apiURL, scope, authority string) (Endpoint, error) {
	if apiURL == "" {
		apiURL = DefaultAPIURL
	}
	u, err := url.Parse(apiURL)
	if err != nil || u.Host == "" {
		return Endpoint{}, fmt.Errorf("ENRICHER_DEFENDER_API_URL %q is not a URL such as %s", apiURL, DefaultAPIURL)
	}
	if u.Scheme != "https" {
		return Endpoint{}, fmt.Errorf("ENRICHER_DEFENDER_API_URL %q must be https: the bearer token must not cross the network in clear", apiURL)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return Endpoint{}, fmt.Errorf("ENRICHER_DEFENDER_API_URL %q must have no user info, query or fragment", apiURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	host := strings.ToLower(u.Hostname())

	ep := Endpoint{BaseURL: u}
	switch {
	case commercialHosts[host]:
		ep.Scope = "https://api.securitycenter.microsoft.com/.default"
		ep.AuthorityHost = AuthorityPublic
	case host == "api-gcc.securitycenter.microsoft.us":
		ep.Scope = "https://api-gcc.securitycenter.microsoft.us/.default"
		ep.AuthorityHost = AuthorityPublic
	case host == "api-gov.securitycenter.microsoft.us":
		ep.Scope = "https://api-gov.securitycenter.microsoft.us/.default"
		ep.AuthorityHost = AuthorityUSGov
	default:
		if scope == "" {
			return Endpoint{}, fmt.Errorf("ENRICHER_DEFENDER_API_URL host %q is not a known Defender host: set ENRICHER_DEFENDER_SCOPE to the token scope it expects if you trust it", host)
		}
		ep.AuthorityHost = AuthorityPublic
	}
	if scope != "" {
		if !strings.HasPrefix(scope, "https://") && !strings.HasPrefix(scope, "api://") {
			return Endpoint{}, errors.New("ENRICHER_DEFENDER_SCOPE must be a resource scope such as https://api.securitycenter.microsoft.com/.default")
		}
		ep.Scope = scope
	}
	if authority != "" {
		a, err := url.Parse(authority)
		if err != nil || a.Scheme != "https" || a.Host == "" {
			return Endpoint{}, fmt.Errorf("AZURE_AUTHORITY_HOST %q must be an https URL such as %s", authority, AuthorityPublic)
		}
		if !strings.HasSuffix(authority, "/") {
			authority += "/"
		}
		ep.AuthorityHost = authority
	}
	return ep, nil
}
