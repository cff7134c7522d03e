package schemas_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/schemas"
)

// FuzzParse checks Parse against encoding/json as the reference reader.
// Seeds live in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"id":"` + goodID + `"}`))
	f.Add([]byte(`{"records":[` + rec("a1", "") + `,` + rec("b/2", `"Microsoft Defender for Office 365"`) + `]}`))
	p := mustParser(f, schemas.ParserConfig{})
	nested := mustParser(f, schemas.ParserConfig{IDPointer: "/data/0/alertId"})
	user := []byte(`{"id":"contoso\\user1","accountName":"user1"}`)

	f.Fuzz(func(t *testing.T, in []byte) {
		evs := p.Parse(in, nil)
		for _, e := range append(nested.Parse(in, nil), evs...) {
			checkEvent(t, in, e)
			if e.Reject != "" {
				continue
			}
			if !json.Valid(e.Alert) {
				t.Fatalf("accepted event's alert is not JSON: %q", e.Alert)
			}
			out := schemas.AppendOutput(nil, e.AlertID, e.Alert, user,
				schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceAPI, EnrichedAt: testTime}, testOrigin)
			var env struct {
				AlertID string          `json:"alertId"`
				Alert   json.RawMessage `json:"alert"`
			}
			if err := json.Unmarshal(out, &env); err != nil {
				t.Fatalf("output is not JSON: %v: %q", err, out)
			}
			if env.AlertID != e.AlertID || !bytes.Equal(env.Alert, e.Alert) {
				t.Fatalf("output does not round-trip: %q", out)
			}
		}

		// A message over the size limit is refused before it is read, valid
		// or not.
		if len(in) > schemas.DefaultMaxBytes {
			if len(evs) != 1 || evs[0].Reject != schemas.ReasonTooLarge || evs[0].Record != -1 {
				t.Fatalf("a message of %d bytes gave %+v", len(in), evs)
			}
			return
		}
		// The reference: what encoding/json makes of the same bytes.
		body := bytes.TrimPrefix(in, []byte("\xef\xbb\xbf"))
		valid := json.Valid(body) && utf8.Valid(body) && nesting(body) <= schemas.DefaultMaxDepth
		if !valid {
			if len(evs) != 1 || evs[0].Reject != schemas.ReasonInvalidJSON || evs[0].Record != -1 {
				t.Fatalf("invalid JSON gave %+v", evs)
			}
			return
		}
		for _, e := range evs {
			if e.Reject == schemas.ReasonInvalidJSON {
				t.Fatalf("valid JSON rejected: %s", e.Detail)
			}
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(body, &top); err != nil {
			if len(evs) != 1 || evs[0].Reject != schemas.ReasonNotObject {
				t.Fatalf("non-object gave %+v", evs)
			}
			return
		}
		hasID := top["id"] != nil && string(top["id"]) != "null"
		if r := top["records"]; len(r) > 0 && r[0] == '[' && !hasID {
			checkEnvelope(t, r, evs)
			return
		}
		var id string
		idOK := json.Unmarshal(top["id"], &id) == nil && top["id"] != nil && string(top["id"]) != "null" && defender.ValidAlertID(id)
		if len(evs) != 1 || evs[0].Record != -1 {
			t.Fatalf("plain object gave %+v", evs)
		}
		if idOK != (evs[0].Reject == "") || idOK && evs[0].AlertID != id {
			t.Fatalf("id %q (valid %v) gave %+v", id, idOK, evs[0])
		}
		if idOK && !bytes.Equal(evs[0].Alert, bytes.TrimSpace(body)) {
			t.Fatalf("alert %q is not the message", evs[0].Alert)
		}
	})
}

