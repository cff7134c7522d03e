package e2e

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/pipeline"
	"github.com/defender-enricher/defender-enricher/schemas"
)

// Every kind of bad input goes to the dead-letter topic with its reason,
// key, value and headers, while the partition keeps flowing: a good alert
// written after them on the same partition is enriched. No bad id reaches
// the API.
func TestDeadLetters(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		const maxBytes = 64 << 10
		e := newEnv(t, c, 2)
		tl := newTail(t, e)
		startConnector(t, e, map[string]string{"ENRICHER_MAX_MESSAGE_BYTES": strconv.Itoa(maxBytes)})

		const partition = 1 // everything on one partition, the good alert last
		good := newAlertIDs(2)
		deep := strings.Repeat("[", 10_000) + strings.Repeat("]", 10_000)
		obj := func(marker, idMember string) []byte {
			return []byte(`{"e2eMarker":"` + marker + `",` + idMember + `"title":"bad input"}`)
		}
		type bad struct {
			name, reason string
			key          []byte
			value        func(marker string) []byte
		}
		cases := []bad{
			{"not JSON", "invalid_json", []byte("k1"), func(m string) []byte {
				return []byte(`{"e2eMarker":"` + m + `","id":"` + good[0] + `","title": `)
			}},
			{"empty value", "invalid_json", []byte("k2"), func(string) []byte { return []byte{} }},
			{"array", "not_object", nil, func(m string) []byte { return []byte(`[{"e2eMarker":"` + m + `","id":"` + good[0] + `"}]`) }},
			{"string", "not_object", []byte("k4"), func(m string) []byte { return []byte(`"` + good[0] + `"`) }},
			{"no id", "missing_alert_id", []byte("k5"), func(m string) []byte { return obj(m, "") }},
			{"id null", "missing_alert_id", []byte("k6"), func(m string) []byte { return obj(m, `"id":null,`) }},
			{"id number", "invalid_alert_id", []byte("k7"), func(m string) []byte { return obj(m, `"id":123,`) }},
			{"path traversal", "invalid_alert_id", []byte("../../machines"), func(m string) []byte { return obj(m, `"id":"../../machines",`) }},
			{"slash", "invalid_alert_id", nil, func(m string) []byte { return obj(m, `"id":"a/b",`) }},
			{"escaped slash", "invalid_alert_id", nil, func(m string) []byte { return obj(m, `"id":"a\/b",`) }},
			{"query", "invalid_alert_id", nil, func(m string) []byte { return obj(m, `"id":"a?b=c",`) }},
			{"percent-encoded slash", "invalid_alert_id", nil, func(m string) []byte { return obj(m, `"id":"a%2Fb",`) }},
			{"space", "invalid_alert_id", nil, func(m string) []byte { return obj(m, `"id":"a b",`) }},
			{"non-ASCII", "invalid_alert_id", []byte("é"), func(m string) []byte { return obj(m, `"id":"é",`) }},
			{"escaped non-ASCII", "invalid_alert_id", nil, func(m string) []byte { return obj(m, `"id":"\u00e9",`) }},
			{"empty id", "invalid_alert_id", nil, func(m string) []byte { return obj(m, `"id":"",`) }},
			{"10,000-character id", "invalid_alert_id", nil, func(m string) []byte {
				return obj(m, `"id":"`+strings.Repeat("a", 10_000)+`",`)
			}},
			{"10,000 levels of nesting", "invalid_json", nil, func(m string) []byte {
				return obj(m, `"id":"`+good[0]+`","deep":`+deep+`,`)
			}},
			{"too large", "too_large", []byte("big"), func(m string) []byte {
				return obj(m, `"id":"`+good[0]+`","padding":"`+strings.Repeat("x", 100_000)+`",`)
			}},
		}
		headers := []kafkatest.Header{{Key: "traceparent", Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")}}
		var msgs []message
		for _, bc := range cases {
			m := newMarker()
			v := bc.value(m)
			if markerOf(v) != m {
				m = "" // input that cannot carry a marker is found by position
			}
			msgs = append(msgs, message{Key: bc.key, Value: v, Headers: headers, Partition: partition,
				Events: []event{{Marker: m, Record: -1, Alert: v}}})
		}
		// An envelope with a good record and a bad one: the good one is
		// enriched, the bad one alone is a dead letter.
		mk := []string{newMarker(), newMarker()}
		goodRec := alertInfoRecord(good[0], mk[0], "Microsoft Defender for Endpoint")
		badRec := alertInfoRecord("a/b", mk[1], "Microsoft Defender for Endpoint")
		msgs = append(msgs, message{Key: []byte("envelope"), Value: envelopeOf(goodRec, badRec), Headers: headers, Partition: partition,
			Events: []event{{Marker: mk[0], AlertID: good[0], Record: 0, Alert: goodRec}, {Marker: mk[1], Record: 1, Alert: badRec}}})
		// The good alert after all of them, on the same partition.
		msgs = append(msgs, alertMessage(good[1], partition, headers...))

		inputs := produce(t, c, e.in, msgs...)
		outs, dls := tl.waitCovered(60*time.Second, inputs)
		verifyNoLoss(t, inputs, outs, dls)

		got := byMarker(outs)
		last := inputs[len(inputs)-1]
		checkEnvelope(t, e, got[last.Marker], last, "enriched")
		checkEnvelope(t, e, got[mk[0]], inputs[len(inputs)-3], "enriched")

		byID := map[string]deadLetter{}
		for _, d := range dls {
			byID[d.id()] = d
		}
		for i, bc := range cases {
			ev := inputs[i]
			d, ok := byID[ev.id()]
			if !ok {
				t.Errorf("%s: no dead letter", bc.name)
				continue
			}
			checkDeadLetter(t, e, bc.name, d, ev, bc.reason, maxBytes)
		}
		envBad := inputs[len(inputs)-2]
		if d, ok := byID[envBad.id()]; !ok {
			t.Error("envelope's bad record: no dead letter")
		} else {
			checkDeadLetter(t, e, "envelope's bad record", d, envBad, "invalid_alert_id", maxBytes)
			if v, _ := header(d.Headers, schemas.HeaderRecord); v != "1" {
				t.Errorf("envelope's bad record: %s %q, want \"1\"", schemas.HeaderRecord, v)
			}
		}
		for _, d := range dls {
			if d.Record < 0 {
				if _, ok := header(d.Headers, schemas.HeaderRecord); ok {
					t.Errorf("dead letter of a whole message (%s) carries %s", d.Reason, schemas.HeaderRecord)
				}
			}
		}
		if len(dls) != len(cases)+1 {
			t.Errorf("%d dead letters, want %d", len(dls), len(cases)+1)
		}
		checkCalls(t, e.sim, good...)
	})
}

