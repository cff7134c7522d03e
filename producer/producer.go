// Package producer writes the connector's output and dead letters with one
// kafka-go Writer, and tells each record's sender when every in-sync replica
// has it. Records sent to one partition are written in the order they were
// sent. An error that the writer's retries could not fix is reported once on
// Err and nothing after it is acknowledged, so the caller stops without
// committing past it: nothing is skipped.
package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

// Acker is told once its record is acknowledged by all in-sync replicas.
// Acked runs on the writer's goroutine: it must be quick.
type Acker interface{ Acked() }

// Record is one message to write.
type Record struct {
	Topic   string
	Key     []byte
	Value   []byte
	Headers []kafka.Header
	Ack     Acker // may be nil
}

// Config configures a Producer.
type Config struct {
	// Brokers are the bootstrap brokers, host:port. Required.
	Brokers []string
	// Transport carries TLS, SASL and the client id; nil means a plain one.
	Transport *kafka.Transport
	// BatchTimeout is how long a partial batch waits for more records.
	// Default 5ms: kafka-go's own default of 1s stalls every small batch, and
	// alerts are few and urgent.
	BatchTimeout time.Duration
	// MaxMessageBytes is the largest record, as RecordSize counts it (key,
	// value and headers), that Send takes: larger ones are the caller's to
	// divert, and one that reaches Send fails the producer before it is
	// written. It bounds a batch too: a batch to one partition never holds
	// more than MaxMessageBytes of records, so the broker takes every batch
	// when the topic's max.message.bytes is at least MaxMessageBytes +
	// BatchOverhead. Default DefaultMaxMessageBytes.
	MaxMessageBytes int
	// Retry bounds the writer's own retries of a failed batch: kafka-go
	// retries leader changes and broken connections this many times with
	// backoff up to 2s. Default 30 (about a minute, enough for a broker
	// restart).
	MaxAttempts int
	// Compression is the codec of every batch written; the zero value is
	// none, the Java producer's default.
	Compression kafka.Compression
	// AllowTopicCreation lets the writer create missing topics (the demo's
	// embedded broker); off by default, since a mistyped topic name should
	// stop the connector rather than start a new topic.
	AllowTopicCreation bool
	Logger             *slog.Logger
}

// DefaultMaxMessageBytes is MaxMessageBytes when not set: with
// BatchOverhead, within Kafka's default max.message.bytes (1,048,588).
const DefaultMaxMessageBytes = 1_000_000

// BatchOverhead is what a record batch adds to its records as the broker
// counts them against max.message.bytes: the v2 batch header, its offset and
// length included.
const BatchOverhead = 61

// ErrRecordTooLarge is matched by the error of a record refused by Send for
// its size.
var ErrRecordTooLarge = errors.New("record too large")

// RecordSize is the size of a record as the writer counts it against
// MaxMessageBytes and the batch bound: key, value, every header's key and
// value, and 22 bytes of framing per record and a few per header. It is at
// least the record's encoded size in a batch. Size checks that must keep a
// record writable, headers included, call it.
func RecordSize(key, value []byte, headers []kafka.Header) int {
	// kafka-go's own estimate (Message.totalSize): fixed-width lengths,
	// attributes and timestamp, and varint-framed headers.
	n := 4 + 1 + 1 + 4 + len(key) + 4 + len(value) + 8 + varintLen(len(headers))
	for _, h := range headers {
		n += varintLen(len(h.Key)) + len(h.Key) + varintLen(len(h.Value)) + len(h.Value)
	}
	return n
}

// varintLen is the length of n as a zig-zag varint.
func varintLen(n int) int {
	u := uint64(n) << 1
	l := 1
	for u >= 0x80 {
		u >>= 7
		l++
	}
	return l
}

// Producer writes records asynchronously. Send and Err are safe for
// concurrent use.
type Producer struct {
	w        *kafka.Writer
	log      *slog.Logger
	maxBytes int

	mu      sync.Mutex
	queue   []kafka.Message
	spare   []kafka.Message
	wake    chan struct{}
	closing bool

	errOnce sync.Once
	err     error // set once, before failed is closed
	errc    chan error
	failed  chan struct{}
	stopped chan struct{}
}

