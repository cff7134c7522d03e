// Package consumer reads the input topic in a Kafka consumer group and commits
// an offset only after every message below it has been acknowledged.
//
// A Consumer wraps one kafka-go Reader. The caller runs one fetch loop (Fetch),
// hands each Message on, and calls Message.Done when the output (or the
// dead-letter topic) has acknowledged what came out of it; Message.Expect
// says how many acknowledgements a message awaits when one input message
// turns into several events. Run commits on an interval, Close commits one
// last time and leaves the group. Per partition, the committed offset is the
// one after the newest message of the contiguous done prefix, in fetch order,
// so gaps in offsets (compaction, transaction markers) are never waited for,
// and a crash at any moment loses nothing: what was fetched but not committed
// is fetched again. The package does not bound the number of messages in
// flight: the caller pauses by not calling Fetch.
//
// # Rebalances
//
// kafka-go has no callback on revocation or assignment. When a generation
// ends (a heartbeat, the partition watcher or the coordinator connection
// fails), kafka-go stops its partition readers, joins the next generation,
// reads the group's committed offsets and starts new partition readers from
// them. Messages it buffered in the old generation are still returned by
// Fetch until the new one starts, then discarded. The tracker follows from
// this:
//
//   - For a partition this consumer keeps, the new generation starts at the
//     committed offset, which is at or below the newest offset fetched unless
//     everything fetched had been committed (then the stream just continues).
//     An offset at or below the newest one seen on a partition restarts that
//     partition's tracking: in-flight messages at or above the new offset are
//     forgotten (they are fetched again; acknowledging the old copies no
//     longer matters), those below it are still waited for, and the done
//     prefix already reached is kept, since everything below it was
//     acknowledged. Stats.Restarts counts these.
//   - For a partition moved to another member, this consumer is not told.
//     When its old in-flight messages are acknowledged, the next commit may
//     commit that partition once more: neither kafka-go nor the broker checks
//     that the committing member owns the partition. The offset committed is
//     still one below which everything was acknowledged, so this can move the
//     group's offset back below the new owner's (duplicates after the next
//     restart or rebalance), never past an unacknowledged message.
//   - An offset above the newest one seen plus one is taken as a gap, never
//     as a restart: offsets have gaps (compaction, transaction markers, data
//     that expired before kafka-go reached it), and forgetting in-flight
//     messages at a gap would let a commit pass them. A new generation that
//     starts past what this consumer fetched (another member committed
//     further) looks the same and needs nothing more: the offsets between
//     were acknowledged by that member.
//
// kafka-go's own rebalance counter is reported in Stats.Rebalances but not
// used for tracking: it also counts partition leader changes, after which
// the stream continues where it was, and it is incremented before the new
// generation's readers start.
//
// # Commits
//
// Commits are synchronous and bounded by Config.CommitTimeout. A commit made
// while no generation is active waits in kafka-go until the next generation
// starts; if the deadline passes first, the request may still be sent later.
// That is harmless: the offset sent for a partition never decreases, and
// kafka-go sends requests in order. A failed commit is retried at the next
// interval.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/defender-enricher/defender-enricher/health"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultCommitInterval = time.Second
	DefaultCommitTimeout  = 10 * time.Second
	DefaultMaxBytes       = 10 << 20
	DefaultDialTimeout    = 10 * time.Second
)

// ErrClosed is returned by Fetch and Commit after Close.
var ErrClosed = errors.New("consumer: closed")

// Config configures a Consumer. The zero value of every optional field means
// its default.
type Config struct {
	// Brokers are the bootstrap brokers, host:port. Required.
	Brokers []string
	// Topic is the topic to read. Required.
	Topic string
	// Group is the consumer group. Required.
	Group string
	// StartOffset is where a group with no committed offset for a partition
	// starts: kafka.FirstOffset (the default) or kafka.LastOffset. With
	// LastOffset, a partition whose first commit has not happened yet when a
	// rebalance occurs starts again at the end, skipping what came between.
	StartOffset int64
	// Dialer carries TLS and SASL settings. Nil means a plain dialer with a
	// 10 s timeout (DefaultDialTimeout).
	Dialer *kafka.Dialer
	// CommitInterval is how often Run commits done offsets. Default 1 s.
	CommitInterval time.Duration
	// CommitTimeout bounds each commit, which can otherwise block for as long
	// as a rebalance takes. Default 10 s.
	CommitTimeout time.Duration
	// MaxBytes is the most one fetch asks the broker for; keep it above the
	// largest input message. Default 10 MiB.
	MaxBytes int
	// SessionTimeout is how long the group waits for a member that stopped
	// heartbeating (a killed process) before it hands its partitions on.
	// Default 30 s (kafka-go's); the broker bounds it with
	// group.min.session.timeout.ms (6 s by default).
	SessionTimeout time.Duration
	// Logger receives the consumer's logs, and kafka-go's at debug level.
	// Nil discards them.
	Logger *slog.Logger

	// Beat is ticked by Run for the liveness watchdog: Idle between
	// commits, Busy while it commits (bounded by CommitTimeout). Nil: not
	// watched.
	Beat *health.Beat
	// Metrics receives the consumer's lag and commit figures, labelled
	// with Topic; nil: none. One Metrics serves every Consumer of a
	// registry.
	Metrics *Metrics
	// Transport carries TLS and SASL for the lag's requests (the
	// partitions' end offsets and the group's committed offsets), as
	// Dialer does for the reader; nil means a plain one.
	Transport *kafka.Transport
	// LagInterval is how often Run reads the lag. Default 15 s.
	LagInterval time.Duration

	// heartbeatInterval overrides kafka-go's default (3 s) so that tests see
	// rebalances quickly.
	heartbeatInterval time.Duration
}

