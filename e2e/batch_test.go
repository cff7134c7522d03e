package e2e

import (
	"bytes"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/kafkatest"
)

// A backlog of events a few kilobytes large (here: an input header of
// 2 KB, copied to every output) is written in batches the broker accepts:
// the topics' default max.message.bytes (1,048,588) bounds a whole batch,
// not one record.
func TestBacklogOfLargeEvents(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		e := newEnv(t, c, 1)
		trace := kafkatest.Header{Key: "x-trace", Value: bytes.Repeat([]byte("t"), 2048)}
		inputs := produceAlerts(t, c, e.in, 3000, onPartition(0), withHeaders(trace))
		tl := newTail(t, e)
		_, stop := startConnector(t, e, nil)
		outs, _ := tl.waitCovered(2*time.Minute, inputs)
		if err := stop(); err != nil {
			t.Fatalf("the connector stopped with %v", err)
		}
		for _, o := range outs {
			if len(o.Headers) != 1 || !bytes.Equal(o.Headers[0].Value, trace.Value) {
				t.Fatalf("output at %d/%d lost its header", o.Partition, o.Offset)
			}
		}
	})
}