// checkDeadLetter asserts what the contract says of one dead letter: key
// and value as they came (a value too large to write is cut, and says so),
// the input's headers first, then the reason, a message and Kafka
// Connect's origin headers.
func checkDeadLetter(t *testing.T, e *env, name string, d deadLetter, ev event, reason string, maxBytes int) {
	t.Helper()
	if d.Reason != reason {
		t.Errorf("%s: reason %q (%s), want %q", name, d.Reason, d.Message, reason)
	}
	if d.Message == "" {
		t.Errorf("%s: empty %s", name, schemas.HeaderMessage)
	}
	if !bytes.Equal(d.Key, ev.Key) {
		t.Errorf("%s: key %q, want %q", name, d.Key, ev.Key)
	}
	want := ev.Value
	if ev.Record >= 0 {
		want = ev.Alert // a bad record goes alone
	}
	if n, ok := header(d.Headers, pipeline.HeaderTruncated); ok {
		if reason != "too_large" {
			t.Errorf("%s: value cut (%s %s)", name, pipeline.HeaderTruncated, n)
		}
		if n != strconv.Itoa(len(want)) || !bytes.HasPrefix(want, d.Value) || len(d.Value) > maxBytes {
			t.Errorf("%s: cut value of %d bytes, %s %s, from an input of %d bytes", name, len(d.Value), pipeline.HeaderTruncated, n, len(want))
		}
	} else if !bytes.Equal(d.Value, want) {
		t.Errorf("%s: value is not the input's (%d bytes, want %d): %.80q", name, len(d.Value), len(want), d.Value)
	}
	if len(d.Headers) < len(ev.Headers) || !sameHeaders(d.Headers[:len(ev.Headers)], ev.Headers) {
		t.Errorf("%s: headers %s do not start with the input's %s", name, showHeaders(d.Headers), showHeaders(ev.Headers))
	}
	if d.Topic != e.in || d.FromPartition != ev.Partition || d.FromOffset != ev.Offset {
		t.Errorf("%s: origin headers %s/%d/%d, want %s/%d/%d", name, d.Topic, d.FromPartition, d.FromOffset, e.in, ev.Partition, ev.Offset)
	}
	for _, h := range []string{schemas.HeaderReason, schemas.HeaderMessage, schemas.HeaderTopic, schemas.HeaderPartition, schemas.HeaderOffset} {
		if _, ok := header(d.Headers, h); !ok {
			t.Errorf("%s: no %s header", name, h)
		}
	}
	if ev.Record >= 0 && d.Record != ev.Record {
		t.Errorf("%s: %s %d, want %d", name, schemas.HeaderRecord, d.Record, ev.Record)
	}
}
