package kafkatest_test

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/defender-enricher/defender-enricher/kafkatest"
)

// TestKafkaGoConsumerGroup proves that the connector's client library can
// join a consumer group, read and commit on both kinds of cluster, and that
// Committed sees those commits.
func TestKafkaGoConsumerGroup(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		topic := c.Topic(t, "kafkago", 3)
		var recs []kafkatest.Record
		for i := range 12 {
			recs = append(recs, kafkatest.Record{
				Key:       fmt.Appendf(nil, "alert-%d", i),
				Value:     fmt.Appendf(nil, "value %d", i),
				Partition: kafkatest.ByKey,
			})
		}
		want := map[int32]int64{}
		for _, p := range c.Produce(t, topic, recs...) {
			want[p.Partition] = max(want[p.Partition], p.Offset+1)
		}

		group := "group-" + topic
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers:     c.Brokers(),
			GroupID:     group,
			Topic:       topic,
			StartOffset: kafka.FirstOffset,
			MaxWait:     250 * time.Millisecond,
			// CommitInterval 0 makes CommitMessages synchronous, so the
			// commit is on the broker when it returns.
			CommitInterval: 0,
		})
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		seen := map[string]bool{}
		for len(seen) < len(recs) {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				_ = r.Close()
				t.Fatalf("FetchMessage after %d of %d messages: %v", len(seen), len(recs), err)
			}
			seen[string(m.Key)] = true
			if err := r.CommitMessages(ctx, m); err != nil {
				_ = r.Close()
				t.Fatalf("CommitMessages: %v", err)
			}
		}
		if err := r.Close(); err != nil {
			t.Fatalf("closing the reader: %v", err)
		}

		if got := c.Committed(t, group, topic); !maps.Equal(got, want) {
			t.Fatalf("Committed = %v, want %v", got, want)
		}
	})
}
