// Package pipeline ties the connector together: it fetches alert messages,
// splits them into events, enriches each with the user related to its alert,
// and publishes the result, acknowledging each input message once everything
// that came out of it is written.
//
// Guarantees:
//   - At least once: a message is acknowledged to the consumer (and so may be
//     committed) only after the output or dead-letter topic acknowledged every
//     event from it. Bad input goes to the dead-letter topic with a reason and
//     never stops the partition.
//   - Events of one alert id are published in the order they were fetched.
//   - No head-of-line blocking: an event waits only for its own lookup and for
//     earlier events of the same alert id, never for another alert's call.
//     Answers already in the cache are used at once, on the fetch loop.
//   - Bounded memory: at most MaxInFlight events, and input messages of
//     about MaxInFlightBytes, are between fetch and acknowledgement; when
//     either is full, fetching pauses. Nothing is dropped.
//   - With the passthrough policy an alert whose lookup takes longer than
//     MaxEnrichWait is published with status unavailable (or failed when the
//     API kept failing), without its user. With the wait policy it is held
//     until the API gives an answer (found or not found).
//   - An event published unavailable is deferred: also written to the retry
//     topic, and its input acknowledged only once both are. RunRetries
//     looks it up again when no fresh lookup waits for the budget and
//     publishes an update of it (see retry.go).
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/cache"
	"github.com/defender-enricher/defender-enricher/consumer"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/health"
	"github.com/defender-enricher/defender-enricher/producer"
	"github.com/defender-enricher/defender-enricher/schemas"
)

// Source is where messages come from: *consumer.Consumer.
type Source interface {
	Fetch(ctx context.Context) (*consumer.Message, error)
}

// Sink is where records go: *producer.Producer.
type Sink interface {
	Send(producer.Record)
	Err() <-chan error
}

// Lookup finds the user of an alert: *cache.Cache. ref is the user the
// alert names, zero when it names none or several; an answer for another
// alert that is exactly that user comes back with ByUser set.
type Lookup interface {
	// CachedFor answers from the cache alone; ok is false on a miss.
	CachedFor(alertID string, ref defender.UserRef) (r cache.Result, err error, ok bool)
	LookupFor(ctx context.Context, alertID string, ref defender.UserRef) (cache.Result, error)
}

// Config configures a Pipeline.
type Config struct {
	InputTopic, OutputTopic, DLQTopic string
	// RetryTopic keeps the events published unavailable until RunRetries
	// publishes their update; empty: such events are not deferred.
	RetryTopic string
	// RetryMaxAge is how long after its first publication a deferred
	// event is given up. Default 24h.
	RetryMaxAge time.Duration
	Parser      *schemas.Parser
	// Beat is ticked by the fetch loop for the liveness watchdog: Busy
	// while it works, Idle while it waits on the broker or for room. Nil:
	// not watched.
	Beat *health.Beat
	// Wait holds events until the API answers instead of passing them
	// through after MaxEnrichWait.
	Wait          bool
	MaxEnrichWait time.Duration // default 10s
	MaxInFlight   int           // default 5000
	// MaxInFlightBytes bounds the bytes (key, value, headers) of the input
	// messages between fetch and acknowledgement: fetching waits while
	// this much is held, so at most one message goes over it. Default
	// DefaultMaxInFlightBytes.
	MaxInFlightBytes int64
	MaxMessageBytes  int // largest record written, headers included; default 1,000,000
	// Format is the shape of the output topic's records; default
	// schemas.FormatEnvelope. The retry topic always holds the envelope.
	Format schemas.Format
	// DrainTimeout bounds the wait for in-flight events once fetching
	// stopped; events still waiting then are left unacknowledged, to be
	// consumed again. Default 20s.
	DrainTimeout time.Duration
	// WaitRetry is the first pause before a held event (Wait) is looked up
	// again; it doubles up to 30s. Default 1s.
	WaitRetry time.Duration
	// DeadLetterLogInterval is how often dead letters of one reason are
	// logged one by one: the first in an interval is, the rest are counted
	// and logged as one line when it ends. Default 10s.
	DeadLetterLogInterval time.Duration
	Logger                *slog.Logger
	Registerer            prometheus.Registerer
}