// New returns a Producer; it does no I/O.
func New(cfg Config) (*Producer, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("producer: no brokers")
	}
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = 5 * time.Millisecond
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 30
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Producer{
		log:      cfg.Logger,
		maxBytes: cfg.MaxMessageBytes,
		wake:     make(chan struct{}, 1),
		errc:     make(chan error, 1),
		failed:   make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	transport := cfg.Transport
	if transport == nil {
		transport = &kafka.Transport{ClientID: "defender-enricher"}
	}
	p.w = &kafka.Writer{
		Addr:      kafka.TCP(cfg.Brokers...),
		Transport: newMetadataCache(noLeaderIsTemporary{transport}),
		// Every in-sync replica, or the at-least-once promise means nothing:
		// a struct-literal Writer defaults to RequireNone.
		RequiredAcks: kafka.RequireAll,
		// The Java client's partitioner, so that Kafka Streams and Java
		// consumers downstream agree on where an alert id lives.
		Balancer:     &kafka.Murmur2Balancer{},
		BatchTimeout: cfg.BatchTimeout,
		BatchSize:    500,
		Compression:  cfg.Compression,
		// The broker's max.message.bytes bounds a whole record batch, not
		// one record, and kafka-go does not retry MESSAGE_TOO_LARGE: a batch
		// over it would stop the connector on every restart. kafka-go sums
		// RecordSize over a batch's records, more than their encoded size,
		// and leaves out only the batch header (BatchOverhead): a batch is
		// therefore never larger than the largest record allowed plus that.
		BatchBytes: int64(cfg.MaxMessageBytes),
		// Async, with acknowledgements through Completion: the sender never
		// blocks on the network, and batches to one partition are written one
		// after the other, in order, each retried in place.
		Async:                  true,
		Completion:             p.completion,
		MaxAttempts:            cfg.MaxAttempts,
		WriteBackoffMin:        100 * time.Millisecond,
		WriteBackoffMax:        2 * time.Second,
		AllowAutoTopicCreation: cfg.AllowTopicCreation,
		ErrorLogger:            kafka.LoggerFunc(func(f string, a ...any) { p.log.Warn(fmt.Sprintf("kafka writer: "+f, a...)) }),
	}
	go p.loop()
	return p, nil
}

// noLeaderIsTemporary has the writer retry a partition that has no leader
// for the moment, as it is just after a broker restart: kafka-go v0.4.51
// gives up on it at once, which would stop the connector although the
// partition is back a moment later.
type noLeaderIsTemporary struct{ kafka.RoundTripper }

func (t noLeaderIsTemporary) RoundTrip(ctx context.Context, addr net.Addr, req kafka.Request) (kafka.Response, error) {
	r, err := t.RoundTripper.RoundTrip(ctx, addr, req)
	if err != nil && errors.Is(err, protocol.ErrNoLeader) {
		err = temporaryError{err}
	}
	return r, err
}

type temporaryError struct{ error }

func (temporaryError) Temporary() bool { return true }

func (e temporaryError) Unwrap() error { return e.error }

