package pipeline_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/pipeline"
	"github.com/defender-enricher/defender-enricher/schemas"
)

// In every output format the records keep what the envelope's keep: the
// alert id as key, the input's headers, an update after an event
// published unavailable; the retry topic holds the envelope, which the
// connector reads back, and dead letters are the same.
func TestOutputFormats(t *testing.T) {
	for _, format := range []schemas.Format{schemas.FormatOCSF, schemas.FormatECS} {
		t.Run(string(format), func(t *testing.T) {
			lk := newSwitchable(t)
			r := newRig(t, pipeline.Config{MaxEnrichWait: time.Minute, Format: format}, lk, 1)
			hs := []kafkatest.Header{{Key: "traceparent", Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}}
			r.c.Produce(t, r.in,
				kafkatest.Record{Key: []byte(idA), Value: []byte(`{"id":"` + idA + `","severity":"High"}`), Headers: hs},
				kafkatest.Record{Key: []byte("bad"), Value: []byte(`[1]`)})
			first := r.c.ReadN(t, r.out, 1, 30*time.Second)[0]
			if string(first.Key) != idA || firstHeader(first.Headers, "traceparent") == "" {
				t.Errorf("first record: key %q, headers %v", first.Key, first.Headers)
			}
			deferral := r.c.ReadN(t, r.retry, 1, 30*time.Second)[0]
			if _, err := schemas.ParseDeferred(deferral.Value, toKafkaHeaders(deferral.Headers)); err != nil {
				t.Errorf("the retry topic's record is not the envelope: %v: %s", err, deferral.Value)
			}
			if dl := r.c.ReadN(t, r.dlq, 1, 30*time.Second)[0]; string(dl.Value) != `[1]` || firstHeader(dl.Headers, schemas.HeaderReason) != "not_object" {
				t.Errorf("dead letter %s %v", dl.Value, dl.Headers)
			}

			lk.down.Store(false)
			r.startRetries(t)
			both := r.c.ReadN(t, r.out, 2, 30*time.Second)
			var upd map[string]any
			if err := json.Unmarshal(both[1].Value, &upd); err != nil {
				t.Fatal(err)
			}
			if string(both[1].Key) != idA || firstHeader(both[1].Headers, "traceparent") == "" {
				t.Errorf("update: key %q headers %v", both[1].Key, both[1].Headers)
			}
			switch format {
			case schemas.FormatOCSF:
				if upd["type_uid"] != 200402.0 || upd["class_uid"] != 2004.0 {
					t.Errorf("update is not an OCSF Detection Finding Update: %s", both[1].Value)
				}
			case schemas.FormatECS:
				if de, _ := upd["defender_enricher"].(map[string]any); de == nil || de["update"] == nil {
					t.Errorf("update is not an ECS update: %s", both[1].Value)
				}
			}
		})
	}
}

func toKafkaHeaders(hs []kafkatest.Header) []kafka.Header {
	out := make([]kafka.Header, len(hs))
	for i, h := range hs {
		out[i] = kafka.Header{Key: h.Key, Value: h.Value}
	}
	return out
}
