package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/consumer"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/pipeline"
	"github.com/defender-enricher/defender-enricher/producer"
	"github.com/defender-enricher/defender-enricher/schemas"
)

// startRetries runs RunRetries on r's retry topic in the group the
// connector would use, stopped and committed by r.stop.
func (r *rig) startRetries(t *testing.T) *consumer.Consumer {
	t.Helper()
	cons, err := consumer.New(consumer.Config{Brokers: r.c.Brokers(), Topic: r.retry, Group: r.group + ".retry", CommitInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, commitsDone := make(chan struct{}), make(chan struct{})
	commitCtx, stopCommits := context.WithCancel(context.Background())
	go func() { defer close(commitsDone); _ = cons.Run(commitCtx) }()
	go func() {
		defer close(done)
		if err := r.pipeline.RunRetries(ctx, cons); err != nil {
			t.Errorf("RunRetries: %v", err)
		}
	}()
	r.stopRetries = func() { cancel(); <-done }
	r.closeRetries = func() { stopCommits(); <-commitsDone; _ = cons.Close(context.Background()) }
	return cons
}

// update is an output event with the fields an update adds.
type update struct {
	AlertID    string          `json:"alertId"`
	Alert      json.RawMessage `json:"alert"`
	User       json.RawMessage `json:"user"`
	Enrichment struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	} `json:"enrichment"`
	Origin schemas.Origin `json:"origin"`
	Update *struct {
		PreviousStatus     string `json:"previousStatus"`
		PreviousEnrichedAt string `json:"previousEnrichedAt"`
	} `json:"update"`
}

func (r *rig) readUpdates(t *testing.T, n int) []update {
	t.Helper()
	var evs []update
	for _, rec := range r.c.ReadN(t, r.out, n, 30*time.Second) {
		var e update
		if err := json.Unmarshal(rec.Value, &e); err != nil {
			t.Fatal(err)
		}
		if string(rec.Key) != e.AlertID {
			t.Errorf("record keyed %q carries alert %q", rec.Key, e.AlertID)
		}
		evs = append(evs, e)
	}
	return evs
}

// switchable answers unavailable while down is set, and the user of the
// alert otherwise.
type switchable struct {
	down atomic.Bool
	fakeLookup
	mu         sync.Mutex
	priorities []budget.Priority // of every lookup, in order
}

func (s *switchable) prioritiesSeen() []budget.Priority {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.priorities)
}

func newSwitchable(t *testing.T) *switchable {
	s := &switchable{}
	s.down.Store(true)
	s.answer = func(ctx context.Context, id string) (*defender.User, error) {
		s.mu.Lock()
		s.priorities = append(s.priorities, budget.PriorityFrom(ctx))
		s.mu.Unlock()
		if s.down.Load() {
			return nil, fmt.Errorf("%w: circuit breaker open", defender.ErrUnavailable)
		}
		return testUser(t, "u-"+id[:4]), nil
	}
	return s
}

var retryIDs = []string{idA, idB, "da637472900382838869_1364969609"}