// DefaultMaxInFlightBytes is the default of Config.MaxInFlightBytes: 32 MiB
// of input, which with each event's output copy and the garbage collector's
// headroom keeps the connector within the 256 MiB its deploy files give it.
const DefaultMaxInFlightBytes = 32 << 20

// Pipeline is the connector's event loop. Run it once.
type Pipeline struct {
	cfg    Config
	in     Source
	lookup Lookup
	out    Sink
	log    *slog.Logger
	encode schemas.Encoder // the output topic's format

	slots   chan struct{} // one per event in flight
	bytes   *inflightBytes
	dlLog   *deadLetterLog
	mu      sync.Mutex
	chains  map[string]chain // per alert id, events not yet sent, in fetch order
	stopped bool             // Run has returned: nothing more is sent

	bufs    sync.Pool
	stats   counters
	metrics *metrics
	retries retryState
}

type chain struct{ head, tail *event }

// New returns a Pipeline; it does no I/O.
func New(cfg Config, in Source, lookup Lookup, out Sink) (*Pipeline, error) {
	if cfg.Parser == nil {
		return nil, errors.New("pipeline: Parser is required")
	}
	if cfg.InputTopic == "" || cfg.OutputTopic == "" || cfg.DLQTopic == "" {
		return nil, errors.New("pipeline: input, output and dead-letter topics are required")
	}
	if cfg.MaxEnrichWait <= 0 {
		cfg.MaxEnrichWait = 10 * time.Second
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 5000
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 1_000_000
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 20 * time.Second
	}
	if cfg.WaitRetry <= 0 {
		cfg.WaitRetry = time.Second
	}
	if cfg.MaxInFlightBytes <= 0 {
		cfg.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	if cfg.RetryMaxAge <= 0 {
		cfg.RetryMaxAge = 24 * time.Hour
	}
	if cfg.DeadLetterLogInterval <= 0 {
		cfg.DeadLetterLogInterval = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	encode, err := cfg.Format.Encoder()
	if err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	p := &Pipeline{
		cfg: cfg, in: in, lookup: lookup, out: out, log: cfg.Logger, encode: encode,
		slots:  make(chan struct{}, cfg.MaxInFlight),
		bytes:  newInflightBytes(cfg.MaxInFlightBytes),
		dlLog:  newDeadLetterLog(cfg.Logger, cfg.DeadLetterLogInterval),
		chains: make(map[string]chain),
	}
	p.bufs.New = func() any { b := make([]byte, 0, 4096); return &b }
	m, err := newMetrics(cfg.Registerer, p)
	if err != nil {
		return nil, err
	}
	p.metrics = m
	if err := p.retries.init(cfg.Registerer); err != nil {
		return nil, err
	}
	return p, nil
}

// Run fetches and processes messages until ctx ends or a write fails for
// good. Then it stops fetching, waits up to DrainTimeout for events in
// flight, and returns: nil after ctx ended, the write error otherwise. The
// caller then closes the producer (flush) and the consumer (last commit).
func (p *Pipeline) Run(ctx context.Context) error {
	// Lookups outlive ctx until the drain ends: a SIGTERM should let an
	// alert whose answer is on its way be published, not thrown back.
	work, abandon := context.WithCancel(context.WithoutCancel(ctx))
	defer abandon()
	fetchCtx, stopFetching := context.WithCancel(ctx)
	defer stopFetching()

	// One reader of the producer's errors for the whole run, fetching and
	// draining alike, so that a write error ends the run at once whenever
	// it comes, a SIGTERM at the same moment included.
	failed := make(chan struct{})
	var failErr error // written before failed is closed, or after watching ended
	stopWatching, watching := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watching)
		select {
		case err := <-p.out.Err():
			failErr = err
			close(failed)
			stopFetching()
		case <-stopWatching:
		}
	}()
	runDone := make(chan struct{})
	defer close(runDone)
	go p.flushDeadLetterLog(runDone)
	defer func() { p.dlLog.flush(time.Now(), true) }()

	var events []schemas.Event
	var runErr error
	fetchFailures := 0
fetching:
	for {
		// Room for one event before fetching, so that a full pipeline stops
		// fetching rather than holding a message it cannot start on.
		// Waiting for room, for the broker and between failed fetches is
		// waiting on the outside, which the liveness watchdog does not hold
		// against the loop; the loop's own work is Busy.
		p.cfg.Beat.Idle()
		select {
		case p.slots <- struct{}{}:
		case <-fetchCtx.Done():
			break fetching
		}
		if err := p.bytes.waitRoom(fetchCtx); err != nil {
			<-p.slots
			break fetching
		}
		fetchStart := time.Now()
		msg, err := p.in.Fetch(fetchCtx)
		p.cfg.Beat.Busy()
		if err != nil {
			<-p.slots
			if fetchCtx.Err() != nil {
				break fetching
			}
			if errors.Is(err, consumer.ErrClosed) {
				runErr = fmt.Errorf("fetching from topic %q: %w", p.cfg.InputTopic, err)
				break fetching
			}
			// A broker that restarts, a group that cannot be joined for a
			// while, a partition whose leader moves: the consumer reports
			// them and keeps retrying, so fetching goes on. Nothing fetched
			// is lost meanwhile: it is not acknowledged until written.
			// kafka-go retries inside a fetch before it reports, so the time
			// between two of these lines is fetch_took plus retry_in.
			fetchFailures++
			pause := min(100*time.Millisecond<<min(fetchFailures-1, 6), 5*time.Second)
			p.log.Warn("fetching failed; retrying", "topic", p.cfg.InputTopic, "failures", fetchFailures,
				"fetch_took", time.Since(fetchStart).Round(time.Millisecond).String(), "retry_in", pause.String(), "error", err)
			p.cfg.Beat.Idle()
			select {
			case <-time.After(pause):
			case <-fetchCtx.Done():
				break fetching
			}
			continue
		}
		fetchFailures = 0
		events = p.handle(fetchCtx, work, msg, events[:0])
		// The events point into the message; the loop keeps the slice for
		// the next one, not the message.
		clear(events)
	}
	stopFetching()
	drainErr := p.drain(failed)
	// Lookups that end from now on find no producer to write to: their
	// events stay unacknowledged and are consumed again.
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	// A write error reported before this point is Run's error, whichever
	// of the watcher's two cases was chosen when it and the end of the run
	// came together.
	close(stopWatching)
	<-watching
	if failErr == nil {
		select {
		case failErr = <-p.out.Err():
		default:
		}
	}
	if drainErr != nil {
		p.log.Warn("shutdown: events still in flight were left to be consumed again", "in_flight", len(p.slots), "error", drainErr)
	}
	if failErr != nil && runErr == nil {
		runErr = failErr
	}
	return runErr
}

