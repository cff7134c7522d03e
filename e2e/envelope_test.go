package e2e

import (
	"bytes"
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// checkEnvelope asserts everything the contract says about the output of
// ev: the envelope's shape and schema, the alert byte for byte, the key,
// the input's headers, the origin and the enrichment's status.
func checkEnvelope(t *testing.T, e *env, o output, ev event, status string) {
	t.Helper()
	where := ev.id() + " (" + ev.AlertID + ")"
	if o.DecodeErr != nil {
		t.Errorf("%s: output does not decode strictly: %v\n%s", where, o.DecodeErr, o.Value)
		return
	}
	if err := validateOutput(o.Value); err != nil {
		t.Errorf("%s: output does not match the schema: %v\n%s", where, err, o.Value)
	}
	env := o.Env
	if env.SchemaVersion != 1 {
		t.Errorf("%s: schemaVersion %d, want 1", where, env.SchemaVersion)
	}
	if env.AlertID != ev.AlertID {
		t.Errorf("%s: alertId %q, want %q", where, env.AlertID, ev.AlertID)
	}
	if string(o.Key) != ev.AlertID {
		t.Errorf("%s: key %q, want the alert id %q", where, o.Key, ev.AlertID)
	}
	if !bytes.Equal(env.Alert, ev.Alert) {
		t.Errorf("%s: alert is not the input byte for byte:\n got %s\nwant %s", where, env.Alert, ev.Alert)
	}
	if !sameHeaders(o.Headers, ev.Headers) {
		t.Errorf("%s: headers %s, want the input's %s", where, showHeaders(o.Headers), showHeaders(ev.Headers))
	}
	if env.Origin.Topic != e.in || env.Origin.Partition != ev.Partition || env.Origin.Offset != ev.Offset {
		t.Errorf("%s: origin %s/%d/%d, want %s/%d/%d", where, env.Origin.Topic, env.Origin.Partition, env.Origin.Offset, e.in, ev.Partition, ev.Offset)
	}
	at := o.EnrichedAt()
	if at.IsZero() {
		t.Errorf("%s: enrichedAt %q is not RFC 3339 UTC with milliseconds", where, env.Enrichment.EnrichedAt)
	} else if at.Before(ev.Produced.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) {
		t.Errorf("%s: enrichedAt %s is outside [%s, now]", where, at, ev.Produced)
	}
	en := env.Enrichment
	if en.Status != status {
		t.Errorf("%s: status %q (error %q), want %q", where, en.Status, en.Error, status)
		return
	}
	switch status {
	case "enriched":
		if en.Source != "api" && en.Source != "cache" {
			t.Errorf("%s: source %q, want api or cache", where, en.Source)
		}
		if en.Error != "" {
			t.Errorf("%s: error %q, want empty", where, en.Error)
		}
		checkUser(t, where, env.User, ev.AlertID)
	case "not_found":
		if en.Source != "api" && en.Source != "cache" {
			t.Errorf("%s: source %q, want api or cache", where, en.Source)
		}
		if en.Error == "" {
			t.Errorf("%s: not_found without an error text", where)
		}
	case "skipped":
		if en.Source != "" || en.Error != "" {
			t.Errorf("%s: source %q error %q, want both empty", where, en.Source, en.Error)
		}
	case "unavailable", "failed":
		if en.Source != "" || en.Error == "" {
			t.Errorf("%s: source %q error %q, want no source and an error text", where, en.Source, en.Error)
		}
	}
	if status != "enriched" && string(env.User) != "null" {
		t.Errorf("%s: user %s, want null", where, env.User)
	}
}

// checkUser asserts that the user is the simulator's user for the alert,
// every field of the answer kept, no OData annotation.
func checkUser(t *testing.T, where string, raw json.RawMessage, alertID string) {
	t.Helper()
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil || got == nil {
		t.Errorf("%s: user %s is not an object: %v", where, raw, err)
		return
	}
	for k := range got {
		if strings.HasPrefix(k, "@odata.") {
			t.Errorf("%s: user carries the OData annotation %q", where, k)
		}
	}
	b, _ := json.Marshal(simulator.SyntheticUser(alertID))
	var want map[string]any
	_ = json.Unmarshal(b, &want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: user\n got %s\nwant %s", where, raw, b)
	}
}

func sameHeaders(a, b []kafkatest.Header) bool {
	return slices.EqualFunc(a, b, func(x, y kafkatest.Header) bool {
		return x.Key == y.Key && bytes.Equal(x.Value, y.Value)
	})
}

func showHeaders(hs []kafkatest.Header) string {
	var parts []string
	for _, h := range hs {
		parts = append(parts, h.Key+"="+string(h.Value))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// callsFor counts the simulator's calls for one alert id.
func callsFor(sim *simulator.Server, alertID string) int {
	n := 0
	for _, c := range sim.Calls() {
		if c.AlertID == alertID {
			n++
		}
	}
	return n
}

var validCallPath = regexp.MustCompile(`^/api/alerts/[A-Za-z0-9_-]{1,128}/user$`)

// checkCalls asserts that every call the simulator saw was
// GET /api/alerts/<valid id>/user for one of the allowed ids.
func checkCalls(t *testing.T, sim *simulator.Server, allowed ...string) {
	t.Helper()
	for _, c := range sim.Calls() {
		if !validCallPath.MatchString(c.Path) {
			t.Errorf("the API was called at %q", c.Path)
			continue
		}
		if !slices.Contains(allowed, c.AlertID) {
			t.Errorf("the API was called for alert %q, which no test input should have looked up", c.AlertID)
		}
	}
}

// Both input forms (alerts API object, streaming-API envelope with
// AlertInfo and AlertEvidence records) come out as v1 envelopes exactly as
// the contract says.
func TestOutputEnvelope(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		e := newEnv(t, c, 2)
		tl := newTail(t, e)
		startConnector(t, e, nil)

		headers := []kafkatest.Header{
			{Key: "traceparent", Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
			{Key: "source", Value: []byte("defender-streaming")},
			{Key: "source", Value: []byte("repeated header, kept in order")},
			{Key: "binary", Value: []byte{0, 1, 2, 0xff}},
		}
		ids := newAlertIDs(3)

		// Form 1, with whitespace around the object: the envelope carries
		// the object, not the padding.
		m1 := alertMessage(ids[0], 0, headers...)
		m1.Value = append(append([]byte("\n  \t"), m1.Value...), "\r\n "...)
		// Form 2: AlertInfo and AlertEvidence rows of one alert and an
		// AlertInfo row of another, one event per record.
		mk := []string{newMarker(), newMarker(), newMarker()}
		recs := [][]byte{
			alertInfoRecord(ids[1], mk[0], "Microsoft Defender for Endpoint"),
			alertEvidenceRecord(ids[1], mk[1]),
			alertInfoRecord(ids[2], mk[2], "MicrosoftDefenderForEndpoint"),
		}
		m2 := message{Value: envelopeOf(recs...), Headers: headers[:2], Partition: 1}
		for i, r := range recs {
			id := ids[1]
			if i == 2 {
				id = ids[2]
			}
			m2.Events = append(m2.Events, event{Marker: mk[i], AlertID: id, Record: i, Alert: r})
		}
		inputs := produce(t, c, e.in, m1, m2)

		outs, _ := tl.waitCovered(30*time.Second, inputs)
		got := byMarker(outs)
		for _, ev := range inputs {
			checkEnvelope(t, e, got[ev.Marker], ev, "enriched")
		}
		if !bytes.Contains(got[inputs[0].Marker].Env.Alert, []byte("12345678901234567890")) ||
			!bytes.Contains(got[inputs[1].Marker].Env.Alert, []byte("98765432109876543210")) {
			t.Error("a 20-digit integer lost digits on the way")
		}
		// The two records of one alert keep their order.
		a, b := got[mk[0]], got[mk[1]]
		if a.Partition != b.Partition || a.Offset > b.Offset {
			t.Errorf("records 0 and 1 of alert %s came out at %d/%d and %d/%d, want in record order", ids[1], a.Partition, a.Offset, b.Partition, b.Offset)
		}

		// The same alert again, once its answer is kept: from the cache,
		// without a call.
		before := callsFor(e.sim, ids[0])
		again := produce(t, c, e.in, alertMessage(ids[0], 0, headers...))
		outs, _ = tl.waitCovered(30*time.Second, again)
		o := byMarker(outs)[again[0].Marker]
		checkEnvelope(t, e, o, again[0], "enriched")
		if o.Env.Enrichment.Source != "cache" {
			t.Errorf("a repeated alert has source %q, want cache", o.Env.Enrichment.Source)
		}
		if n := callsFor(e.sim, ids[0]); n != before || n != 1 {
			t.Errorf("%d calls for alert %s (%d before the repeat), want 1", n, ids[0], before)
		}
		checkCalls(t, e.sim, ids...)
		verifyNoLoss(t, append(inputs, again...), outs, nil)
	})
}

// Form 3: any JSON object, its alert id at ENRICHER_ALERT_ID_POINTER.
func TestCustomAlertIDPointer(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		e := newEnv(t, c, 1)
		startConnector(t, e, map[string]string{"ENRICHER_ALERT_ID_POINTER": "/data/alert~1ids/1"})

		ids := newAlertIDs(2)
		var msgs []message
		for _, id := range ids {
			m := newMarker()
			// A top-level "id" that is no alert id at all: only the
			// pointer counts.
			v := []byte(`{"id":"../../machines","e2eMarker":"` + m + `","data":{"alert/ids":["ignored","` + id + `"],"n":12345678901234567890}}`)
			msgs = append(msgs, message{Key: []byte("k-" + m), Value: v, Events: []event{{Marker: m, AlertID: id, Record: -1, Alert: v}}})
		}
		inputs := produce(t, c, e.in, msgs...)
		outs, dls := readOutputs(t, e, len(inputs), 0, 30*time.Second)
		got := byMarker(outs)
		for _, ev := range inputs {
			checkEnvelope(t, e, got[ev.Marker], ev, "enriched")
		}
		if len(dls) != 0 {
			t.Errorf("%d dead letters, want none", len(dls))
		}
		checkCalls(t, e.sim, ids...)
	})
}

