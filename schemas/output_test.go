package schemas_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/schemas"
)

var (
	testTime   = time.Date(2026, 11, 27, 10, 0, 0, 123_456_789, time.UTC)
	testOrigin = schemas.Origin{Topic: "defender.alerts", Partition: 3, Offset: 42}
	testUser   = []byte(`{"id":"contoso\\user1","accountName":"user1","logOnMachinesCount":1,"isDomainAdmin":false}`)
)

func TestAppendOutputGolden(t *testing.T) {
	got := schemas.AppendOutput(nil, "da1", []byte(`{"id":"da1","n":12345678901234567890}`), testUser,
		schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceCache, EnrichedAt: testTime}, testOrigin)
	want := `{"schemaVersion":1,"alertId":"da1","alert":{"id":"da1","n":12345678901234567890},` +
		`"user":{"id":"contoso\\user1","accountName":"user1","logOnMachinesCount":1,"isDomainAdmin":false},` +
		`"enrichment":{"status":"enriched","source":"cache","enrichedAt":"2026-11-27T10:00:00.123Z","error":""},` +
		`"origin":{"topic":"defender.alerts","partition":3,"offset":42}}`
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// outputCases are the envelopes of every status as the pipeline builds
// them.
func outputCases() []struct {
	name string
	user []byte
	e    schemas.Enrichment
} {
	return []struct {
		name string
		user []byte
		e    schemas.Enrichment
	}{
		{"enriched from the API", testUser, schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceAPI, EnrichedAt: testTime}},
		{"enriched from the cache", testUser, schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceCache, EnrichedAt: testTime}},
		{"enriched from the answer for the same user", testUser, schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceUserCache, EnrichedAt: testTime}},
		{"not found by the API", nil, schemas.Enrichment{Status: schemas.StatusNotFound, Source: schemas.SourceAPI, EnrichedAt: testTime, Error: "alert or user not found (HTTP 404)"}},
		{"not found in the negative cache", nil, schemas.Enrichment{Status: schemas.StatusNotFound, Source: schemas.SourceCache, EnrichedAt: testTime, Error: "alert or user not found (cached HTTP 404)"}},
		{"unavailable", nil, schemas.Enrichment{Status: schemas.StatusUnavailable, EnrichedAt: testTime, Error: "circuit breaker open"}},
		{"failed", nil, schemas.Enrichment{Status: schemas.StatusFailed, EnrichedAt: testTime, Error: "HTTP 503 after 4 attempts: \"Service Unavailable\"\n"}},
		{"skipped", nil, schemas.Enrichment{Status: schemas.StatusSkipped, EnrichedAt: testTime}},
	}
}

func TestAppendOutputRoundTrip(t *testing.T) {
	alert := []byte("{\n  \"id\": \"da637472900382838869_1364969609\",\n  \"big\": 123456789012345678901234567890\n}")
	for _, tc := range outputCases() {
		t.Run(tc.name, func(t *testing.T) {
			out := schemas.AppendOutput([]byte("prefix"), goodID, alert, testUser, tc.e, testOrigin)
			if !bytes.HasPrefix(out, []byte("prefix")) {
				t.Fatal("dst not kept")
			}
			out = out[len("prefix"):]
			var env struct {
				SchemaVersion int             `json:"schemaVersion"`
				AlertID       string          `json:"alertId"`
				Alert         json.RawMessage `json:"alert"`
				User          json.RawMessage `json:"user"`
				Enrichment    struct {
					Status     string `json:"status"`
					Source     string `json:"source"`
					EnrichedAt string `json:"enrichedAt"`
					Error      string `json:"error"`
				} `json:"enrichment"`
				Origin schemas.Origin `json:"origin"`
			}
			if err := json.Unmarshal(out, &env); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			wantUser := "null"
			if tc.e.Status == schemas.StatusEnriched {
				wantUser = string(testUser)
			}
			if env.SchemaVersion != 1 || env.AlertID != goodID || !bytes.Equal(env.Alert, alert) || string(env.User) != wantUser ||
				env.Enrichment.Status != string(tc.e.Status) || env.Enrichment.Source != string(tc.e.Source) ||
				env.Enrichment.EnrichedAt != "2026-11-27T10:00:00.123Z" || env.Enrichment.Error != tc.e.Error ||
				env.Origin != (schemas.Origin{Topic: "defender.alerts", Partition: 3, Offset: 42}) {
				t.Errorf("round trip mismatch: %s", out)
			}
		})
	}
}

