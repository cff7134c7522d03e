package producer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/defender-enricher/defender-enricher/kafkatest"
)

// sized returns a record of exactly n bytes as RecordSize counts them, with
// the given headers, padding the value.
func sized(t *testing.T, topic string, n int, headers []kafka.Header) Record {
	t.Helper()
	key := []byte("da637308392288907382_-880718168")
	pad := n - RecordSize(key, nil, headers)
	if pad < 0 {
		t.Fatalf("headers alone are over %d bytes", n)
	}
	r := Record{Topic: topic, Key: key, Value: bytes.Repeat([]byte("v"), pad), Headers: headers}
	if got := RecordSize(r.Key, r.Value, r.Headers); got != n {
		t.Fatalf("RecordSize = %d, want %d", got, n)
	}
	return r
}

// TestRecordSizeIsTheWritersCount: a writer whose BatchBytes is a record's
// RecordSize takes the record, and refuses it one byte below, headers
// included.
func TestRecordSizeIsTheWritersCount(t *testing.T) {
	c := kafkatest.NewFake(t)
	topic := c.Topic(t, "size", 1)
	cases := []struct {
		name       string
		key, value []byte
		headers    []kafka.Header
	}{
		{"empty", nil, nil, nil},
		{"key and value", []byte("k"), []byte(`{"a":1}`), nil},
		{"headers", []byte("k"), []byte("{}"), []kafka.Header{{Key: "traceparent", Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")}, {Key: "", Value: nil}}},
		{"long header", nil, bytes.Repeat([]byte("x"), 70_000), []kafka.Header{{Key: strings.Repeat("k", 200), Value: bytes.Repeat([]byte("h"), 20_000)}}},
	}
	for _, tc := range cases {
		n := RecordSize(tc.key, tc.value, tc.headers)
		msg := kafka.Message{Topic: topic, Key: tc.key, Value: tc.value, Headers: tc.headers}
		for _, limit := range []int{n, n - 1} {
			w := &kafka.Writer{Addr: kafka.TCP(c.Brokers()...), BatchBytes: int64(limit), AllowAutoTopicCreation: false}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := w.WriteMessages(ctx, msg)
			cancel()
			_ = w.Close()
			var tooLarge kafka.MessageTooLargeError
			if refused := errors.As(err, &tooLarge); refused != (limit < n) {
				t.Errorf("%s: RecordSize %d, writer with BatchBytes %d: %v", tc.name, n, limit, err)
			} else if limit == n && err != nil {
				t.Errorf("%s: writing at BatchBytes = RecordSize: %v", tc.name, err)
			}
		}
	}
}

// TestBacklogFitsTheTopicLimit: a backlog of records of a few kilobytes,
// headers included, and records as large as MaxMessageBytes allows, all to
// one partition, is written in batches that a topic with Kafka's default
// max.message.bytes (1,048,588) takes. With batches of MaxMessageBytes +
// 64 KiB, as the connector had, the broker refused a batch of the first
// kind (MESSAGE_TOO_LARGE) and the producer failed.
func TestBacklogFitsTheTopicLimit(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		topic := c.Topic(t, "backlog", 1)
		p, err := New(Config{Brokers: c.Brokers()})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close(context.Background())
		headers := []kafka.Header{{Key: "x-trace", Value: bytes.Repeat([]byte("t"), 1024)}}
		var acks ackCounter
		n := 0
		send := func(r Record) {
			r.Ack = ack{&acks, n}
			p.Send(r)
			n++
		}
		for i := range 2000 {
			send(sized(t, topic, 2500, headers))
			if i%700 == 0 {
				send(sized(t, topic, DefaultMaxMessageBytes, headers))
			}
		}
		deadline := time.NewTimer(60 * time.Second)
		defer deadline.Stop()
		for acks.n.Load() < int64(n) {
			select {
			case err := <-p.Err():
				t.Fatalf("after %d of %d acknowledgements: %v", acks.n.Load(), n, err)
			case <-deadline.C:
				t.Fatalf("%d of %d acknowledged after 60s", acks.n.Load(), n)
			case <-time.After(5 * time.Millisecond):
			}
		}
		if s := p.Stats(); s.BatchBytes.Max > int64(DefaultMaxMessageBytes) {
			t.Fatalf("a batch of %d bytes, over %d", s.BatchBytes.Max, DefaultMaxMessageBytes)
		}
	})
}

// TestRecordOverTheLimitIsRefused: a record of exactly MaxMessageBytes, its
// headers counted, is written; one byte more is refused before it reaches
// the writer, with an error that names the option and the topic.
func TestRecordOverTheLimitIsRefused(t *testing.T) {
	c := kafkatest.NewFake(t)
	topic := c.Topic(t, "limit", 1)
	const limit = 10_000
	p, err := New(Config{Brokers: c.Brokers(), MaxMessageBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	headers := []kafka.Header{{Key: "x-trace", Value: bytes.Repeat([]byte("t"), 4000)}}
	var acks ackCounter
	ok := sized(t, topic, limit, headers)
	ok.Ack = ack{&acks, 0}
	p.Send(ok)
	waitFor(t, "the record at the limit", func() bool { return acks.n.Load() == 1 })

	over := sized(t, topic, limit+1, headers)
	over.Ack = ack{&acks, 1}
	p.Send(over)
	select {
	case err := <-p.Err():
		if !errors.Is(err, ErrRecordTooLarge) {
			t.Fatalf("error %v does not match ErrRecordTooLarge", err)
		}
		for _, want := range []string{fmt.Sprintf("%q", topic), "ENRICHER_MAX_MESSAGE_BYTES (10000)", "10001 bytes"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no error for a record over the limit")
	}
	if err := p.Close(context.Background()); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("Close = %v, want the producer's error", err)
	}
	if got := c.ReadN(t, topic, 1, 30*time.Second); len(got) != 1 || len(got[0].Value) != len(ok.Value) {
		t.Fatalf("the topic holds %d records, want only the one at the limit", len(got))
	}
	if acks.n.Load() != 1 {
		t.Fatal("the refused record was acknowledged")
	}
}
