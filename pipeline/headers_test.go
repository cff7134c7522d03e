package pipeline_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/pipeline"
	"github.com/defender-enricher/defender-enricher/schemas"
)

// TestHeadersCountInTheSizeCheck: an enriched event whose value fits
// MaxMessageBytes but whose headers, copied from the input, take it over
// goes to the dead-letter topic as too_large, cut to fit with its headers.
func TestHeadersCountInTheSizeCheck(t *testing.T) {
	const limit = 4096
	lk := &fakeLookup{answer: func(context.Context, string) (*defender.User, error) { return testUser(t, "user1"), nil }}
	r := newRig(t, pipeline.Config{MaxMessageBytes: limit}, lk, 1)
	trace := kafkatest.Header{Key: "x-trace", Value: bytes.Repeat([]byte("t"), 3300)}
	value := []byte(`{"id":"` + idA + `","pad":"` + strings.Repeat("p", 500) + `"}`)
	r.c.Produce(t, r.in, kafkatest.Record{Key: []byte(idA), Value: value, Headers: []kafkatest.Header{trace}, Partition: 0})
	got := r.c.ReadN(t, r.dlq, 1, 30*time.Second)
	if len(got) != 1 {
		t.Fatalf("%d dead letters, want 1", len(got))
	}
	reason := ""
	size := len(got[0].Key) + len(got[0].Value)
	for _, h := range got[0].Headers {
		size += len(h.Key) + len(h.Value)
		if h.Key == schemas.HeaderReason {
			reason = string(h.Value)
		}
	}
	if reason != string(schemas.ReasonTooLarge) || size > limit {
		t.Fatalf("dead letter with reason %q and %d bytes, want too_large within %d", reason, size, limit)
	}
}