// Send queues r. It does not block on the network. A record larger than
// MaxMessageBytes is not queued: it fails the producer with an error that
// matches ErrRecordTooLarge. After Close, Send fails the producer (a bug in
// the caller's shutdown order).
func (p *Producer) Send(r Record) {
	if n := RecordSize(r.Key, r.Value, r.Headers); n > p.maxBytes {
		p.fail(fmt.Errorf("producer: a record of %d bytes (key, value and headers) for topic %q is over ENRICHER_MAX_MESSAGE_BYTES (%d): %w",
			n, r.Topic, p.maxBytes, ErrRecordTooLarge))
		return
	}
	m := kafka.Message{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
	if r.Ack != nil {
		m.WriterData = r.Ack
	}
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		p.fail(errors.New("producer: send after close"))
		return
	}
	p.queue = append(p.queue, m)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Err receives the first error that retries could not fix. After it, no
// record is acknowledged any more.
func (p *Producer) Err() <-chan error { return p.errc }

// loop hands queued records to the writer in the order they were sent, many
// per call: WriteMessages looks up metadata and allocates per call.
func (p *Producer) loop() {
	defer close(p.stopped)
	for {
		p.mu.Lock()
		for len(p.queue) == 0 && !p.closing {
			p.mu.Unlock()
			<-p.wake
			p.mu.Lock()
		}
		if len(p.queue) == 0 && p.closing {
			p.mu.Unlock()
			return
		}
		batch := p.queue
		p.queue, p.spare = p.spare[:0], nil
		p.mu.Unlock()

		select {
		case <-p.failed:
			// After a failure nothing more is written: a later record must
			// not be acknowledged ahead of one that was lost.
		default:
			if err := p.w.WriteMessages(context.Background(), batch...); err != nil {
				p.fail(describe(err, batch))
			}
		}
		clear(batch)
		p.mu.Lock()
		p.spare = batch[:0]
		p.mu.Unlock()
	}
}

func (p *Producer) completion(msgs []kafka.Message, err error) {
	if err != nil {
		p.fail(describe(err, msgs))
		return
	}
	select {
	case <-p.failed:
		return
	default:
	}
	for i := range msgs {
		if a, ok := msgs[i].WriterData.(Acker); ok {
			a.Acked()
		}
	}
}

func (p *Producer) fail(err error) {
	p.errOnce.Do(func() {
		p.log.Error("writing to Kafka failed; stopping without committing what was not written", "error", err)
		p.err = err
		close(p.failed)
		p.errc <- err
	})
}

// describe names the topic and says what to do, for the errors an operator
// can act on.
func describe(err error, msgs []kafka.Message) error {
	topic := ""
	if len(msgs) > 0 {
		topic = msgs[0].Topic
	}
	var hint string
	switch {
	case errors.Is(err, kafka.UnknownTopicOrPartition):
		hint = ": create the topic, or fix ENRICHER_OUTPUT_TOPIC / ENRICHER_DLQ_TOPIC"
	case errors.Is(err, kafka.TopicAuthorizationFailed), errors.Is(err, kafka.ClusterAuthorizationFailed):
		hint = ": grant this client WRITE (and DESCRIBE) on the topic"
	case errors.Is(err, kafka.MessageSizeTooLarge):
		hint = fmt.Sprintf(": raise the topic's max.message.bytes to ENRICHER_MAX_MESSAGE_BYTES + %d or more, or lower ENRICHER_MAX_MESSAGE_BYTES", BatchOverhead)
	case errors.Is(err, kafka.NotEnoughReplicas), errors.Is(err, kafka.NotEnoughReplicasAfterAppend):
		hint = ": fewer in-sync replicas than the topic's min.insync.replicas"
	}
	var tooLarge kafka.MessageTooLargeError
	if errors.As(err, &tooLarge) {
		hint = ": a record is larger than ENRICHER_MAX_MESSAGE_BYTES"
	}
	return fmt.Errorf("producer: writing to topic %q failed after retries: %w%s", topic, err, hint)
}

// Close writes everything sent so far and waits for its acknowledgements, or
// for ctx to end. It returns the producer's error, if any.
func (p *Producer) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	done := make(chan error, 1)
	go func() {
		<-p.stopped
		done <- p.w.Close()
	}()
	select {
	case err := <-done:
		select {
		case <-p.failed:
			return p.err
		default:
		}
		if err != nil {
			return fmt.Errorf("producer: closing the writer: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("producer: records still unacknowledged at shutdown (they will be consumed again): %w", ctx.Err())
	}
}

// Stats returns the writer's statistics since the last call.
func (p *Producer) Stats() kafka.WriterStats { return p.w.Stats() }