// A 404 is published as not_found (and kept: a repeat is answered from
// the negative cache); a streaming record of another Defender service is
// skipped without a call.
func TestNotFoundAndSkipped(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		e := newEnv(t, c, 1)
		tl := newTail(t, e)
		startConnector(t, e, nil)

		ids := newAlertIDs(4)
		missing, office, entra, endpoint := ids[0], ids[1], ids[2], ids[3]
		e.sim.SetNotFound(missing)

		m1 := alertMessage(missing, 0)
		mk := []string{newMarker(), newMarker(), newMarker()}
		recs := [][]byte{
			alertInfoRecord(office, mk[0], "Microsoft Defender for Office 365"),
			alertInfoRecord(entra, mk[1], "Microsoft Entra ID Protection"),
			alertInfoRecord(endpoint, mk[2], "Microsoft Defender for Endpoint"),
		}
		m2 := message{Value: envelopeOf(recs...), Events: []event{
			{Marker: mk[0], AlertID: office, Record: 0, Alert: recs[0]},
			{Marker: mk[1], AlertID: entra, Record: 1, Alert: recs[1]},
			{Marker: mk[2], AlertID: endpoint, Record: 2, Alert: recs[2]},
		}}
		inputs := produce(t, c, e.in, m1, m2)
		outs, _ := tl.waitCovered(30*time.Second, inputs)
		got := byMarker(outs)
		checkEnvelope(t, e, got[inputs[0].Marker], inputs[0], "not_found")
		if s := got[inputs[0].Marker].Env.Enrichment.Source; s != "api" {
			t.Errorf("first not_found has source %q, want api", s)
		}
		checkEnvelope(t, e, got[mk[0]], inputs[1], "skipped")
		checkEnvelope(t, e, got[mk[1]], inputs[2], "skipped")
		checkEnvelope(t, e, got[mk[2]], inputs[3], "enriched")

		again := produce(t, c, e.in, alertMessage(missing, 0))
		outs, _ = tl.waitCovered(30*time.Second, again)
		o := byMarker(outs)[again[0].Marker]
		checkEnvelope(t, e, o, again[0], "not_found")
		if o.Env.Enrichment.Source != "cache" {
			t.Errorf("repeated not_found has source %q, want cache", o.Env.Enrichment.Source)
		}

		for _, id := range []string{office, entra} {
			if n := callsFor(e.sim, id); n != 0 {
				t.Errorf("%d API calls for skipped alert %s, want 0", n, id)
			}
		}
		if n := callsFor(e.sim, missing); n != 1 {
			t.Errorf("%d API calls for the unknown alert, want 1", n)
		}
		checkCalls(t, e.sim, missing, endpoint)
	})
}