// TestUnavailableIsUpdatedLater: events published unavailable are kept on
// the retry topic, and once the API answers each gets an update with the
// same key, alertId, alert and origin, and its user. Both groups commit.
func TestUnavailableIsUpdatedLater(t *testing.T) {
	lk := newSwitchable(t)
	r := newRig(t, pipeline.Config{MaxEnrichWait: time.Minute}, lk, 1)
	r.produce(t, 0, retryIDs...)
	first := r.readUpdates(t, 3)
	for _, e := range first {
		if e.Enrichment.Status != "unavailable" || e.Update != nil {
			t.Fatalf("first event: status %q, update %v", e.Enrichment.Status, e.Update)
		}
	}
	waitUntil(t, "the input committed after its deferrals", func() bool { return r.c.Committed(t, r.group, r.in)[0] == 3 })
	if got := r.c.ReadN(t, r.retry, 3, 30*time.Second); len(got) != 3 {
		t.Fatalf("%d deferrals on the retry topic, want 3", len(got))
	}
	if st := r.pipeline.Stats(); st.Deferred != 3 || st.Unavailable != 3 {
		t.Errorf("stats %+v, want 3 unavailable, 3 deferred", st)
	}

	lk.down.Store(false)
	fresh := len(lk.prioritiesSeen())
	r.startRetries(t)
	all := r.readUpdates(t, 6)
	for i, p := range lk.prioritiesSeen() {
		if want := budget.PriorityDeferred; i >= fresh && p != want {
			t.Errorf("lookup %d, of a deferred event, at priority %v, want %v", i, p, want)
		}
		if want := budget.PriorityInformational; i < fresh && p != want {
			t.Errorf("lookup %d, of an alert without severity, at priority %v, want %v", i, p, want)
		}
	}
	byOrigin := map[int64]update{}
	for _, e := range first {
		byOrigin[e.Origin.Offset] = e
	}
	for _, u := range all[3:] {
		was, ok := byOrigin[u.Origin.Offset]
		switch {
		case !ok || u.Update == nil:
			t.Fatalf("not an update of a first event: %+v", u)
		case u.AlertID != was.AlertID || string(u.Alert) != string(was.Alert) || u.Origin != was.Origin:
			t.Errorf("update %+v does not carry the first event's alertId, alert and origin %+v", u, was)
		case u.Enrichment.Status != "enriched" || len(u.User) < 3:
			t.Errorf("update status %q user %s, want enriched with the user", u.Enrichment.Status, u.User)
		case u.Update.PreviousStatus != "unavailable" || u.Update.PreviousEnrichedAt == "":
			t.Errorf("update object %+v", *u.Update)
		}
		delete(byOrigin, u.Origin.Offset)
	}
	if len(byOrigin) != 0 {
		t.Errorf("no update for %d first events", len(byOrigin))
	}
	waitUntil(t, "the retry group committed", func() bool {
		c := r.c.Committed(t, r.group+".retry", r.retry)
		return c[0]+c[1] == 3
	})
	if st := r.pipeline.Stats(); st.Updates != 3 || st.Enriched != 0 {
		t.Errorf("stats %+v: want 3 updates, and updates not counted as first events", st)
	}
}

// TestDeferredIsHeldWhileUnavailable: while the API stays unavailable the
// retry loop publishes nothing and commits nothing; it keeps trying, and
// the update goes out once the API answers.
func TestDeferredIsHeldWhileUnavailable(t *testing.T) {
	lk := newSwitchable(t)
	r := newRig(t, pipeline.Config{MaxEnrichWait: time.Minute, WaitRetry: 10 * time.Millisecond}, lk, 1)
	r.startRetries(t)
	r.produce(t, 0, idA)
	r.readUpdates(t, 1)
	// The first event's lookup, then at least two of the deferral's.
	waitUntil(t, "the deferral looked up again while unavailable", func() bool { return lk.calls.Load() >= 3 })
	if c := r.c.Committed(t, r.group+".retry", r.retry); c[0]+c[1] != 0 {
		t.Fatalf("retry offsets %v committed without an update", c)
	}
	if st := r.pipeline.Stats(); st.Updates != 0 || st.GivenUp != 0 {
		t.Fatalf("stats %+v while the API is unavailable", st)
	}
	lk.down.Store(false)
	got := r.readUpdates(t, 2)
	if got[1].Update == nil || got[1].Enrichment.Status != "enriched" {
		t.Fatalf("second event %+v, want the update", got[1])
	}
	waitUntil(t, "the retry group committed", func() bool {
		c := r.c.Committed(t, r.group+".retry", r.retry)
		return c[0]+c[1] == 1
	})
}

// TestRefusedAndFoundAreNotDeferred: only unavailable events go to the
// retry topic; an answer, a 404 or a refusal is final.
func TestRefusedAndFoundAreNotDeferred(t *testing.T) {
	lk := &fakeLookup{
		hits: map[string]*defender.User{idB: testUser(t, "b")},
		answer: func(ctx context.Context, id string) (*defender.User, error) {
			if id == idA {
				return nil, &defender.APIError{StatusCode: 403, Code: "Forbidden"}
			}
			return nil, defender.ErrNotFound
		},
	}
	r := newRig(t, pipeline.Config{}, lk, 1)
	r.produce(t, 0, retryIDs...)
	got := r.read(t, 3)
	waitUntil(t, "the input committed", func() bool { return r.c.Committed(t, r.group, r.in)[0] == 3 })
	// Committed means every record of the input was acknowledged, a
	// deferral included, had there been one.
	for p, hw := range r.c.HighWatermarks(t, r.retry) {
		if hw != 0 {
			t.Errorf("retry partition %d holds %d records; statuses %+v", p, hw, got)
		}
	}
}

