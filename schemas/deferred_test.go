package schemas_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/defender-enricher/defender-enricher/schemas"
)

func deferredEnvelope(alert string) []byte {
	return schemas.AppendOutput(nil, goodID, []byte(alert), nil,
		schemas.Enrichment{Status: schemas.StatusUnavailable, EnrichedAt: testTime, Error: "circuit breaker open"}, testOrigin)
}

func TestParseDeferredReadsWhatThePipelineWrites(t *testing.T) {
	alert := `{"id":"` + goodID + `","severity":"High","nested":{"a":[1,2]}}`
	d, err := schemas.ParseDeferred(deferredEnvelope(alert), schemas.DeferredHeaders(nil, -1))
	if err != nil {
		t.Fatal(err)
	}
	if d.AlertID != goodID || string(d.Alert) != alert || d.Record || d.Status != schemas.StatusUnavailable ||
		!d.EnrichedAt.Equal(testTime.Truncate(time.Millisecond)) || d.Origin != testOrigin {
		t.Errorf("ParseDeferred = %+v", d)
	}
	d, err = schemas.ParseDeferred(deferredEnvelope(alert), schemas.DeferredHeaders(nil, 4))
	if err != nil || !d.Record {
		t.Errorf("an envelope record: Record = %v, err = %v", d.Record, err)
	}
}

func TestParseDeferredRefuses(t *testing.T) {
	good := string(deferredEnvelope(`{"id":"` + goodID + `"}`))
	if _, err := schemas.ParseDeferred([]byte(good), nil); err != nil {
		t.Fatalf("the base document fails: %v", err)
	}
	tests := []struct {
		name, old, new string
		headers        []kafka.Header
	}{
		{name: "not JSON", old: good, new: "{"},
		{name: "another schema version", old: `"schemaVersion":1`, new: `"schemaVersion":2`},
		{name: "no alert id", old: `"alertId":"` + goodID + `",`, new: ``},
		{name: "invalid alert id", old: `"alertId":"` + goodID + `"`, new: `"alertId":"../x"`},
		{name: "alert not an object", old: `"alert":{"id":"` + goodID + `"}`, new: `"alert":"x"`},
		{name: "enriched, not deferred", old: `"status":"unavailable"`, new: `"status":"enriched"`},
		{name: "no origin", old: `,"origin":{"topic":"defender.alerts","partition":3,"offset":42}`, new: ``},
		{name: "negative offset", old: `"offset":42`, new: `"offset":-1`},
		{name: "bad time", old: `"enrichedAt":"2026-11-27T10:00:00.123Z"`, new: `"enrichedAt":"yesterday"`},
		{name: "bad record header", headers: []kafka.Header{{Key: schemas.HeaderDeferredRecord, Value: []byte("x")}}},
	}
	for _, tt := range tests {
		doc := good
		if tt.old != "" {
			if doc = strings.Replace(good, tt.old, tt.new, 1); doc == good {
				t.Fatalf("%s: replacement did not apply", tt.name)
			}
		}
		if _, err := schemas.ParseDeferred([]byte(doc), tt.headers); !errors.Is(err, schemas.ErrNotDeferred) {
			t.Errorf("%s: err = %v, want ErrNotDeferred", tt.name, err)
		}
	}
}

func TestDeferredHeadersCannotBeSpoofed(t *testing.T) {
	in := []kafka.Header{
		{Key: "traceparent", Value: []byte("00-abc-01")},
		{Key: "Enricher.Deferred.Record", Value: []byte("7")},
		{Key: schemas.HeaderDeferredRecord, Value: []byte("9")},
	}
	got := schemas.DeferredHeaders(in, -1)
	if len(got) != 1 || got[0].Key != "traceparent" {
		t.Errorf("DeferredHeaders of an alert = %v, want the input's own header only", got)
	}
	got = schemas.DeferredHeaders(in, 2)
	if len(got) != 2 || got[1].Key != schemas.HeaderDeferredRecord || string(got[1].Value) != "2" {
		t.Errorf("DeferredHeaders of record 2 = %v", got)
	}
	if up := schemas.UpdateHeaders(got); len(up) != 1 || up[0].Key != "traceparent" {
		t.Errorf("UpdateHeaders = %v, want the input's headers", up)
	}
	if len(in) != 3 || in[1].Key != "Enricher.Deferred.Record" {
		t.Errorf("the input slice was modified: %v", in)
	}
}