// drain waits for the events in flight, up to DrainTimeout, or until the
// producer failed (failed closed), after which nothing more will be
// acknowledged and waiting is pointless.
func (p *Pipeline) drain(failed <-chan struct{}) error {
	deadline := time.NewTimer(p.cfg.DrainTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for len(p.slots) > 0 {
		select {
		case <-failed:
			return errors.New("a write failed")
		case <-deadline.C:
			return fmt.Errorf("still %d after %v", len(p.slots), p.cfg.DrainTimeout)
		case <-tick.C:
		}
	}
	return nil
}

// flushDeadLetterLog logs the counts of dead letters not logged one by one,
// once an interval, until done is closed.
func (p *Pipeline) flushDeadLetterLog(done <-chan struct{}) {
	t := time.NewTicker(p.cfg.DeadLetterLogInterval)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			p.dlLog.flush(now, false)
		case <-done:
			return
		}
	}
}

// event is one alert (or one envelope record) between fetch and
// acknowledgement.
type event struct {
	p       *Pipeline
	msg     *consumer.Message
	alertID string
	alert   []byte
	record  int
	// fromRecord: alert is a streaming-API record (a fresh event with
	// record 0 or more, or an update of one).
	fromRecord bool
	reject     schemas.Reason
	detail     string
	status     schemas.Status
	source     schemas.Source
	user       []byte
	errText    string
	fetched    time.Time
	held       *heldMessage
	origin     schemas.Origin
	// update is set on an event read back from the retry topic: it is
	// published as an update of the event that went out unavailable.
	update *schemas.Update
	// retried is set on every event read from the retry topic, deferred on
	// one whose deferral was sent with its output.
	retried, deferred, renewed bool
	acks                       atomic.Int32 // records sent for the event and not yet acknowledged
	ready                      bool         // guarded by Pipeline.mu
	next                       *event       // guarded by Pipeline.mu
	buf                        *[]byte
	// What the alert says of itself (schemas.ReadHints), read only when
	// its alert id missed the cache: its severity as it came, and the one
	// user it names, which the lookup may answer from another alert's.
	severity string
	ref      defender.UserRef
}

