package producer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/defender-enricher/defender-enricher/kafkatest"
)

type ackCounter struct {
	mu    sync.Mutex
	order []int
	n     atomic.Int64
}

type ack struct {
	c *ackCounter
	i int
}

func (a ack) Acked() {
	a.c.mu.Lock()
	a.c.order = append(a.c.order, a.i)
	a.c.mu.Unlock()
	a.c.n.Add(1)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAcksOrderAndPartitioning: every record is acknowledged once, lands on
// the partition the Java client would pick for its key, and records of one
// key keep their order.
func TestAcksOrderAndPartitioning(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		topic := c.Topic(t, "producer", 4)
		p, err := New(Config{Brokers: c.Brokers()})
		if err != nil {
			t.Fatal(err)
		}
		var acks ackCounter
		const n = 400
		for i := 0; i < n; i++ {
			key := fmt.Sprintf("da63730839228890738%d_-88071816%d", i%7, i%7)
			p.Send(Record{Topic: topic, Key: []byte(key), Value: []byte(fmt.Sprintf(`{"seq":%d}`, i)),
				Headers: []kafka.Header{{Key: "h", Value: []byte("v")}}, Ack: ack{&acks, i}})
		}
		waitFor(t, "acknowledgements", func() bool { return acks.n.Load() == n })
		if err := p.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		got := c.ReadN(t, topic, n, 30*time.Second)
		if len(got) != n {
			t.Fatalf("read %d records, want %d (duplicates?)", len(got), n)
		}
		partitionOf := map[string]int32{}
		last := map[string]int{}
		balancer := kafka.Murmur2Balancer{}
		for _, r := range got {
			k := string(r.Key)
			want := int32(balancer.Balance(kafka.Message{Key: r.Key}, 0, 1, 2, 3))
			if r.Partition != want {
				t.Fatalf("key %s on partition %d, murmur2 says %d", k, r.Partition, want)
			}
			if p, ok := partitionOf[k]; ok && p != r.Partition {
				t.Fatalf("key %s on two partitions", k)
			}
			partitionOf[k] = r.Partition
			var seq int
			fmt.Sscanf(string(r.Value), `{"seq":%d}`, &seq)
			if prev, ok := last[k]; ok && seq <= prev {
				t.Fatalf("key %s: seq %d after %d", k, seq, prev)
			}
			last[k] = seq
			if len(r.Headers) != 1 || r.Headers[0].Key != "h" {
				t.Fatalf("headers not kept: %+v", r.Headers)
			}
		}
	})
}

// TestUnknownTopicFails: a write that retries cannot fix is reported on Err
// with the topic named, and nothing is acknowledged.
func TestUnknownTopicFails(t *testing.T) {
	c := kafkatest.NewFake(t)
	p, err := New(Config{Brokers: c.Brokers(), MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	var acks ackCounter
	p.Send(Record{Topic: "no-such-topic", Key: []byte("k"), Value: []byte("{}"), Ack: ack{&acks, 0}})
	select {
	case err := <-p.Err():
		if !strings.Contains(err.Error(), "no-such-topic") {
			t.Fatalf("error does not name the topic: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no error for a missing topic")
	}
	if err := p.Close(context.Background()); err == nil {
		t.Fatal("Close after a failure returned nil")
	}
	if acks.n.Load() != 0 {
		t.Fatal("a record was acknowledged after a failure")
	}
}

// TestCloseFlushes: records sent just before Close are written and
// acknowledged by the time Close returns.
func TestCloseFlushes(t *testing.T) {
	c := kafkatest.NewFake(t)
	topic := c.Topic(t, "flush", 1)
	p, err := New(Config{Brokers: c.Brokers(), BatchTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var acks ackCounter
	for i := 0; i < 10; i++ {
		p.Send(Record{Topic: topic, Value: []byte("{}"), Ack: ack{&acks, i}})
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := acks.n.Load(); got != 10 {
		t.Fatalf("%d of 10 acknowledged at Close", got)
	}
	p.Send(Record{Topic: topic, Value: []byte("{}")})
	if err := <-p.Err(); err == nil {
		t.Fatal("send after close did not fail the producer")
	}
}

// TestNoLeaderIsRetried: a partition without a leader for the moment, as
// just after a broker restart, is retried by the writer, not given up on.
func TestNoLeaderIsRetried(t *testing.T) {
	err := fmt.Errorf("kafka.(*Client).Produce: %w", &produceError{protocol.NewErrNoLeader("out", 1)})
	_, got := noLeaderIsTemporary{failingTransport{err}}.RoundTrip(context.Background(), nil, nil)
	var temp interface{ Temporary() bool }
	if !errors.As(got, &temp) || !temp.Temporary() {
		t.Errorf("%v is not temporary for the writer", got)
	}
	if !errors.Is(got, protocol.ErrNoLeader) || got.Error() != err.Error() {
		t.Errorf("got %v, want %v unchanged", got, err)
	}
	other := errors.New("something else")
	if _, got := (noLeaderIsTemporary{failingTransport{other}}).RoundTrip(context.Background(), nil, nil); got != other {
		t.Errorf("got %v, want %v as it was", got, other)
	}
}

type produceError struct{ err error }

func (e *produceError) Error() string { return "fetch request error: " + e.err.Error() }
func (e *produceError) Unwrap() error { return e.err }

type failingTransport struct{ err error }

func (f failingTransport) RoundTrip(context.Context, net.Addr, kafka.Request) (kafka.Response, error) {
	return nil, f.err
}

// TestCompression: every codec's batches reach the broker compressed with
// it and read back as written.
func TestCompression(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		for _, tt := range []struct {
			codec kafka.Compression
			want  uint8
		}{{0, 0}, {kafka.Gzip, 1}, {kafka.Snappy, 2}, {kafka.Lz4, 3}, {kafka.Zstd, 4}} {
			t.Run(fmt.Sprintf("codec %d", tt.want), func(t *testing.T) {
				topic := c.Topic(t, "compression", 1)
				p, err := New(Config{Brokers: c.Brokers(), Compression: tt.codec})
				if err != nil {
					t.Fatal(err)
				}
				var acks ackCounter
				const n = 50
				value := strings.Repeat(`{"alert":"the same bytes again"}`, 20)
				for i := range n {
					p.Send(Record{Topic: topic, Key: []byte(fmt.Sprint(i)), Value: []byte(value), Ack: ack{&acks, i}})
				}
				waitFor(t, "acknowledgements", func() bool { return acks.n.Load() == n })
				if err := p.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
				got := c.ReadN(t, topic, n, 30*time.Second)
				for _, r := range got {
					if r.Compression != tt.want || string(r.Value) != value {
						t.Fatalf("record %s: codec %d, value %d bytes; want codec %d and the value written", r.Key, r.Compression, len(r.Value), tt.want)
					}
				}
			})
		}
	})
}