// withDefaults validates cfg and fills in defaults. Each error names the
// option.
func (cfg Config) withDefaults() (Config, error) {
	if len(cfg.Brokers) == 0 {
		return cfg, errors.New("consumer: Brokers is empty")
	}
	for _, b := range cfg.Brokers {
		if strings.TrimSpace(b) == "" {
			return cfg, errors.New("consumer: Brokers contains an empty address")
		}
	}
	if cfg.Topic == "" {
		return cfg, errors.New("consumer: Topic is empty")
	}
	if cfg.Group == "" {
		return cfg, errors.New("consumer: Group is empty")
	}
	switch cfg.StartOffset {
	case 0:
		cfg.StartOffset = kafka.FirstOffset
	case kafka.FirstOffset, kafka.LastOffset:
	default:
		return cfg, fmt.Errorf("consumer: StartOffset is %d, want kafka.FirstOffset (%d) or kafka.LastOffset (%d)",
			cfg.StartOffset, kafka.FirstOffset, kafka.LastOffset)
	}
	if cfg.CommitInterval < 0 {
		return cfg, fmt.Errorf("consumer: CommitInterval is negative (%s)", cfg.CommitInterval)
	}
	if cfg.CommitInterval == 0 {
		cfg.CommitInterval = DefaultCommitInterval
	}
	if cfg.CommitTimeout < 0 {
		return cfg, fmt.Errorf("consumer: CommitTimeout is negative (%s)", cfg.CommitTimeout)
	}
	if cfg.CommitTimeout == 0 {
		cfg.CommitTimeout = DefaultCommitTimeout
	}
	if cfg.MaxBytes < 0 {
		return cfg, fmt.Errorf("consumer: MaxBytes is negative (%d)", cfg.MaxBytes)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &kafka.Dialer{Timeout: DefaultDialTimeout, DualStack: true}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Transport == nil {
		cfg.Transport = &kafka.Transport{DialTimeout: DefaultDialTimeout}
	}
	if cfg.LagInterval < 0 {
		return cfg, fmt.Errorf("consumer: LagInterval is negative (%s)", cfg.LagInterval)
	}
	if cfg.LagInterval == 0 {
		cfg.LagInterval = DefaultLagInterval
	}
	return cfg, nil
}

// Consumer reads one topic in a consumer group and commits acknowledged
// offsets. Its methods are safe for concurrent use; Fetch calls are
// serialised, because the tracker relies on fetch order.
type Consumer struct {
	cfg     Config
	log     *slog.Logger
	reader  *kafka.Reader
	tracker *tracker

	// fetchMu keeps tracker registration in the order messages were fetched.
	fetchMu sync.Mutex
	// commitMu serialises commits, so that offsets reach kafka-go in the
	// order they were computed and never go backwards, and orders Close
	// after a running commit.
	commitMu sync.Mutex
	// closed is set by Close; guarded by commitMu for writes, read without.
	closed atomic.Bool

	inflight     atomic.Int64
	commits      atomic.Int64
	commitErrors atomic.Int64

	statsMu    sync.Mutex
	rebalances int64
	fetches    int64 // fetch requests kafka-go sent, summed from its Stats

	joined   atomic.Bool  // a generation of the group started (kafka-go logged its assignment)
	assigned atomic.Int64 // partitions of the latest generation
}

// New validates cfg and creates the consumer and its kafka-go reader. New does
// no I/O itself, but kafka-go joins the group in the background from then on,
// so every Consumer returned must be closed. Errors name the bad option.
func New(cfg Config) (*Consumer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Consumer{
		cfg:     cfg,
		log:     cfg.Logger.With("topic", cfg.Topic, "group", cfg.Group),
		tracker: newTracker(),
	}
	cfg.Metrics.init(cfg.Topic)
	c.reader = kafka.NewReader(kafka.ReaderConfig{
		Brokers: cfg.Brokers,
		GroupID: cfg.Group,
		Topic:   cfg.Topic,
		Dialer:  cfg.Dialer,
		// CommitInterval 0 makes CommitMessages synchronous: it returns the
		// broker's answer. With an interval, kafka-go would accept the offsets
		// into a background stash and report success before anything reached
		// the broker, so Commit could neither bound nor report a commit, and
		// the stash would commit whatever was handed to it last, even lower.
		CommitInterval: 0,
		StartOffset:    cfg.StartOffset,
		// New partitions of the input topic are read without a restart.
		WatchPartitionChanges: true,
		// Latency matters more than batch size: an alert waiting for a batch
		// to fill is an alert an analyst sees late. The broker answers as soon
		// as one byte is there, or after MaxWait with nothing.
		MinBytes: 1,
		MaxBytes: cfg.MaxBytes,
		MaxWait:  250 * time.Millisecond,
		// The backoff between failing fetches; kafka-go's defaults, stated so
		// a change in the library does not change us silently.
		ReadBackoffMin:    100 * time.Millisecond,
		ReadBackoffMax:    time.Second,
		HeartbeatInterval: cfg.heartbeatInterval,
		SessionTimeout:    cfg.SessionTimeout,
		// kafka-go logs group and fetch churn, including routine conditions
		// on its error logger (reading past the end of a partition); both go
		// to debug so that they are there when needed and quiet otherwise.
		// Failures that matter reach the caller through Fetch and Commit.
		Logger:      kafka.LoggerFunc(c.kafkaLog("kafka-go")),
		ErrorLogger: kafka.LoggerFunc(c.kafkaLog("kafka-go error")),
	})
	return c, nil
}

func (c *Consumer) kafkaLog(source string) func(string, ...any) {
	return func(format string, args ...any) {
		c.observeKafkaLog(format, args)
		if !c.log.Enabled(context.Background(), slog.LevelDebug) {
			return
		}
		c.log.Debug(strings.TrimSpace(fmt.Sprintf(format, args...)), "source", source)
	}
}

// Fetch returns the next message and registers it with the tracker as
// pending. It blocks until a message is there, ctx is done or the consumer
// is closed. It returns ctx's error when ctx ends it, ErrClosed after Close,
// and otherwise an error from kafka-go (the group could not be joined, a
// partition could not be read) after which kafka-go keeps retrying, so Fetch
// may be called again. Concurrent calls are serialised.
func (c *Consumer) Fetch(ctx context.Context) (*Message, error) {
	c.fetchMu.Lock()
	defer c.fetchMu.Unlock()
	if c.closed.Load() {
		return nil, ErrClosed
	}
	km, err := c.reader.FetchMessage(ctx)
	if err != nil {
		switch {
		case c.closed.Load() || errors.Is(err, io.EOF):
			return nil, ErrClosed
		case ctx.Err() != nil:
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("consumer: fetch from topic %q for group %q: %w", c.cfg.Topic, c.cfg.Group, err)
	}
	if c.closed.Load() {
		// Close has made or is making its final commit: this message could
		// not be committed any more, so it is left for the next reader.
		return nil, ErrClosed
	}
	m := &Message{Message: km, inflight: &c.inflight}
	c.inflight.Add(1)
	var rs *restart
	m.entry, rs = c.tracker.add(km.Partition, km.Offset)
	if rs != nil {
		c.log.Info("partition offsets went back, restarting its tracking (a new group generation resumed from the committed offset)",
			"partition", rs.partition, "offset", rs.from, "last_fetched", rs.last, "forgotten_in_flight", rs.dropped)
	}
	return m, nil
}

// Commit commits, per partition, the offset after the newest message of the
// done prefix, if that advanced since the last successful commit; it does
// nothing when nothing advanced. It never commits an offset lower than one
// this consumer committed before. The commit is bounded by CommitTimeout and
// ctx. Errors name the topic and group and wrap the cause (a broker error,
// context.DeadlineExceeded during a rebalance or with the broker gone);
// nothing is lost by a failed commit, and the next one retries it. After
// Close it returns ErrClosed.
func (c *Consumer) Commit(ctx context.Context) error {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	if c.closed.Load() {
		return ErrClosed
	}
	return c.commitLocked(ctx)
}

func (c *Consumer) commitLocked(ctx context.Context) error {
	offs := c.tracker.collect()
	if len(offs) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, len(offs))
	for i, po := range offs {
		// kafka-go commits a message's offset plus one.
		msgs[i] = kafka.Message{Topic: c.cfg.Topic, Partition: po.partition, Offset: po.offset - 1}
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CommitTimeout)
	defer cancel()
	start := time.Now()
	err := c.reader.CommitMessages(ctx, msgs...)
	c.cfg.Metrics.commit(c.cfg.Topic, time.Since(start), err)
	if err != nil {
		c.commitErrors.Add(1)
		return fmt.Errorf("consumer: commit offsets %s of topic %q for group %q: %w", formatOffsets(offs), c.cfg.Topic, c.cfg.Group, err)
	}
	c.tracker.committed(offs)
	c.commits.Add(1)
	c.log.Debug("committed", "offsets", formatOffsets(offs))
	return nil
}

func formatOffsets(offs []partitionOffset) string {
	var b strings.Builder
	for i, po := range offs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d:%d", po.partition, po.offset)
	}
	return b.String()
}