func (p *Pipeline) handle(fetchCtx, work context.Context, msg *consumer.Message, events []schemas.Event) []schemas.Event {
	events = p.cfg.Parser.Parse(msg.Value, events)
	if len(events) == 0 {
		// Parse never yields nothing; should it ever, the message still may
		// not be acknowledged without a record.
		events = append(events, schemas.Event{Alert: msg.Value, Reject: schemas.ReasonEmptyEnvelope, Detail: "message yielded no event", Record: -1})
	}
	msg.Expect(len(events))
	held := &heldMessage{bytes: messageSize(&msg.Message)}
	held.pending.Store(int64(len(events)))
	p.bytes.add(held.bytes)
	now := time.Now()
	for i := range events {
		if i > 0 { // the first event has the room taken before fetching
			p.cfg.Beat.Idle()
			select {
			case p.slots <- struct{}{}:
				p.cfg.Beat.Busy()
			case <-fetchCtx.Done():
				// Stopping while this message waits for room: its remaining
				// events are not processed, so it is never acknowledged and
				// will be consumed again. Its bytes are released once the
				// events already on their way are written.
				if held.pending.Add(-int64(len(events)-i)) == 0 {
					p.bytes.release(held.bytes)
				}
				return events
			}
		}
		ev := &events[i]
		e := &event{p: p, msg: msg, alertID: ev.AlertID, alert: ev.Alert, record: ev.Record, fromRecord: ev.Record >= 0, reject: ev.Reject, detail: ev.Detail, fetched: now, held: held,
			origin: schemas.Origin{Topic: msg.Topic, Partition: msg.Partition, Offset: msg.Offset}}
		switch {
		case ev.Reject != "":
			p.deadLetter(e)
		case ev.Skip:
			e.status = schemas.StatusSkipped
			p.enqueue(e)
			p.complete(e)
		default:
			p.enqueue(e)
			r, err, ok := p.lookup.CachedFor(e.alertID, defender.UserRef{})
			if !ok {
				// A miss: what the alert says of itself may spare the call.
				h := schemas.ReadHints(e.alert, e.record >= 0)
				e.severity, e.ref = h.Severity, h.User
				if !e.ref.IsZero() {
					r, err, ok = p.lookup.CachedFor(e.alertID, e.ref)
				}
			}
			if ok {
				e.settle(r, err)
				p.complete(e)
				continue
			}
			go p.enrich(work, e)
		}
	}
	return events
}

// enrich looks the user up off the fetch loop and completes the event.
func (p *Pipeline) enrich(work context.Context, e *event) {
	start := time.Now()
	// Severity first: when lookups queue for the call budget, a High
	// alert's goes before a Medium one's, and so on.
	work = budget.WithPriority(work, budget.SeverityPriority(e.severity))
	for attempt := 0; ; attempt++ {
		ctx, cancel := work, context.CancelFunc(func() {})
		if !p.cfg.Wait {
			ctx, cancel = context.WithTimeout(work, p.cfg.MaxEnrichWait)
		}
		r, err := p.lookup.LookupFor(ctx, e.alertID, e.ref)
		cancel()
		if work.Err() != nil {
			return // shutting down: left unacknowledged, consumed again later
		}
		e.settle(r, err)
		// Hold only what time can change: an unavailable API, or failures
		// that mean it is unwell. A refusal (403, 401 after a fresh token)
		// would hold the alert, and its partition's commits, for ever.
		if p.cfg.Wait && defender.Classify(err) == defender.Transient {
			// Hold the event: try again after a pause that grows to 30s.
			pause := min(p.cfg.WaitRetry<<min(attempt, 5), 30*time.Second)
			select {
			case <-time.After(pause):
				continue
			case <-work.Done():
				return
			}
		}
		p.metrics.lookupSeconds.Observe(time.Since(start).Seconds())
		p.complete(e)
		return
	}
}

