package pipeline_test

import (
	"strings"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/pipeline"
)

// W3C trace context travels with the alert: traceparent and tracestate on
// an input record are on its first event, its deferral on the retry topic
// and its update, and on a dead letter, each as it came.
func TestTraceContextIsCarried(t *testing.T) {
	const (
		traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		tracestate  = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
	)
	headers := []kafkatest.Header{{Key: "traceparent", Value: []byte(traceparent)}, {Key: "tracestate", Value: []byte(tracestate)}}
	check := func(where string, hs []kafkatest.Header) {
		t.Helper()
		if got := firstHeader(hs, "traceparent"); got != traceparent {
			t.Errorf("%s: traceparent %q, want %q", where, got, traceparent)
		}
		if got := firstHeader(hs, "tracestate"); got != tracestate {
			t.Errorf("%s: tracestate %q, want %q", where, got, tracestate)
		}
	}

	lk := newSwitchable(t)
	r := newRig(t, pipeline.Config{MaxEnrichWait: time.Minute}, lk, 1)
	r.c.Produce(t, r.in,
		kafkatest.Record{Key: []byte(idA), Value: []byte(`{"id":"` + idA + `"}`), Headers: headers},
		kafkatest.Record{Key: []byte("bad"), Value: []byte(`[1,2]`), Headers: headers})
	first := r.c.ReadN(t, r.out, 1, 30*time.Second)
	check("the first event", first[0].Headers)
	check("the deferral", r.c.ReadN(t, r.retry, 1, 30*time.Second)[0].Headers)
	check("the dead letter", r.c.ReadN(t, r.dlq, 1, 30*time.Second)[0].Headers)

	lk.down.Store(false)
	r.startRetries(t)
	both := r.c.ReadN(t, r.out, 2, 30*time.Second)
	if !strings.Contains(string(both[1].Value), `"update":{"previousStatus":"unavailable"`) {
		t.Fatalf("the second output is not the update: %s", both[1].Value)
	}
	check("the update", both[1].Headers)
}
