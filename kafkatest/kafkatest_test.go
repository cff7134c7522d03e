package kafkatest_test

import (
	"bytes"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/defender-enricher/defender-enricher/kafkatest"
)

func TestProduceAndReadN(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		if (c.Fake() != nil) != (c.Kind() == kafkatest.KindFake) {
			t.Fatalf("Kind %q with Fake %v", c.Kind(), c.Fake())
		}
		if len(c.Brokers()) == 0 {
			t.Fatal("no brokers")
		}
		const partitions = 3
		topic := c.Topic(t, "roundtrip", partitions)

		recs := []kafkatest.Record{
			{Key: []byte("a"), Value: []byte("to p2"), Partition: 2,
				Headers: []kafkatest.Header{{Key: "h1", Value: []byte("v1")}, {Key: "h2", Value: nil}}},
			{Key: []byte("b"), Value: []byte("to p0"), Partition: 0},
			{Value: []byte("no key, explicit p2"), Partition: 2},
		}
		for i := range 6 {
			recs = append(recs, kafkatest.Record{
				Key:       fmt.Appendf(nil, "alert-%d", i),
				Value:     fmt.Appendf(nil, "by key %d", i),
				Partition: kafkatest.ByKey,
			})
		}
		recs = append(recs, kafkatest.Record{Value: []byte("no key, any partition"), Partition: kafkatest.ByKey})

		produced := c.Produce(t, topic, recs...)
		if len(produced) != len(recs) {
			t.Fatalf("Produce returned %d positions for %d records", len(produced), len(recs))
		}
		next := map[int32]int64{}
		for i, p := range produced {
			want := recs[i].Partition
			if want == kafkatest.ByKey && recs[i].Key != nil {
				// kafka-go's Murmur2Balancer is the connector's view of
				// Kafka's key partitioning; both must agree.
				want = int32((&kafka.Murmur2Balancer{}).Balance(kafka.Message{Key: recs[i].Key}, 0, 1, 2))
			}
			if want >= 0 && p.Partition != want {
				t.Errorf("record %d went to partition %d, want %d", i, p.Partition, want)
			}
			if p.Offset != next[p.Partition] {
				t.Errorf("record %d at offset %d of partition %d, want %d", i, p.Offset, p.Partition, next[p.Partition])
			}
			next[p.Partition] = p.Offset + 1
		}

		got := c.ReadN(t, topic, len(recs), 30*time.Second)
		if len(got) != len(recs) {
			t.Fatalf("ReadN returned %d records, want %d", len(got), len(recs))
		}
		if !slices.IsSortedFunc(got, func(a, b kafkatest.Consumed) int {
			if a.Partition != b.Partition {
				return int(a.Partition - b.Partition)
			}
			return int(a.Offset - b.Offset)
		}) {
			t.Error("ReadN result is not sorted by partition and offset")
		}
		for i, r := range recs {
			j := slices.IndexFunc(got, func(g kafkatest.Consumed) bool {
				return g.Partition == produced[i].Partition && g.Offset == produced[i].Offset
			})
			if j < 0 {
				t.Errorf("record %d (%+v) not read back", i, produced[i])
				continue
			}
			g := got[j]
			if !bytes.Equal(g.Key, r.Key) || !bytes.Equal(g.Value, r.Value) {
				t.Errorf("record %d read back as key %q value %q, want %q %q", i, g.Key, g.Value, r.Key, r.Value)
			}
			if len(g.Headers) != len(r.Headers) {
				t.Errorf("record %d read back with headers %v, want %v", i, g.Headers, r.Headers)
				continue
			}
			for k, h := range r.Headers {
				if g.Headers[k].Key != h.Key || !bytes.Equal(g.Headers[k].Value, h.Value) {
					t.Errorf("record %d header %d = %v, want %v", i, k, g.Headers[k], h)
				}
			}
		}
	})
}

func TestTopicNamesAreUnique(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		a, b := c.Topic(t, "same", 1), c.Topic(t, "same", 2)
		if a == b || !strings.HasPrefix(a, "same-") || !strings.HasPrefix(b, "same-") {
			t.Fatalf("topic names %q and %q", a, b)
		}
		// A fresh topic has no commits for any group.
		if got := c.Committed(t, "nobody-"+b, b); len(got) != 0 {
			t.Fatalf("Committed of an unknown group = %v, want empty", got)
		}
	})
}

func TestNewRealSkipsWithoutBroker(t *testing.T) {
	t.Setenv(kafkatest.EnvBrokers, "")
	var skipped bool
	t.Run("real", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		kafkatest.NewReal(t)
	})
	if !skipped {
		t.Fatal("NewReal did not skip with the variable unset")
	}
}

// fatalRecorder turns Fatal into a recorded message and ends the goroutine,
// as testing.T does, so a helper's failure path can be checked.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatal(args ...any) {
	r.msg = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestReadNReportsShortfall(t *testing.T) {
	c := kafkatest.NewFake(t)
	topic := c.Topic(t, "short", 1)
	c.Produce(t, topic, kafkatest.Record{Value: []byte("only one")})

	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.ReadN(rec, topic, 2, time.Second)
	}()
	<-done
	if !strings.Contains(rec.msg, "read 1 of 2 records") {
		t.Fatalf("ReadN failure message %q does not say how many records it got", rec.msg)
	}
}

// The connector creates its output topic on first write, so ReadN must pick
// up a topic that appears after it started reading.
func TestReadNWaitsForTopic(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		// Derived from a unique name so that it is unique too; on the real
		// broker this auto-created topic outlives the test, like any topic
		// the code under test creates.
		topic := c.Topic(t, "base", 1) + "-later"
		rec := &fatalRecorder{TB: t}
		var got []kafkatest.Consumed
		done := make(chan struct{})
		go func() {
			defer close(done)
			got = c.ReadN(rec, topic, 1, 60*time.Second)
		}()
		// Let ReadN start on the missing topic first. A ReadN that starts
		// later still passes, so no wait can make this fail falsely.
		time.Sleep(1500 * time.Millisecond)
		c.Produce(t, topic, kafkatest.Record{Value: []byte("late"), Partition: kafkatest.ByKey})
		<-done
		if rec.msg != "" {
			t.Fatal(rec.msg)
		}
		if len(got) != 1 || string(got[0].Value) != "late" {
			t.Fatalf("ReadN = %+v, want the one late record", got)
		}
	})
}