// Run commits every CommitInterval until ctx is done or the consumer is
// closed, then returns nil. A failed commit is logged and retried at the next
// interval. The final commit is Close's, not Run's: cancel Run, drain the
// pipeline, then Close. With Config.Metrics, Run also reads the group's lag
// every LagInterval.
func (c *Consumer) Run(ctx context.Context) error {
	if c.cfg.Metrics != nil {
		lagDone := make(chan struct{})
		lagCtx, stopLag := context.WithCancel(ctx)
		go func() {
			defer close(lagDone)
			c.runLag(lagCtx)
		}()
		defer func() {
			stopLag()
			<-lagDone
		}()
	}
	t := time.NewTicker(c.cfg.CommitInterval)
	defer t.Stop()
	for {
		c.cfg.Beat.Idle()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		c.cfg.Beat.Busy()
		err := c.Commit(ctx)
		switch {
		case err == nil:
		case errors.Is(err, ErrClosed):
			return nil
		case ctx.Err() != nil:
			return nil
		default:
			c.log.Warn("commit failed, will retry", "error", err)
		}
	}
}

// Close commits what is done one last time, bounded by CommitTimeout and ctx,
// then closes the reader, which leaves the group so that its partitions are
// reassigned at once. Call it after the pipeline has drained: messages not
// done by then are fetched again by whoever reads their partition next. ctx
// must still be live (a shutdown deadline, not the cancelled run context);
// if it ends before kafka-go has left the group, Close returns its error and
// the reader finishes closing in the background. Close returns the commit's
// error, if any, joined with the close's; later calls return nil.
func (c *Consumer) Close(ctx context.Context) error {
	c.commitMu.Lock()
	if c.closed.Load() {
		c.commitMu.Unlock()
		return nil
	}
	// Set before the final commit so that Fetch stops handing out messages
	// that could no longer be committed.
	c.closed.Store(true)
	commitErr := c.commitLocked(ctx)
	c.commitMu.Unlock()

	c.cfg.Transport.CloseIdleConnections()
	done := make(chan error, 1)
	go func() { done <- c.reader.Close() }()
	select {
	case err := <-done:
		if err != nil {
			err = fmt.Errorf("consumer: close reader of topic %q for group %q: %w", c.cfg.Topic, c.cfg.Group, err)
		}
		return errors.Join(commitErr, err)
	case <-ctx.Done():
		return errors.Join(commitErr, fmt.Errorf("consumer: close reader of topic %q for group %q: %w", c.cfg.Topic, c.cfg.Group, ctx.Err()))
	}
}