func TestAppendOutputUserOnlyWhenEnriched(t *testing.T) {
	out := schemas.AppendOutput(nil, "a", []byte(`{}`), testUser, schemas.Enrichment{Status: schemas.StatusNotFound, Source: schemas.SourceAPI}, testOrigin)
	if !bytes.Contains(out, []byte(`"user":null`)) {
		t.Errorf("user written for not_found: %s", out)
	}
	out = schemas.AppendOutput(nil, "a", nil, nil, schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceAPI}, testOrigin)
	if !bytes.Contains(out, []byte(`"alert":{},"user":{}`)) {
		t.Errorf("empty alert and user: %s", out)
	}
}

func TestAppendOutputTime(t *testing.T) {
	tests := []struct {
		in   time.Time
		want string
	}{
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "2026-01-02T03:04:05.000Z"},
		{time.Date(2026, 1, 2, 3, 4, 5, 999_999_999, time.UTC), "2026-01-02T03:04:05.999Z"},
		{time.Date(2026, 1, 2, 3, 4, 5, 1_000_000, time.FixedZone("CET", 3600)), "2026-01-02T02:04:05.001Z"},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", -9*3600-30*60)), "2026-01-02T12:34:05.000Z"},
	}
	for _, tt := range tests {
		out := schemas.AppendOutput(nil, "a", []byte(`{}`), nil, schemas.Enrichment{Status: schemas.StatusSkipped, EnrichedAt: tt.in}, testOrigin)
		if !bytes.Contains(out, []byte(`"enrichedAt":"`+tt.want+`"`)) {
			t.Errorf("%v: %s", tt.in, out)
		}
	}
}

func TestAppendOutputEscaping(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " backslash \ slash /`, "\x00\x01\x1f\x7f", "\n\r\t\b\f",
		"<script>&amp;</script>", "é ü 日本 😀", "\u2028\u2029", "bad \xff utf8 \xc3", "\xed\xa0\x80",
		strings.Repeat("x", 1000),
	} {
		out := schemas.AppendOutput(nil, "a", []byte(`{}`), nil,
			schemas.Enrichment{Status: schemas.StatusFailed, Error: s}, schemas.Origin{Topic: s})
		var env struct {
			Enrichment struct{ Error string }
			Origin     struct{ Topic string }
		}
		if err := json.Unmarshal(out, &env); err != nil {
			t.Fatalf("%q: %v: %s", s, err, out)
		}
		// encoding/json's own round trip is the reference for what an
		// escaped string decodes to, invalid UTF-8 included.
		ref, _ := json.Marshal(s)
		var want string
		if err := json.Unmarshal(ref, &want); err != nil {
			t.Fatal(err)
		}
		if env.Enrichment.Error != want || env.Origin.Topic != want {
			t.Errorf("%q decoded as %q and %q, want %q", s, env.Enrichment.Error, env.Origin.Topic, want)
		}
		if bytes.Contains(out, []byte("\u2028")) || bytes.Contains(out, []byte("\u2029")) {
			t.Errorf("%q: line separators written raw", s)
		}
	}
}

func TestAppendOutputAllocations(t *testing.T) {
	alert := readFile(t, "testdata/alert.json")
	dst := make([]byte, 0, 64<<10)
	for _, tc := range outputCases() {
		n := testing.AllocsPerRun(100, func() {
			dst = schemas.AppendOutput(dst[:0], goodID, alert, testUser, tc.e, testOrigin)
		})
		if n != 0 {
			t.Errorf("%s: %v allocations, want 0", tc.name, n)
		}
	}
}
