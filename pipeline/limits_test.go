package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/defender-enricher/defender-enricher/consumer"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/pipeline"
	"github.com/defender-enricher/defender-enricher/producer"
	"github.com/defender-enricher/defender-enricher/schemas"
)

// chanSource hands out the messages sent on msgs, and records what the
// pipeline held each time it asked for one.
type chanSource struct {
	msgs    chan *consumer.Message
	fetches atomic.Int64
	onFetch func()
}

func (s *chanSource) Fetch(ctx context.Context) (*consumer.Message, error) {
	s.fetches.Add(1)
	if s.onFetch != nil {
		s.onFetch()
	}
	select {
	case m := <-s.msgs:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ackSink acknowledges every record at once, or never when hold is set,
// and keeps what was sent.
type ackSink struct {
	mu      sync.Mutex
	recs    []producer.Record
	n       int
	hold    bool
	discard bool // keep no record, only the count
	limit   int  // records over it are refused, as by the producer; 0: none
	errc    chan error
}

func newAckSink() *ackSink { return &ackSink{errc: make(chan error, 1)} }

func (s *ackSink) Send(r producer.Record) {
	// As the producer does: a record over the limit is never written, and
	// the write fails for good.
	if s.limit > 0 && producer.RecordSize(r.Key, r.Value, r.Headers) > s.limit {
		select {
		case s.errc <- fmt.Errorf("record of %d bytes to %q over the limit of %d", producer.RecordSize(r.Key, r.Value, r.Headers), r.Topic, s.limit):
		default:
		}
		return
	}
	s.mu.Lock()
	s.n++
	if !s.discard {
		s.recs = append(s.recs, r)
	}
	hold := s.hold
	s.mu.Unlock()
	if !hold && r.Ack != nil {
		r.Ack.Acked()
	}
}

func (s *ackSink) Err() <-chan error { return s.errc }

func (s *ackSink) sent() []producer.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]producer.Record(nil), s.recs...)
}

