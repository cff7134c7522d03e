package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/consumer"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/producer"
	"github.com/defender-enricher/defender-enricher/schemas"
)

// Deferred events.
//
// An event published unavailable (the breaker was open, the budget spent
// past MaxEnrichWait) is also written to the retry topic: the same
// envelope, keyed by the alert id, with the input's headers. Its input is
// acknowledged only once both records are, so a crash between them loses
// nothing: the input is consumed again and deferred again.
//
// RunRetries consumes the retry topic, in a consumer group of its own,
// one record at a time: it looks the alert up again at the budget's lowest
// priority (budget.PriorityDeferred: only when no fresh lookup waits), with
// no MaxEnrichWait, and publishes an update of the event to the output
// topic (schemas.AppendUpdate) once the API gives a final answer: found,
// not found, or a refusal. While the API stays unavailable the record is
// held and tried again every WaitRetry (1 s); with the breaker open that
// costs no call. A record whose event was published more
// than RetryMaxAge ago is given up: counted, logged, acknowledged, with no
// output. A retry-topic record is acknowledged, and so may be committed,
// only after its update is written: at least once, as for the input.

// retryInFlight bounds the retry-topic records between fetch and
// acknowledgement; they are looked up one at a time, but their updates
// are written while the next is looked up.
const retryInFlight = 64

type retryState struct {
	slots   chan struct{}
	waiting atomic.Int64 // fetched and not yet updated or given up
	metrics struct {
		deferred prometheus.Counter
		updates  *prometheus.CounterVec
		givenUp  prometheus.Counter
		renewed  prometheus.Counter
	}
	// givenUpLog limits give-up lines to one per DeadLetterLogInterval,
	// with the count of those not logged; RunRetries alone touches it.
	givenUpLog struct {
		last       time.Time
		suppressed int64
	}
}

func (r *retryState) init(reg prometheus.Registerer) error {
	r.slots = make(chan struct{}, retryInFlight)
	r.metrics.deferred = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "enricher_deferred_total",
		Help: "Events published unavailable and kept on the retry topic, to be enriched later.",
	})
	r.metrics.updates = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enricher_updates_total",
		Help: "Updates published for deferred events, by their new enrichment status (the re-enriched events).",
	}, []string{"status"})
	for _, st := range []schemas.Status{schemas.StatusEnriched, schemas.StatusNotFound, schemas.StatusFailed} {
		r.metrics.updates.WithLabelValues(string(st)) // at zero from the start
	}
	r.metrics.givenUp = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "enricher_deferred_given_up_total",
		Help: "Deferred events given up, older than ENRICHER_RETRY_MAX_AGE; no update was published for them.",
	})
	r.metrics.renewed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "enricher_deferred_renewed_total",
		Help: "Deferred events written again to the back of the retry topic after their own calls kept failing.",
	})
	waiting := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "enricher_deferred_waiting",
		Help: "Deferred events read from the retry topic and waiting for their update; the rest of the backlog is the retry group's lag.",
	}, func() float64 { return float64(r.waiting.Load()) })
	if reg != nil {
		for _, c := range []prometheus.Collector{r.metrics.deferred, r.metrics.updates, r.metrics.givenUp, r.metrics.renewed, waiting} {
			if err := reg.Register(c); err != nil {
				return fmt.Errorf("pipeline: registering metrics: %w", err)
			}
		}
	}
	return nil
}

// deferral returns the retry-topic record of e, whose output is value, or
// false when it would not fit (a record at the size limit with headers of
// its own): the event is then published unavailable and not deferred.
func (p *Pipeline) deferral(e *event, value []byte) (producer.Record, bool) {
	headers := schemas.DeferredHeaders(e.msg.Headers, e.record)
	if size := producer.RecordSize([]byte(e.alertID), value, headers); size > p.cfg.MaxMessageBytes {
		p.log.Warn("event published unavailable but not deferred: with its retry headers it is over ENRICHER_MAX_MESSAGE_BYTES",
			"alert_id", e.alertID, "bytes", size, "max_message_bytes", p.cfg.MaxMessageBytes, "topic", p.cfg.RetryTopic)
		return producer.Record{}, false
	}
	return producer.Record{Topic: p.cfg.RetryTopic, Key: []byte(e.alertID), Value: value, Headers: headers, Ack: e}, true
}

