package pipeline

import (
	"log/slog"
	"sync"
	"time"

	"github.com/defender-enricher/defender-enricher/schemas"
)

// deadLetterLog logs dead letters without a line per record: a poisoned
// envelope or a producer gone wrong can send thousands a second. The first
// dead letter of a reason is logged whole; further ones of that reason
// within the interval are counted, and the count is logged as one line per
// reason when the interval ends. Every dead letter is still counted in
// enricher_dead_letters_total and carries its reason in its headers.
type deadLetterLog struct {
	log   *slog.Logger
	every time.Duration
	mu    sync.Mutex
	by    map[schemas.Reason]*reasonLog
}

type reasonLog struct {
	since      time.Time // when the last line for this reason was logged
	suppressed int64     // dead letters since then not logged one by one
}

func newDeadLetterLog(log *slog.Logger, every time.Duration) *deadLetterLog {
	return &deadLetterLog{log: log, every: every, by: make(map[schemas.Reason]*reasonLog)}
}

// record logs e, or counts it when its reason was logged within the interval.
func (l *deadLetterLog) record(e *event, now time.Time) {
	l.mu.Lock()
	r, ok := l.by[e.reject]
	if ok && now.Sub(r.since) < l.every {
		r.suppressed++
		l.mu.Unlock()
		return
	}
	var earlier int64
	if !ok {
		r = &reasonLog{}
		l.by[e.reject] = r
	}
	earlier, r.suppressed, r.since = r.suppressed, 0, now
	l.mu.Unlock()
	if earlier > 0 {
		l.summary(e.reject, earlier)
	}
	m := e.msg
	l.log.Warn("dead letter", "reason", string(e.reject), "detail", e.detail, "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "record", e.record)
}

// flush logs the counts of the reasons whose interval has ended, and forgets
// reasons that had none, so that their next dead letter is logged whole.
// all flushes every count, at shutdown.
func (l *deadLetterLog) flush(now time.Time, all bool) {
	type count struct {
		reason schemas.Reason
		n      int64
	}
	var counts []count
	l.mu.Lock()
	for reason, r := range l.by {
		if !all && now.Sub(r.since) < l.every {
			continue
		}
		if r.suppressed == 0 {
			delete(l.by, reason)
			continue
		}
		counts = append(counts, count{reason, r.suppressed})
		r.suppressed, r.since = 0, now
	}
	l.mu.Unlock()
	for _, c := range counts {
		l.summary(c.reason, c.n)
	}
}

func (l *deadLetterLog) summary(reason schemas.Reason, n int64) {
	l.log.Warn("dead letters not logged one by one", "reason", string(reason), "count", n, "interval", l.every.String())
}
