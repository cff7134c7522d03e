package defender

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// User is the user related to an alert, as GET /api/alerts/{id}/user
// returns it. Every field is optional in the wild: older answers carry nulls
// or leave fields out, which leave the zero value (or nil) here. Fields the
// API adds later are kept in JSON, OData annotations ("@odata.*" and
// "field@odata.*") are not.
type User struct {
	ID                      string     // "contoso\\user1"
	AccountName             string     // "user1"
	AccountDomain           string     // "contoso"
	AccountSID              string     // "S-1-5-21-..."
	FirstSeen               *time.Time // nil when absent, null or not a timestamp
	LastSeen                *time.Time
	MostPrevalentMachineID  string
	LeastPrevalentMachineID string
	LogonTypes              string // "Network", "Interactive", ...
	LogOnMachinesCount      *int64
	IsDomainAdmin           *bool
	IsOnlyNetworkUser       *bool

	// JSON is the answer as a JSON object with every field the API returned,
	// keys sorted, values as sent but without insignificant white space, and
	// without OData annotations. It is what the output envelope carries,
	// encoded once so that every cache hit reuses it.
	JSON []byte
}

// userFields mirrors the documented answer for decoding. Strings decode
// through *string so that a null is told from a value; encoding/json leaves
// a string untouched on null anyway, so plain strings would do, but the
// pointer keeps "absent" visible to tests.
type userFields struct {
	ID                      *string         `json:"id"`
	AccountName             *string         `json:"accountName"`
	AccountDomain           *string         `json:"accountDomain"`
	AccountSID              *string         `json:"accountSid"`
	FirstSeen               json.RawMessage `json:"firstSeen"`
	LastSeen                json.RawMessage `json:"lastSeen"`
	MostPrevalentMachineID  *string         `json:"mostPrevalentMachineId"`
	LeastPrevalentMachineID *string         `json:"leastPrevalentMachineId"`
	LogonTypes              *string         `json:"logonTypes"`
	LogOnMachinesCount      *int64          `json:"logOnMachinesCount"`
	IsDomainAdmin           *bool           `json:"isDomainAdmin"`
	IsOnlyNetworkUser       *bool           `json:"isOnlyNetworkUser"`
}

// ParseUser decodes a 200 answer. It fails only when body is not a JSON
// object or a documented field has the wrong JSON type; timestamps that do
// not parse are left nil (their text stays in JSON).
func ParseUser(body []byte) (*User, error) {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(body, &all); err != nil {
		return nil, fmt.Errorf("user answer is not a JSON object: %w", err)
	}
	if all == nil {
		return nil, fmt.Errorf("user answer is null")
	}
	var f userFields
	if err := json.Unmarshal(body, &f); err != nil {
		return nil, fmt.Errorf("user answer: %w", err)
	}
	for k := range all {
		// Instance annotations ("@odata.context") and property annotations
		// ("logonTypes@odata.type") alike.
		if strings.Contains(k, "@odata.") {
			delete(all, k)
		}
	}
	// Keys sorted, a stable form for the SIEM; values compacted but not
	// HTML-escaped, so that "R&D" stays "R&D" and not "R\u0026D".
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(all); err != nil {
		return nil, fmt.Errorf("user answer: %w", err)
	}
	out := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	u := &User{
		ID:                      deref(f.ID),
		AccountName:             deref(f.AccountName),
		AccountDomain:           deref(f.AccountDomain),
		AccountSID:              deref(f.AccountSID),
		FirstSeen:               parseTime(f.FirstSeen),
		LastSeen:                parseTime(f.LastSeen),
		MostPrevalentMachineID:  deref(f.MostPrevalentMachineID),
		LeastPrevalentMachineID: deref(f.LeastPrevalentMachineID),
		LogonTypes:              deref(f.LogonTypes),
		LogOnMachinesCount:      f.LogOnMachinesCount,
		IsDomainAdmin:           f.IsDomainAdmin,
		IsOnlyNetworkUser:       f.IsOnlyNetworkUser,
		JSON:                    out,
	}
	return u, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func parseTime(raw json.RawMessage) *time.Time {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return nil
	}
	// Defender writes RFC 3339 in UTC, sometimes with 7 fractional digits,
	// sometimes without a zone.
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.9999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			t = t.UTC()
			return &t
		}
	}
	return nil
}