// TestTooOldIsGivenUp: a deferral older than RetryMaxAge is counted and
// committed, with no output.
func TestTooOldIsGivenUp(t *testing.T) {
	lk := newSwitchable(t)
	lk.down.Store(false)
	r := newRig(t, pipeline.Config{RetryMaxAge: time.Hour}, lk, 1)
	old := schemas.AppendOutput(nil, idA, []byte(`{"id":"`+idA+`"}`), nil,
		schemas.Enrichment{Status: schemas.StatusUnavailable, EnrichedAt: time.Now().Add(-2 * time.Hour), Error: "x"},
		schemas.Origin{Topic: r.in, Partition: 0, Offset: 7})
	fresh := schemas.AppendOutput(nil, idB, []byte(`{"id":"`+idB+`"}`), nil,
		schemas.Enrichment{Status: schemas.StatusUnavailable, EnrichedAt: time.Now(), Error: "x"},
		schemas.Origin{Topic: r.in, Partition: 0, Offset: 8})
	r.c.Produce(t, r.retry, kafkatest.Record{Key: []byte(idA), Value: old}, kafkatest.Record{Key: []byte(idB), Value: fresh})
	r.startRetries(t)
	got := r.readUpdates(t, 1)
	if got[0].AlertID != idB || got[0].Update == nil {
		t.Fatalf("output %+v, want only the update of the fresh deferral", got[0])
	}
	waitUntil(t, "both deferrals committed", func() bool { return r.c.Committed(t, r.group+".retry", r.retry)[0] == 2 })
	if st := r.pipeline.Stats(); st.GivenUp != 1 || st.Updates != 1 {
		t.Errorf("stats %+v, want 1 given up and 1 update", st)
	}
	if lk.calls.Load() != 1 {
		t.Errorf("%d lookups, want 1: a deferral given up costs no call", lk.calls.Load())
	}
}

// TestForeignRetryRecordIsDeadLettered: a record on the retry topic that
// the connector did not write goes to the dead-letter topic, and the
// partition goes on.
func TestForeignRetryRecordIsDeadLettered(t *testing.T) {
	lk := newSwitchable(t)
	lk.down.Store(false)
	r := newRig(t, pipeline.Config{}, lk, 1)
	good := schemas.AppendOutput(nil, idB, []byte(`{"id":"`+idB+`"}`), nil,
		schemas.Enrichment{Status: schemas.StatusUnavailable, EnrichedAt: time.Now(), Error: "x"}, schemas.Origin{Topic: r.in, Offset: 1})
	r.c.Produce(t, r.retry, kafkatest.Record{Value: []byte(`{"hello":"world"}`)}, kafkatest.Record{Key: []byte(idB), Value: good})
	r.startRetries(t)
	dl := r.c.ReadN(t, r.dlq, 1, 30*time.Second)
	if h := firstHeader(dl[0].Headers, schemas.HeaderReason); h != string(schemas.ReasonNotDeferred) || string(dl[0].Value) != `{"hello":"world"}` {
		t.Errorf("dead letter reason %q value %s", h, dl[0].Value)
	}
	if h := firstHeader(dl[0].Headers, schemas.HeaderTopic); h != r.retry {
		t.Errorf("dead letter origin topic %q, want the retry topic", h)
	}
	if got := r.readUpdates(t, 1); got[0].AlertID != idB {
		t.Errorf("the record after the bad one: %+v", got[0])
	}
	waitUntil(t, "both committed", func() bool { return r.c.Committed(t, r.group+".retry", r.retry)[0] == 2 })
}