func newTestPipeline(t *testing.T, cfg pipeline.Config, src pipeline.Source, lk pipeline.Lookup, out pipeline.Sink) *pipeline.Pipeline {
	t.Helper()
	cfg.InputTopic, cfg.OutputTopic, cfg.DLQTopic = "in", "out", "dlq"
	if cfg.Parser == nil {
		cfg.Parser, _ = schemas.NewParser(schemas.ParserConfig{})
	}
	p, err := pipeline.New(cfg, src, lk, out)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func message(offset int64, value []byte, headers ...kafka.Header) *consumer.Message {
	return &consumer.Message{Message: kafka.Message{Topic: "in", Offset: offset, Value: value, Headers: headers}}
}

func header(hs []kafka.Header, key string) (string, int) {
	first, n := "", 0
	for _, h := range hs {
		if h.Key == key {
			if n == 0 {
				first = string(h.Value)
			}
			n++
		}
	}
	return first, n
}

// TestNoMessageWithoutRecord: on kfake, an alert with an empty records
// array is published, and an envelope with no records is a dead letter:
// neither is committed with nothing written.
func TestNoMessageWithoutRecord(t *testing.T) {
	lk := &fakeLookup{hits: map[string]*defender.User{idA: testUser(t, "a")}}
	r := newRig(t, pipeline.Config{}, lk, 1)
	r.c.Produce(t, r.in,
		kafkatest.Record{Value: []byte(`{"id":"` + idA + `","title":"x","records":[]}`)},
		kafkatest.Record{Value: []byte(`{"records":[]}`)},
	)
	if got := r.read(t, 1); got[0].AlertID != idA || got[0].Enrichment.Status != "enriched" {
		t.Fatalf("output %+v, want the alert enriched", got[0])
	}
	dl := r.c.ReadN(t, r.dlq, 1, 30*time.Second)[0]
	var reason string
	for _, h := range dl.Headers {
		if h.Key == schemas.HeaderReason {
			reason = string(h.Value)
		}
	}
	if reason != string(schemas.ReasonEmptyEnvelope) {
		t.Fatalf("dead letter reason %q, want %q", reason, schemas.ReasonEmptyEnvelope)
	}
	if string(dl.Value) != `{"records":[]}` {
		t.Fatalf("dead letter value %q", dl.Value)
	}
	waitUntil(t, "both messages committed", func() bool { return r.c.Committed(t, r.group, r.in)[0] == 2 })
}

// TestEnvelopeFanOutIsOneDeadLetter: an envelope of 499,991 records (just
// under a megabyte) is one dead letter, not half a million.
func TestEnvelopeFanOutIsOneDeadLetter(t *testing.T) {
	value := []byte(`{"records":[` + strings.TrimSuffix(strings.Repeat("1,", 499_991), ",") + `]}`)
	src := &chanSource{msgs: make(chan *consumer.Message, 1)}
	out := newAckSink()
	p := newTestPipeline(t, pipeline.Config{}, src, &fakeLookup{}, out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	src.msgs <- message(0, value)
	waitUntil(t, "the dead letter", func() bool { return p.Stats().DeadLetters == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	recs := out.sent()
	if len(recs) != 1 || recs[0].Topic != "dlq" {
		t.Fatalf("%d records sent, want one dead letter", len(recs))
	}
	if reason, _ := header(recs[0].Headers, schemas.HeaderReason); reason != string(schemas.ReasonTooManyRecords) {
		t.Fatalf("reason %q, want %q", reason, schemas.ReasonTooManyRecords)
	}
}

// TestDeadLetterLogIsRateLimited: 500 bad records of one envelope make one
// "dead letter" line and one line counting the other 499, not 500 lines.
func TestDeadLetterLogIsRateLimited(t *testing.T) {
	var logBuf lockedBuffer
	log := slog.New(slog.NewJSONHandler(&logBuf, nil))
	value := []byte(`{"records":[` + strings.TrimSuffix(strings.Repeat("1,", 500), ",") + `]}`)
	src := &chanSource{msgs: make(chan *consumer.Message, 1)}
	out := newAckSink()
	p := newTestPipeline(t, pipeline.Config{Logger: log, DeadLetterLogInterval: time.Hour}, src, &fakeLookup{}, out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	src.msgs <- message(0, value)
	waitUntil(t, "500 dead letters", func() bool { return p.Stats().DeadLetters == 500 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var whole, counted int
	var summed int64
	for _, line := range strings.Split(strings.TrimSpace(logBuf.String()), "\n") {
		var l struct {
			Msg    string `json:"msg"`
			Reason string `json:"reason"`
			Count  int64  `json:"count"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		switch l.Msg {
		case "dead letter":
			whole++
		case "dead letters not logged one by one":
			counted++
			summed += l.Count
			if l.Reason != string(schemas.ReasonNotObject) {
				t.Errorf("summary reason %q", l.Reason)
			}
		}
	}
	if whole != 1 || counted != 1 || summed != 499 {
		t.Fatalf("%d whole lines and %d summaries counting %d, want 1, 1 and 499", whole, counted, summed)
	}
	if n := len(out.sent()); n != 500 {
		t.Fatalf("%d dead letters written, want 500", n)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestMessageIsReleasedOnceAcknowledged: the fetch loop keeps no reference
// to a message whose events are all written, so its value can be freed
// while the loop waits for the next one.
func TestMessageIsReleasedOnceAcknowledged(t *testing.T) {
	src := &chanSource{msgs: make(chan *consumer.Message, 1)}
	out := newAckSink()
	out.discard = true
	p := newTestPipeline(t, pipeline.Config{}, src, &fakeLookup{}, out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	var freed atomic.Bool
	value := make([]byte, 0, 1<<20)
	value = append(value, `{"records":[`...)
	value = append(value, strings.TrimSuffix(strings.Repeat("1,", 100), ",")...)
	value = append(value, "]}"...)
	runtime.SetFinalizer(&value[:1][0], func(*byte) { freed.Store(true) })
	src.msgs <- message(0, value)
	value = nil
	waitUntil(t, "100 dead letters and the next fetch", func() bool {
		return p.Stats().DeadLetters == 100 && src.fetches.Load() == 2
	})
	waitUntil(t, "the message's value to be freed", func() bool {
		runtime.GC()
		return freed.Load()
	})
}

// TestInFlightBytesBound: fetching waits while the input messages held
// reach MaxInFlightBytes, whatever MaxInFlight allows.
func TestInFlightBytesBound(t *testing.T) {
	const limit, size = 10_000, 4_000
	release := make(chan struct{})
	lk := &fakeLookup{answer: func(ctx context.Context, id string) (*defender.User, error) {
		select {
		case <-release:
			return testUser(t, "a"), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}
	src := &chanSource{msgs: make(chan *consumer.Message, 10)}
	var p *pipeline.Pipeline
	var over atomic.Int64 // fetches asked for while the bytes held were at the limit
	src.onFetch = func() {
		if held := p.Stats().InFlightBytes; held >= limit {
			over.Store(held)
		}
	}
	out := newAckSink()
	p = newTestPipeline(t, pipeline.Config{MaxInFlightBytes: limit, MaxInFlight: 1000}, src, lk, out)
	prefix := fmt.Sprintf(`{"id":%q,"pad":"`, idA)
	value := []byte(prefix + strings.Repeat("x", size-len(prefix)-2) + `"}`)
	for i := range 10 {
		src.msgs <- message(int64(i), value)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitUntil(t, "three messages fetched", func() bool { return src.fetches.Load() >= 3 && p.Stats().InFlightBytes >= limit })
	if held := p.Stats().InFlightBytes; held != 3*size {
		t.Fatalf("%d bytes held, want %d (three messages)", held, 3*size)
	}
	close(release)
	waitUntil(t, "ten alerts published", func() bool { return p.Stats().Enriched == 10 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if held := over.Load(); held != 0 {
		t.Fatalf("fetched while %d bytes were held, over the limit of %d", held, limit)
	}
	if held := p.Stats().InFlightBytes; held != 0 {
		t.Fatalf("%d bytes still held after every event was written", held)
	}
}

// TestDeadLetterHeadersCannotBeSpoofed: input headers with the dead-letter
// headers' names are replaced, not followed, by the connector's own.
func TestDeadLetterHeadersCannotBeSpoofed(t *testing.T) {
	src := &chanSource{msgs: make(chan *consumer.Message, 1)}
	out := newAckSink()
	p := newTestPipeline(t, pipeline.Config{}, src, &fakeLookup{}, out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	src.msgs <- message(7, []byte(`not json`),
		kafka.Header{Key: "trace", Value: []byte("t1")},
		kafka.Header{Key: schemas.HeaderReason, Value: []byte("forged")},
		kafka.Header{Key: schemas.HeaderOffset, Value: []byte("999")},
		kafka.Header{Key: "ENRICHER.ERROR.REASON", Value: []byte("forged")},
	)
	waitUntil(t, "the dead letter", func() bool { return p.Stats().DeadLetters == 1 })
	cancel()
	<-done
	hs := out.sent()[0].Headers
	if v, n := header(hs, schemas.HeaderReason); v != string(schemas.ReasonInvalidJSON) || n != 1 {
		t.Fatalf("reason %q (%d of them), want %q once", v, n, schemas.ReasonInvalidJSON)
	}
	if v, n := header(hs, schemas.HeaderOffset); v != "7" || n != 1 {
		t.Fatalf("offset %q (%d of them), want 7 once", v, n)
	}
	if _, n := header(hs, "ENRICHER.ERROR.REASON"); n != 0 {
		t.Fatal("a reserved name in other case was kept")
	}
	if v, _ := header(hs, "trace"); v != "t1" || hs[0].Key != "trace" {
		t.Fatalf("the input's own headers were not kept first: %v", hs)
	}
}

// TestOversizedHeadersStillDeadLetter: headers count towards the size
// limit; an output over it goes to the dead-letter topic, and a dead letter
// whose input headers alone are over it leaves them out instead of failing.
func TestOversizedHeadersStillDeadLetter(t *testing.T) {
	const limit = 4096
	src := &chanSource{msgs: make(chan *consumer.Message, 2)}
	out := newAckSink()
	out.limit = limit
	lk := &fakeLookup{hits: map[string]*defender.User{idA: testUser(t, "a")}}
	p := newTestPipeline(t, pipeline.Config{MaxMessageBytes: limit}, src, lk, out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	alert := []byte(`{"id":"` + idA + `"}`)
	src.msgs <- message(0, alert, kafka.Header{Key: "big", Value: bytes.Repeat([]byte("h"), limit-300)})
	src.msgs <- message(1, alert, kafka.Header{Key: "huge", Value: bytes.Repeat([]byte("h"), 2*limit)})
	waitUntil(t, "two dead letters", func() bool { return p.Stats().DeadLetters == 2 })
	cancel()
	<-done
	for i, rec := range out.sent() {
		if size := producer.RecordSize(rec.Key, rec.Value, rec.Headers); rec.Topic != "dlq" || size > limit {
			t.Fatalf("record %d: %d bytes to %q, want a dead letter within %d", i, size, rec.Topic, limit)
		}
		if reason, _ := header(rec.Headers, schemas.HeaderReason); reason != string(schemas.ReasonTooLarge) {
			t.Fatalf("record %d: reason %q", i, reason)
		}
	}
	second := out.sent()[1]
	if v, _ := header(second.Headers, schemas.HeaderDropped); v != "headers" {
		t.Fatalf("%s = %q, want headers", schemas.HeaderDropped, v)
	}
	if _, n := header(second.Headers, "huge"); n != 0 || !bytes.Equal(second.Value, alert) {
		t.Fatalf("dead letter kept the huge header or lost its value: %q", second.Value)
	}
	if _, n := header(second.Headers, schemas.HeaderTruncated); n != 0 {
		t.Fatal("a dead letter whose value was kept whole says it was truncated")
	}
}

// TestWriteErrorDuringShutdownIsReported: a write error that comes with
// SIGTERM is Run's error, and the drain does not wait out its timeout for
// events that can no longer be acknowledged.
func TestWriteErrorDuringShutdownIsReported(t *testing.T) {
	writeErr := errors.New(`producer: writing to topic "out": not authorised`)
	for i := range 200 {
		src := &chanSource{msgs: make(chan *consumer.Message, 1)}
		out := newAckSink()
		out.hold = true
		lk := &fakeLookup{hits: map[string]*defender.User{idA: testUser(t, "a")}}
		p := newTestPipeline(t, pipeline.Config{DrainTimeout: time.Hour}, src, lk, out)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		src.msgs <- message(0, []byte(`{"id":"`+idA+`"}`))
		waitUntil(t, "the event sent", func() bool { return len(out.sent()) == 1 })
		out.errc <- writeErr
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, writeErr) {
				t.Fatalf("run %d: Run returned %v, want the write error", i, err)
			}
		case <-time.After(time.Minute): // a guard against a hang only
			t.Fatalf("run %d: Run waited out the drain after a write error", i)
		}
	}
}

// TestFetchRetryLog: the retry log line gives its durations as text, and
// how long the failed fetch took, so that the time between two lines adds up.
func TestFetchRetryLog(t *testing.T) {
	var logBuf lockedBuffer
	var calls atomic.Int64
	src := sourceFunc(func(ctx context.Context) (*consumer.Message, error) {
		if calls.Add(1) <= 2 {
			return nil, errors.New("consumer: fetch: connection refused")
		}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	p := newTestPipeline(t, pipeline.Config{Logger: slog.New(slog.NewJSONHandler(&logBuf, nil))}, src, &fakeLookup{}, newAckSink())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitUntil(t, "a third fetch", func() bool { return calls.Load() >= 3 })
	cancel()
	<-done
	var lines []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logBuf.String()), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatal(err)
		}
		if l["msg"] == "fetching failed; retrying" {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d retry lines, want 2", len(lines))
	}
	if lines[0]["retry_in"] != "100ms" || lines[1]["retry_in"] != "200ms" {
		t.Fatalf("retry_in %v, %v; want 100ms, 200ms", lines[0]["retry_in"], lines[1]["retry_in"])
	}
	if took, ok := lines[0]["fetch_took"].(string); !ok {
		t.Fatalf("fetch_took %v, want a duration as text", lines[0]["fetch_took"])
	} else if _, err := time.ParseDuration(took); err != nil {
		t.Fatal(err)
	}
}

type sourceFunc func(context.Context) (*consumer.Message, error)

func (f sourceFunc) Fetch(ctx context.Context) (*consumer.Message, error) { return f(ctx) }

// TestDeadLetterFitsTheSmallestLimit: at the smallest ENRICHER_MAX_MESSAGE_BYTES
// (1024) and the longest topic name Kafka allows (249), a message whose key,
// value and headers are each over the limit still makes a dead letter the
// producer takes, with the connector's own headers whole.
func TestDeadLetterFitsTheSmallestLimit(t *testing.T) {
	const limit = 1024
	topic := strings.Repeat("t", 249)
	src := &chanSource{msgs: make(chan *consumer.Message, 1)}
	out := newAckSink()
	out.limit = limit
	p := newTestPipeline(t, pipeline.Config{MaxMessageBytes: limit}, src, &fakeLookup{}, out)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	m := message(1<<40, bytes.Repeat([]byte("x"), 2*limit), kafka.Header{Key: "h", Value: bytes.Repeat([]byte("h"), 2*limit)})
	m.Topic, m.Partition, m.Key = topic, 1<<20, bytes.Repeat([]byte("k"), 2*limit)
	src.msgs <- m
	waitUntil(t, "the dead letter, or a refused write", func() bool { return p.Stats().DeadLetters == 1 || len(out.errc) > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	rec := out.sent()[0]
	if v, _ := header(rec.Headers, schemas.HeaderDropped); v != "key,headers" {
		t.Fatalf("%s = %q, want key,headers", schemas.HeaderDropped, v)
	}
	if v, _ := header(rec.Headers, schemas.HeaderTopic); v != topic {
		t.Fatalf("origin topic %q", v)
	}
	if v, _ := header(rec.Headers, schemas.HeaderTruncated); v != fmt.Sprint(2*limit) {
		t.Fatalf("%s = %q", schemas.HeaderTruncated, v)
	}
}