// checkEnvelope compares the events of an envelope with what encoding/json
// reads from its records.
func checkEnvelope(t *testing.T, records json.RawMessage, evs []schemas.Event) {
	var recs []json.RawMessage
	if err := json.Unmarshal(records, &recs); err != nil {
		t.Fatal(err)
	}
	switch {
	case len(recs) == 0:
		if len(evs) != 1 || evs[0].Reject != schemas.ReasonEmptyEnvelope || evs[0].Record != -1 {
			t.Fatalf("an envelope with no records gave %+v", evs)
		}
		return
	case len(recs) > schemas.DefaultMaxRecords:
		if len(evs) != 1 || evs[0].Reject != schemas.ReasonTooManyRecords || evs[0].Record != -1 {
			t.Fatalf("an envelope of %d records gave %d events", len(recs), len(evs))
		}
		return
	}
	if len(evs) != len(recs) {
		t.Fatalf("%d records gave %d events", len(recs), len(evs))
	}
	for i, r := range recs {
		e := evs[i]
		if e.Record != i || !bytes.Equal(e.Alert, r) {
			t.Fatalf("record %d: event %+v", i, e)
		}
		// encoding/json matches struct fields case-insensitively but map
		// keys exactly, as the contract does.
		var m map[string]json.RawMessage
		if json.Unmarshal(r, &m) != nil {
			if e.Reject != schemas.ReasonNotObject {
				t.Fatalf("record %d is not an object but gave %+v", i, e)
			}
			continue
		}
		var props map[string]json.RawMessage
		_ = json.Unmarshal(m["properties"], &props)
		var id string
		idOK := json.Unmarshal(props["AlertId"], &id) == nil && props["AlertId"] != nil && string(props["AlertId"]) != "null" && defender.ValidAlertID(id)
		if idOK != (e.Reject == "") || idOK && e.AlertID != id {
			t.Fatalf("record %d: id %q (valid %v) gave %+v", i, id, idOK, e)
		}
		if !idOK {
			continue
		}
		skip := true
		var src any
		switch _ = json.Unmarshal(props["ServiceSource"], &src); s := src.(type) {
		case nil:
			skip = false
		case string:
			skip = !(s == "" || asciiLowerEqual(s, "microsoft defender for endpoint") || asciiLowerEqual(s, "microsoftdefenderforendpoint"))
		}
		if e.Skip != skip {
			t.Fatalf("record %d: ServiceSource %s: skip = %v, want %v", i, props["ServiceSource"], e.Skip, skip)
		}
	}
}

func asciiLowerEqual(s, lower string) bool {
	if len(s) != len(lower) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// nesting returns the deepest nesting of brackets in valid JSON.
func nesting(b []byte) int {
	depth, max := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
			if depth > max {
				max = depth
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return max
}

// FuzzAppendOutput checks that any strings and numbers make a valid
// envelope, decoded as encoding/json decodes what it encodes, and that
// envelopes built within the documented preconditions match the schema.
func FuzzAppendOutput(f *testing.F) {
	f.Add(goodID, "", "defender.alerts", 0, int64(42), uint8(0), false, int64(1_795_000_000_123_000_000))
	f.Add("a/b", "HTTP 503: \"busy\"\n\x00\xff", "t\u2028", -1, int64(-5), uint8(5), true, int64(-1))
	sch := compileSchemas(f)[schemas.OutputSchema]
	statuses := []schemas.Status{schemas.StatusEnriched, schemas.StatusNotFound, schemas.StatusUnavailable, schemas.StatusFailed, schemas.StatusSkipped}
	user := []byte(`{"id":"contoso\\user1","accountName":"user1","logOnMachinesCount":1}`)
	alert := []byte(`{"id":"x","n":12345678901234567890}`)

	f.Fuzz(func(t *testing.T, alertID, errMsg, topic string, partition int, offset int64, status uint8, cached bool, nanos int64) {
		e := schemas.Enrichment{Status: statuses[int(status)%len(statuses)], EnrichedAt: time.Unix(0, nanos), Error: errMsg}
		if e.Status == schemas.StatusEnriched || e.Status == schemas.StatusNotFound {
			e.Source = schemas.SourceAPI
			if cached {
				e.Source = schemas.SourceCache
			}
		}
		dst := []byte("keep")
		out := schemas.AppendOutput(dst, alertID, alert, user, e, schemas.Origin{Topic: topic, Partition: partition, Offset: offset})
		if string(out[:4]) != "keep" {
			t.Fatal("dst overwritten")
		}
		out = out[4:]
		var env struct {
			AlertID    string          `json:"alertId"`
			Alert      json.RawMessage `json:"alert"`
			Enrichment struct {
				Status     string    `json:"status"`
				EnrichedAt time.Time `json:"enrichedAt"`
				Error      string    `json:"error"`
			} `json:"enrichment"`
			Origin schemas.Origin `json:"origin"`
		}
		if err := json.Unmarshal(out, &env); err != nil {
			t.Fatalf("%v: %q", err, out)
		}
		if env.AlertID != reference(t, alertID) || env.Enrichment.Error != reference(t, errMsg) || env.Origin.Topic != reference(t, topic) ||
			env.Origin.Partition != partition || env.Origin.Offset != offset || !bytes.Equal(env.Alert, alert) ||
			!env.Enrichment.EnrichedAt.Equal(e.EnrichedAt.Truncate(time.Millisecond)) {
			t.Fatalf("round trip mismatch: %q", out)
		}
		if defender.ValidAlertID(alertID) && topic != "" && partition >= 0 && offset >= 0 {
			if err := validate(t, sch, out); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
	})
}

// reference is what encoding/json decodes its own encoding of s to.
func reference(t *testing.T, s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var r string
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}