func firstHeader(hs []kafkatest.Header, key string) string {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// holdingSink holds the acknowledgement of every record for one topic
// until release is called, and passes the rest through.
type holdingSink struct {
	pipeline.Sink
	mu    sync.Mutex
	topic string
	held  []producer.Acker
	sent  atomic.Int64
}

type heldAck struct {
	s   *holdingSink
	ack producer.Acker
}

func (h heldAck) Acked() {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	h.s.held = append(h.s.held, h.ack)
}

func (s *holdingSink) Send(r producer.Record) {
	s.mu.Lock()
	hold := r.Topic == s.topic
	s.mu.Unlock()
	if hold {
		r.Ack = heldAck{s, r.Ack}
		s.sent.Add(1)
	}
	s.Sink.Send(r)
}

func (s *holdingSink) heldCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held)
}

func (s *holdingSink) release() {
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.mu.Unlock()
	for _, a := range held {
		a.Acked()
	}
}

// TestInputWaitsForItsDeferral: the input offset of an event published
// unavailable is committed only once its deferral is written too, not when
// its output alone is: a crash in between must not lose the deferral.
func TestInputWaitsForItsDeferral(t *testing.T) {
	lk := newSwitchable(t)
	var hs *holdingSink
	r := newRigSink(t, pipeline.Config{}, lk, 1, nil, func(p *producer.Producer) pipeline.Sink {
		hs = &holdingSink{Sink: p}
		return hs
	})
	hs.mu.Lock()
	hs.topic = r.retry
	hs.mu.Unlock()
	r.produce(t, 0, idA)
	r.readUpdates(t, 1)
	waitUntil(t, "the deferral written and its acknowledgement held", func() bool { return hs.heldCount() == 1 })
	// The output is written and the deferral too; only its acknowledgement
	// is held. A commit now would be wrong; give the committer the time of
	// many intervals to show one.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if c := r.c.Committed(t, r.group, r.in); c[0] != 0 {
			t.Fatalf("input committed at %d with its deferral unacknowledged", c[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
	hs.release()
	waitUntil(t, "the input committed", func() bool { return r.c.Committed(t, r.group, r.in)[0] == 1 })
}

// TestFailingDeferralGoesToTheBack: a deferred alert whose own calls keep
// failing (the API answers 503 for it alone) is renewed, written again to
// the back of the retry topic, and the deferral behind it gets its update
// meanwhile.
func TestFailingDeferralGoesToTheBack(t *testing.T) {
	lk := &fakeLookup{answer: func(ctx context.Context, id string) (*defender.User, error) {
		if id == idA {
			return nil, &defender.APIError{StatusCode: 503, Code: "ServiceUnavailable"}
		}
		return testUser(t, "b"), nil
	}}
	r := newRig(t, pipeline.Config{WaitRetry: time.Millisecond}, lk, 1)
	deferral := func(id string, offset int64) kafkatest.Record {
		return kafkatest.Record{Key: []byte(id), Value: schemas.AppendOutput(nil, id, []byte(`{"id":"`+id+`"}`), nil,
			schemas.Enrichment{Status: schemas.StatusUnavailable, EnrichedAt: time.Now(), Error: "x"}, schemas.Origin{Topic: r.in, Offset: offset})}
	}
	r.c.Produce(t, r.retry, deferral(idA, 1), deferral(idB, 2))
	r.startRetries(t)
	got := r.readUpdates(t, 1)
	if got[0].AlertID != idB || got[0].Update == nil {
		t.Fatalf("output %+v, want the update of the deferral behind the failing one", got[0])
	}
	waitUntil(t, "both first records committed", func() bool { return r.c.Committed(t, r.group+".retry", r.retry)[0] >= 2 })
	if st := r.pipeline.Stats(); st.Renewed < 1 {
		t.Errorf("stats %+v, want the failing deferral renewed", st)
	}
	// The renewal is the failing deferral again, byte for byte.
	var copies int
	var original []byte
	for _, rec := range r.c.ReadN(t, r.retry, 3, 30*time.Second) {
		if string(rec.Key) != idA {
			continue
		}
		if original == nil {
			original = rec.Value
		}
		if string(rec.Value) == string(original) {
			copies++
		}
	}
	if copies < 2 {
		t.Errorf("%d records of %s on the retry topic with the same value, want the deferral and its renewal", copies, idA)
	}
}