func TestUpdateSchema(t *testing.T) {
	sch := compileSchemas(t)[schemas.OutputSchema]
	alert := []byte(`{"id":"` + goodID + `"}`)
	upd := schemas.Update{PreviousStatus: schemas.StatusUnavailable, PreviousEnrichedAt: testTime.Add(-time.Hour)}
	for _, tc := range []struct {
		e    schemas.Enrichment
		user []byte
	}{
		{schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceAPI, EnrichedAt: testTime}, testUser},
		{schemas.Enrichment{Status: schemas.StatusNotFound, Source: schemas.SourceCache, EnrichedAt: testTime, Error: "404"}, nil},
		{schemas.Enrichment{Status: schemas.StatusFailed, EnrichedAt: testTime, Error: "403"}, nil},
	} {
		out := schemas.AppendUpdate(nil, goodID, alert, tc.user, tc.e, testOrigin, upd)
		if err := validate(t, sch, out); err != nil {
			t.Errorf("%s update: %v\n%s", tc.e.Status, err, out)
		}
		var v map[string]any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatal(err)
		}
		u, _ := v["update"].(map[string]any)
		if u["previousStatus"] != "unavailable" || u["previousEnrichedAt"] != "2026-11-27T09:00:00.123Z" {
			t.Errorf("update = %v", v["update"])
		}
		// Everything before "update" is the envelope of a first event.
		first := schemas.AppendOutput(nil, goodID, alert, tc.user, tc.e, testOrigin)
		if !bytes.HasPrefix(out, first[:len(first)-1]) {
			t.Errorf("an update is not the envelope plus \"update\":\n%s\n%s", out, first)
		}
	}
	unavailable := schemas.AppendUpdate(nil, goodID, alert, nil, schemas.Enrichment{Status: schemas.StatusUnavailable, EnrichedAt: testTime, Error: "x"}, testOrigin, upd)
	if err := validate(t, sch, unavailable); err == nil {
		t.Errorf("schema accepts an update that is unavailable again: %s", unavailable)
	}
	wrong := bytes.Replace(schemas.AppendUpdate(nil, goodID, alert, testUser, schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceAPI, EnrichedAt: testTime}, testOrigin, upd),
		[]byte(`"previousStatus":"unavailable"`), []byte(`"previousStatus":"enriched"`), 1)
	if err := validate(t, sch, wrong); err == nil {
		t.Errorf("schema accepts an update of an enriched event: %s", wrong)
	}
}

// FuzzParseDeferred: anything may land on the retry topic. ParseDeferred
// never panics, and what it accepts is a deferral that writes back to the
// same fields.
func FuzzParseDeferred(f *testing.F) {
	f.Add(deferredEnvelope(`{"id":"`+goodID+`"}`), "")
	f.Add(deferredEnvelope(`{"properties":{"AlertId":"`+goodID+`"}}`), "3")
	f.Add([]byte(`{"schemaVersion":1}`), "x")
	f.Add([]byte(`[]`), "")
	f.Fuzz(func(t *testing.T, value []byte, record string) {
		var headers []kafka.Header
		if record != "" {
			headers = []kafka.Header{{Key: schemas.HeaderDeferredRecord, Value: []byte(record)}}
		}
		d, err := schemas.ParseDeferred(value, headers)
		if err != nil {
			if !errors.Is(err, schemas.ErrNotDeferred) {
				t.Fatalf("error %v does not match ErrNotDeferred", err)
			}
			return
		}
		if d.Status != schemas.StatusUnavailable || !json.Valid(d.Alert) || d.Alert[0] != '{' || d.Record != (record != "") {
			t.Fatalf("accepted %q as %+v", value, d)
		}
		out := schemas.AppendUpdate(nil, d.AlertID, d.Alert, nil, schemas.Enrichment{Status: schemas.StatusNotFound, Source: schemas.SourceAPI, EnrichedAt: d.EnrichedAt},
			d.Origin, schemas.Update{PreviousStatus: d.Status, PreviousEnrichedAt: d.EnrichedAt})
		if !json.Valid(out) {
			t.Fatalf("update of an accepted deferral is not JSON: %s", out)
		}
	})
}