// settle turns a lookup's answer into the event's enrichment.
func (e *event) settle(r cache.Result, err error) {
	// With the wait policy an event settles again after each failed try:
	// nothing of an earlier answer may stick to the final one.
	e.user, e.errText = nil, ""
	switch {
	case r.ByUser:
		e.source = schemas.SourceUserCache
	case r.Cached:
		e.source = schemas.SourceCache
	default:
		e.source = schemas.SourceAPI
	}
	switch {
	case err == nil:
		e.status, e.user = schemas.StatusEnriched, r.User.JSON
	case errors.Is(err, defender.ErrNotFound):
		// The envelope's error says why there is no user, for every
		// status but enriched and skipped.
		e.status, e.errText = schemas.StatusNotFound, defender.ErrorText(err)
	case errors.Is(err, defender.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		e.status, e.source, e.errText = schemas.StatusUnavailable, schemas.SourceNone, defender.ErrorText(err)
	default:
		e.status, e.source, e.errText = schemas.StatusFailed, schemas.SourceNone, defender.ErrorText(err)
	}
}

// enqueue appends e to its alert id's chain.
func (p *Pipeline) enqueue(e *event) {
	p.mu.Lock()
	c, ok := p.chains[e.alertID]
	if ok {
		c.tail.next = e
		c.tail = e
	} else {
		c = chain{head: e, tail: e}
	}
	p.chains[e.alertID] = c
	p.mu.Unlock()
}

// complete marks e ready and sends every ready event at the head of its
// chain, so that one alert id's events leave in fetch order.
func (p *Pipeline) complete(e *event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	e.ready = true
	c := p.chains[e.alertID]
	for c.head != nil && c.head.ready {
		h := c.head
		c.head = h.next
		h.next = nil
		p.publish(h)
	}
	if c.head == nil {
		delete(p.chains, e.alertID)
	} else {
		p.chains[e.alertID] = c
	}
}

func (p *Pipeline) publish(e *event) {
	e.buf = p.bufs.Get().(*[]byte)
	o := schemas.Output{
		AlertID: e.alertID, Alert: e.alert, Record: e.fromRecord, User: e.user, Origin: e.origin, Update: e.update,
		Enrichment: schemas.Enrichment{Status: e.status, Source: e.source, EnrichedAt: time.Now(), Error: e.errText},
	}
	headers := e.msg.Headers
	if e.update != nil {
		headers = schemas.UpdateHeaders(headers)
	}
	value := p.encode((*e.buf)[:0], &o)
	*e.buf = value
	if size := producer.RecordSize([]byte(e.alertID), value, headers); size > p.cfg.MaxMessageBytes {
		p.putBuf(e)
		e.reject = schemas.ReasonTooLarge
		e.detail = fmt.Sprintf("the enriched event is %d bytes with its key and headers, over ENRICHER_MAX_MESSAGE_BYTES (%d)", size, p.cfg.MaxMessageBytes)
		p.deadLetter(e)
		return
	}
	out := producer.Record{Topic: p.cfg.OutputTopic, Key: []byte(e.alertID), Value: value, Headers: headers, Ack: e}
	// An alert the API could not answer in time is kept to be enriched
	// later; its input is acknowledged once both records are written.
	if e.status == schemas.StatusUnavailable && e.update == nil && p.cfg.RetryTopic != "" {
		deferred := value
		if p.cfg.Format != schemas.FormatEnvelope && p.cfg.Format != "" {
			// The retry topic is read back by the connector: always the
			// envelope. Rare (unavailable only), so not pooled.
			deferred = schemas.AppendOutput(nil, e.alertID, e.alert, e.user, o.Enrichment, e.origin)
		}
		if r, ok := p.deferral(e, deferred); ok {
			e.deferred = true
			e.acks.Store(2)
			p.out.Send(r)
			p.out.Send(out)
			return
		}
	}
	e.acks.Store(1)
	p.out.Send(out)
}

// deadLetter sends e's input, as it came, to the dead-letter topic with the
// reason in headers (and Kafka Connect's origin headers).
func (p *Pipeline) deadLetter(e *event) {
	m := e.msg
	value := m.Value
	if e.record >= 0 {
		value = e.alert
	}
	key, in := m.Key, m.Headers
	dl := schemas.DeadLetter{
		Reason: e.reject, Detail: e.detail, Record: e.record,
		Origin: schemas.Origin{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset},
	}
	// A message too large to process may also be too large to write: keep
	// what fits and say what was left out. The value goes first, then the
	// input's headers, then the key; the connector's own headers always fit.
	if limit := p.cfg.MaxMessageBytes; producer.RecordSize(key, value, schemas.DeadLetterHeaders(in, dl)) > limit {
		dl.TruncatedFrom = len(value) // reserves the header's room while sizing
		if producer.RecordSize(key, nil, schemas.DeadLetterHeaders(in, dl)) > limit {
			dl.Dropped, in = "headers", nil
			if producer.RecordSize(key, nil, schemas.DeadLetterHeaders(in, dl)) > limit {
				dl.Dropped, key = "key,headers", nil
			}
		}
		if room := limit - producer.RecordSize(key, nil, schemas.DeadLetterHeaders(in, dl)); len(value) > room {
			value = value[:max(room, 0)]
		} else {
			dl.TruncatedFrom = 0 // what was left out made room enough
		}
	}
	p.metrics.deadLetters.WithLabelValues(string(e.reject)).Inc()
	p.dlLog.record(e, time.Now())
	e.acks.Store(1)
	p.out.Send(producer.Record{Topic: p.cfg.DLQTopic, Key: key, Value: value, Headers: schemas.DeadLetterHeaders(in, dl), Ack: e})
}

// HeaderTruncated is schemas.HeaderTruncated, kept for readers of dead
// letters that know it from here.
const HeaderTruncated = schemas.HeaderTruncated

// Acked is called by the producer once each of e's records is written.
func (e *event) Acked() {
	if e.acks.Add(-1) > 0 {
		return
	}
	p := e.p
	if e.retried {
		p.retryAcked(e)
		return
	}
	if e.deferred {
		p.retries.metrics.deferred.Inc()
		p.stats.deferred.Add(1)
	}
	if e.reject != "" {
		p.stats.deadLetters.Add(1)
	} else {
		p.stats.count(e.status)
		if e.source == schemas.SourceCache || e.source == schemas.SourceUserCache {
			p.stats.fromCache.Add(1)
		}
		p.metrics.byStatus[e.status].Inc()
		p.metrics.latency.Observe(time.Since(e.fetched).Seconds())
	}
	p.putBuf(e)
	if e.held.pending.Add(-1) == 0 {
		p.bytes.release(e.held.bytes)
	}
	e.msg.Done()
	<-p.slots
}

func (p *Pipeline) putBuf(e *event) {
	if e.buf != nil && cap(*e.buf) <= 64<<10 {
		p.bufs.Put(e.buf)
	}
	e.buf = nil
}

// Stats are the pipeline's counts of acknowledged events since start.
type Stats struct {
	Enriched, NotFound, Unavailable, Failed, Skipped, DeadLetters int64
	// FromCache counts the enriched and not-found events answered by the
	// cache without a call of their own.
	FromCache int64
	// Deferred counts the unavailable events also written to the retry
	// topic; Updates the updates published for them, GivenUp those given
	// up after RetryMaxAge. RetryDeadLetters counts retry-topic records
	// that were no deferral and went to the dead-letter topic.
	Deferred, Updates, GivenUp, RetryDeadLetters int64
	// Renewed counts deferred events written again to the back of the
	// retry topic after their own calls kept failing.
	Renewed  int64
	InFlight int
	// InFlightBytes is the size of the input messages held (see
	// Config.MaxInFlightBytes).
	InFlightBytes int64
}

// Total is every event acknowledged.
func (s Stats) Total() int64 {
	return s.Enriched + s.NotFound + s.Unavailable + s.Failed + s.Skipped + s.DeadLetters
}

type counters struct {
	enriched, notFound, unavailable, failed, skipped, deadLetters, fromCache atomic.Int64
	deferred, updates, givenUp, retryDeadLetters, renewed                    atomic.Int64
}

func (c *counters) count(s schemas.Status) {
	switch s {
	case schemas.StatusEnriched:
		c.enriched.Add(1)
	case schemas.StatusNotFound:
		c.notFound.Add(1)
	case schemas.StatusUnavailable:
		c.unavailable.Add(1)
	case schemas.StatusFailed:
		c.failed.Add(1)
	case schemas.StatusSkipped:
		c.skipped.Add(1)
	}
}

// Stats returns the counts so far.
func (p *Pipeline) Stats() Stats {
	return Stats{
		Enriched: p.stats.enriched.Load(), NotFound: p.stats.notFound.Load(),
		Unavailable: p.stats.unavailable.Load(), Failed: p.stats.failed.Load(),
		Skipped: p.stats.skipped.Load(), DeadLetters: p.stats.deadLetters.Load(),
		FromCache: p.stats.fromCache.Load(), InFlight: len(p.slots), InFlightBytes: p.bytes.held(),
		Deferred: p.stats.deferred.Load(), Updates: p.stats.updates.Load(), GivenUp: p.stats.givenUp.Load(),
		RetryDeadLetters: p.stats.retryDeadLetters.Load(), Renewed: p.stats.renewed.Load(),
	}
}

type metrics struct {
	events        *prometheus.CounterVec
	byStatus      map[schemas.Status]prometheus.Counter // events' children, resolved once
	deadLetters   *prometheus.CounterVec
	latency       prometheus.Histogram
	lookupSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, p *Pipeline) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enricher_events_total",
			Help: "Events published to the output topic, by enrichment status.",
		}, []string{"status"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enricher_dead_letters_total",
			Help: "Messages or envelope records sent to the dead-letter topic, by reason.",
		}, []string{"reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "enricher_event_latency_seconds",
			Help:    "Time from fetch to acknowledgement by the output topic.",
			Buckets: prometheus.ExponentialBuckets(0.001, 3, 12),
		}),
		lookupSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "enricher_lookup_wait_seconds",
			Help:    "Time events that missed the cache waited for their lookup.",
			Buckets: prometheus.ExponentialBuckets(0.005, 3, 10),
		}),
	}
	m.byStatus = make(map[schemas.Status]prometheus.Counter)
	for _, st := range []schemas.Status{schemas.StatusEnriched, schemas.StatusNotFound, schemas.StatusUnavailable, schemas.StatusFailed, schemas.StatusSkipped} {
		m.byStatus[st] = m.events.WithLabelValues(string(st))
	}
	// Every reason at zero from the start, so that a rate over them has
	// a value before the first dead letter.
	for _, r := range []schemas.Reason{schemas.ReasonInvalidJSON, schemas.ReasonNotObject, schemas.ReasonMissingAlertID, schemas.ReasonInvalidAlertID,
		schemas.ReasonTooLarge, schemas.ReasonEmptyEnvelope, schemas.ReasonTooManyRecords, schemas.ReasonNotDeferred} {
		m.deadLetters.WithLabelValues(string(r))
	}
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "enricher_events_in_flight",
		Help: "Events fetched and not yet acknowledged by the output.",
	}, func() float64 { return float64(len(p.slots)) })
	inFlightBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "enricher_in_flight_bytes",
		Help: "Bytes of the input messages fetched and not yet acknowledged by the output.",
	}, func() float64 { return float64(p.bytes.held()) })
	if reg != nil {
		for _, c := range []prometheus.Collector{m.events, m.deadLetters, m.latency, m.lookupSeconds, inFlight, inFlightBytes} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("pipeline: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}