// RunRetries consumes the retry topic from in until ctx ends or in is
// closed. Run it beside Run, on the same Pipeline, and stop it (end ctx,
// wait for it to return) before closing the producer. Records looked up
// when ctx ends are left unacknowledged, to be consumed again.
func (p *Pipeline) RunRetries(ctx context.Context, in Source) error {
	failures := 0
	for {
		select {
		case p.retries.slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		msg, err := in.Fetch(ctx)
		if err != nil {
			<-p.retries.slots
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, consumer.ErrClosed) {
				return fmt.Errorf("fetching from topic %q: %w", p.cfg.RetryTopic, err)
			}
			failures++
			pause := min(100*time.Millisecond<<min(failures-1, 6), 5*time.Second)
			p.log.Warn("fetching deferred events failed; retrying", "topic", p.cfg.RetryTopic, "failures", failures, "retry_in", pause.String(), "error", err)
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		failures = 0
		msg.Expect(1)
		p.retries.waiting.Add(1)
		p.retry(ctx, msg)
	}
}

// retry reads one retry-topic record and sees it through: an update, a
// give-up or a dead letter. It returns with the record unacknowledged when
// ctx ends first.
func (p *Pipeline) retry(ctx context.Context, msg *consumer.Message) {
	e := &event{p: p, msg: msg, record: -1, retried: true, fetched: time.Now()}
	d, err := schemas.ParseDeferred(msg.Value, msg.Headers)
	if err != nil {
		// Not written by the connector: kept, with the reason, rather than
		// guessed at or dropped.
		e.alertID, e.reject, e.detail = "", schemas.ReasonNotDeferred, err.Error()
		p.send(e, p.deadLetter)
		return
	}
	e.alertID, e.alert, e.origin, e.fromRecord = d.AlertID, d.Alert, d.Origin, d.Record
	// The user the alert names may spare the call, as for a fresh alert;
	// its severity does not matter: deferred lookups go last.
	e.ref = schemas.ReadHints(d.Alert, d.Record).User
	e.update = &schemas.Update{PreviousStatus: d.Status, PreviousEnrichedAt: d.EnrichedAt}
	giveUpAt := d.EnrichedAt.Add(p.cfg.RetryMaxAge)
	failedCalls := 0 // lookups of this record that made calls and got no answer
	for {
		if !time.Now().Before(giveUpAt) {
			p.giveUp(e, d)
			return
		}
		lookupCtx, cancel := context.WithDeadline(budget.WithPriority(ctx, budget.PriorityDeferred), giveUpAt)
		r, err := p.lookup.LookupFor(lookupCtx, e.alertID, e.ref)
		cancel()
		if ctx.Err() != nil {
			return
		}
		// Only a final answer is published: while the API cannot answer,
		// the event stays deferred.
		if err != nil && (errors.Is(err, defender.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || defender.Classify(err) == defender.Transient) {
			// A record whose own calls keep failing (an alert the API
			// times out on, say) must not hold every deferral behind it:
			// it goes to the back of the retry topic, renewed.
			if !errors.Is(err, defender.ErrUnavailable) {
				if failedCalls++; failedCalls >= retryRenewAfter {
					p.send(e, p.renew)
					return
				}
			}
			// The pause does not grow: what spares the API is the breaker,
			// which refuses without a call while it is open, and this
			// record is tried again soon after it closes.
			select {
			case <-time.After(p.cfg.WaitRetry):
				continue
			case <-ctx.Done():
				return
			}
		}
		e.settle(r, err)
		p.send(e, p.publish)
		return
	}
}

// send hands e to publish or deadLetter unless Run has returned, after
// which nothing more is written: e stays unacknowledged.
func (p *Pipeline) send(e *event, how func(*event)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stopped {
		how(e)
	}
}

func (p *Pipeline) giveUp(e *event, d schemas.Deferred) {
	p.retries.metrics.givenUp.Inc()
	p.stats.givenUp.Add(1)
	l := &p.retries.givenUpLog
	if now := time.Now(); now.Sub(l.last) >= p.cfg.DeadLetterLogInterval {
		p.log.Warn("deferred event given up: no update will be published for it", "alert_id", e.alertID,
			"published_at", d.EnrichedAt.UTC().Format(time.RFC3339), "retry_max_age", p.cfg.RetryMaxAge.String(),
			"origin_topic", d.Origin.Topic, "origin_partition", d.Origin.Partition, "origin_offset", d.Origin.Offset,
			"given_up_before", l.suppressed)
		l.last, l.suppressed = now, 0
	} else {
		l.suppressed++
	}
	p.retryDone(e)
}

// retryRenewAfter is how many lookups of one deferred event may make calls
// that all fail before the event is renewed: written to the back of the
// retry topic, so that the records behind it are looked up meanwhile.
const retryRenewAfter = 3

// renew writes e's retry-topic record again, as it came, to the retry
// topic; the old one is acknowledged once the new one is written. Its
// age still runs from its first publication.
func (p *Pipeline) renew(e *event) {
	e.renewed = true
	e.acks.Store(1)
	m := e.msg
	p.out.Send(producer.Record{Topic: p.cfg.RetryTopic, Key: m.Key, Value: m.Value, Headers: m.Headers, Ack: e})
}

// retryAcked is Acked for a retry-topic record's update, renewal or dead
// letter.
func (p *Pipeline) retryAcked(e *event) {
	if e.renewed {
		p.stats.renewed.Add(1)
		p.retries.metrics.renewed.Inc()
		p.retryDone(e)
		return
	}
	if e.reject != "" {
		p.stats.retryDeadLetters.Add(1)
	} else {
		p.stats.updates.Add(1)
		p.retries.metrics.updates.WithLabelValues(string(e.status)).Inc()
	}
	p.putBuf(e)
	p.retryDone(e)
}

func (p *Pipeline) retryDone(e *event) {
	p.retries.waiting.Add(-1)
	e.msg.Done()
	<-p.retries.slots
}