// Stats is a snapshot of a Consumer's state.
type Stats struct {
	// InFlight is the number of messages fetched and not yet done.
	InFlight int64
	// Committed is, per partition, the offset this consumer last committed
	// (the next offset to read); partitions it never committed are absent.
	Committed map[int]int64
	// Commits and CommitErrors count commits that succeeded and failed;
	// commits with nothing to commit are not counted.
	Commits      int64
	CommitErrors int64
	// Rebalances counts what kafka-go counts as rebalances: generations of
	// the group joined, plus partition leader changes.
	Rebalances int64
	// Restarts counts partitions whose offsets went back, each a partition
	// kept across a rebalance with messages fetched past its committed offset.
	Restarts int64
}

// Stats returns a snapshot. It is safe for concurrent use.
func (c *Consumer) Stats() Stats {
	rs := c.reader.Stats()
	c.statsMu.Lock()
	c.rebalances += rs.Rebalances
	c.fetches += rs.Fetches
	rebalances := c.rebalances
	c.statsMu.Unlock()
	committed, restarts := c.tracker.snapshot()
	return Stats{
		InFlight:     c.inflight.Load(),
		Committed:    committed,
		Commits:      c.commits.Load(),
		CommitErrors: c.commitErrors.Load(),
		Rebalances:   rebalances,
		Restarts:     restarts,
	}
}
