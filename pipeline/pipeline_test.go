package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/defender-enricher/defender-enricher/cache"
	"github.com/defender-enricher/defender-enricher/consumer"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/pipeline"
	"github.com/defender-enricher/defender-enricher/producer"
	"github.com/defender-enricher/defender-enricher/schemas"
)

// fakeLookup answers from a function, so that tests control latency and
// outcome per alert id. Cached answers are those in hits.
type fakeLookup struct {
	hits   map[string]*defender.User
	answer func(ctx context.Context, id string) (*defender.User, error)
	calls  atomic.Int64
}

func (f *fakeLookup) Cached(id string) (*defender.User, error, bool) {
	if u, ok := f.hits[id]; ok {
		return u, nil, true
	}
	return nil, nil, false
}

func (f *fakeLookup) Lookup(ctx context.Context, id string) (cache.Result, error) {
	f.calls.Add(1)
	u, err := f.answer(ctx, id)
	return cache.Result{User: u}, err
}

func testUser(t testing.TB, name string) *defender.User {
	u, err := defender.ParseUser([]byte(fmt.Sprintf(`{"id":"contoso\\%s","accountName":%q}`, name, name)))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

type rig struct {
	c                   *kafkatest.Cluster
	in, out, dlq, retry string
	group               string
	pipeline            *pipeline.Pipeline
	consumer            *consumer.Consumer
	producer            *producer.Producer
	cancel              context.CancelFunc
	done                chan error
	stopCommits         func()
	commitsDone         chan struct{}
	runErrOnce          sync.Once
	runErr              error
	// stopRetries, when set, stops RunRetries and its consumer; it runs
	// after Run returned and before the producer closes, as in app.Run.
	stopRetries func()
	// closeRetries, when set, commits and closes the retry consumer, after
	// the producer closed.
	closeRetries func()
}

func newRig(t *testing.T, cfg pipeline.Config, lookup pipeline.Lookup, partitions int) *rig {
	t.Helper()
	return newRigWith(t, cfg, lookup, partitions, nil)
}

// newRigWith is newRig with the pipeline fetching through wrap(consumer)
// when wrap is not nil.
func newRigWith(t *testing.T, cfg pipeline.Config, lookup pipeline.Lookup, partitions int, wrap func(*consumer.Consumer) pipeline.Source) *rig {
	t.Helper()
	return newRigSink(t, cfg, lookup, partitions, wrap, nil)
}

// newRigSink is newRigWith with the pipeline writing through
// wrapSink(producer) when wrapSink is not nil.
func newRigSink(t *testing.T, cfg pipeline.Config, lookup pipeline.Lookup, partitions int, wrap func(*consumer.Consumer) pipeline.Source, wrapSink func(*producer.Producer) pipeline.Sink) *rig {
	t.Helper()
	c := kafkatest.NewFake(t, kfake.NumBrokers(1))
	r := &rig{c: c, in: c.Topic(t, "in", partitions), out: c.Topic(t, "out", partitions), dlq: c.Topic(t, "dlq", 1),
		retry: c.Topic(t, "retry", 2), group: "g-" + t.Name()}
	if cfg.OutputTopic == "" {
		cfg.OutputTopic = r.out
	}
	cfg.InputTopic, cfg.DLQTopic, cfg.RetryTopic = r.in, r.dlq, r.retry
	cfg.Parser, _ = schemas.NewParser(schemas.ParserConfig{})
	var err error
	r.consumer, err = consumer.New(consumer.Config{Brokers: c.Brokers(), Topic: r.in, Group: r.group, CommitInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r.producer, err = producer.New(producer.Config{Brokers: c.Brokers(), MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	var src pipeline.Source = r.consumer
	if wrap != nil {
		src = wrap(r.consumer)
	}
	var sink pipeline.Sink = r.producer
	if wrapSink != nil {
		sink = wrapSink(r.producer)
	}
	r.pipeline, err = pipeline.New(cfg, src, lookup, sink)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	commitCtx, stopCommits := context.WithCancel(context.Background())
	r.cancel, r.stopCommits = cancel, stopCommits
	r.done, r.commitsDone = make(chan error, 1), make(chan struct{})
	go func() { defer close(r.commitsDone); _ = r.consumer.Run(commitCtx) }()
	go func() { r.done <- r.pipeline.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop runs the teardown of app.Run: pipeline, producer, commits, consumer.
func (r *rig) stop(t *testing.T) error {
	r.runErrOnce.Do(func() {
		r.cancel()
		select {
		case r.runErr = <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("pipeline did not stop")
		}
		if r.stopRetries != nil {
			r.stopRetries()
		}
		_ = r.producer.Close(context.Background())
		r.stopCommits()
		<-r.commitsDone
		_ = r.consumer.Close(context.Background())
		if r.closeRetries != nil {
			r.closeRetries()
		}
	})
	return r.runErr
}

func (r *rig) produce(t *testing.T, partition int32, ids ...string) {
	var recs []kafkatest.Record
	for i, id := range ids {
		recs = append(recs, kafkatest.Record{Key: []byte(id), Value: []byte(fmt.Sprintf(`{"id":%q,"seq":%d}`, id, i)), Partition: partition})
	}
	r.c.Produce(t, r.in, recs...)
}

type outEvent struct {
	AlertID string `json:"alertId"`
	Alert   struct {
		Seq int `json:"seq"`
	} `json:"alert"`
	Enrichment struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	} `json:"enrichment"`
}

func (r *rig) read(t *testing.T, n int) []outEvent {
	t.Helper()
	var evs []outEvent
	for _, rec := range r.c.ReadN(t, r.out, n, 30*time.Second) {
		var e outEvent
		if err := json.Unmarshal(rec.Value, &e); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	return evs
}

// waitUntil polls cond until it holds. The deadline only guards against a
// hang: a loaded machine must not trip it.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const (
	idA = "da637308392288907382_-880718168"
	idB = "636688558380765161_2136280442"
)

// TestOrderWithoutHeadOfLineBlocking: A's lookup is slow, B is cached. B's
// events go out at once; A's wait for A's answer and keep their order.
func TestOrderWithoutHeadOfLineBlocking(t *testing.T) {
	release := make(chan struct{})
	lk := &fakeLookup{
		hits: map[string]*defender.User{idB: testUser(t, "b")},
		answer: func(ctx context.Context, id string) (*defender.User, error) {
			select {
			case <-release:
				return testUser(t, "a"), nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	}
	r := newRig(t, pipeline.Config{MaxEnrichWait: time.Minute}, lk, 1)
	r.produce(t, 0, idA, idB, idA, idB, idA)
	got := r.read(t, 2)
	for _, e := range got {
		if e.AlertID != idB {
			t.Fatalf("%s published while A's lookup was still pending: B was held behind A", e.AlertID)
		}
	}
	close(release)
	got = r.read(t, 5)
	var seqA []int
	for _, e := range got {
		if e.AlertID == idA {
			seqA = append(seqA, e.Alert.Seq)
		}
		if e.Enrichment.Status != "enriched" {
			t.Fatalf("status %q", e.Enrichment.Status)
		}
	}
	if fmt.Sprint(seqA) != "[0 2 4]" {
		t.Fatalf("A's events out of order: %v", seqA)
	}
	if lk.calls.Load() > 3 {
		t.Fatalf("%d lookups for 3 events of A", lk.calls.Load())
	}
}

// TestInFlightBound: with every lookup stuck, fetching stops at MaxInFlight
// events; nothing is dropped once they are released.
func TestInFlightBound(t *testing.T) {
	release := make(chan struct{})
	lk := &fakeLookup{answer: func(ctx context.Context, id string) (*defender.User, error) {
		select {
		case <-release:
			return testUser(t, "x"), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}
	r := newRig(t, pipeline.Config{MaxInFlight: 5, MaxEnrichWait: time.Minute}, lk, 2)
	var ids []string
	for i := 0; i < 40; i++ {
		ids = append(ids, fmt.Sprintf("da6373083922889073%02d_1", i))
	}
	r.produce(t, 0, ids[:20]...)
	r.produce(t, 1, ids[20:]...)
	waitUntil(t, "5 events in flight", func() bool { return r.pipeline.Stats().InFlight == 5 })
	// Would a sixth be fetched? The bound holds by construction (room is
	// taken before fetching), so no wait can make this fail falsely; the
	// pause only gives a broken bound the time to show.
	time.Sleep(200 * time.Millisecond)
	if got := r.pipeline.Stats().InFlight; got != 5 {
		t.Fatalf("in flight = %d, want the bound of 5", got)
	}
	if got := r.consumer.Stats().InFlight; got > 5 {
		t.Fatalf("consumer has %d messages fetched, want at most 5", got)
	}
	close(release)
	got := r.read(t, 40)
	if len(got) != 40 {
		t.Fatalf("%d published, want 40", len(got))
	}
	waitUntil(t, "commits of all 40", func() bool {
		c := r.c.Committed(t, r.group, r.in)
		return c[0] == 20 && c[1] == 20
	})
}

// TestPassthroughAfterMaxWait: an alert whose lookup does not answer in
// time goes out unavailable, in about MaxEnrichWait.
func TestPassthroughAfterMaxWait(t *testing.T) {
	lk := &fakeLookup{answer: func(ctx context.Context, id string) (*defender.User, error) {
		<-ctx.Done()
		return nil, fmt.Errorf("%w: %w", defender.ErrUnavailable, ctx.Err())
	}}
	r := newRig(t, pipeline.Config{MaxEnrichWait: 300 * time.Millisecond}, lk, 1)
	start := time.Now()
	r.produce(t, 0, idA)
	got := r.read(t, 1)
	took := time.Since(start)
	if got[0].Enrichment.Status != "unavailable" || got[0].Enrichment.Error == "" {
		t.Fatalf("enrichment = %+v, want unavailable with an error", got[0].Enrichment)
	}
	// At least MaxEnrichWait; the upper bound only tells it from a lookup
	// never given up (read's own deadline is 30s), with room for a loaded
	// machine to fetch and publish.
	if took < 300*time.Millisecond || took > 20*time.Second {
		t.Fatalf("published after %v, want about 300ms", took)
	}
}

// TestFailedAfterRetries: an API error is published as failed with the
// error's text.
func TestFailedAfterRetries(t *testing.T) {
	lk := &fakeLookup{answer: func(context.Context, string) (*defender.User, error) {
		return nil, &defender.APIError{StatusCode: 403, Code: "Forbidden", Message: "no", Target: "corr-1"}
	}}
	r := newRig(t, pipeline.Config{}, lk, 1)
	r.produce(t, 0, idA)
	got := r.read(t, 1)
	if got[0].Enrichment.Status != "failed" || !strings.Contains(got[0].Enrichment.Error, "User.Read.All") {
		t.Fatalf("enrichment = %+v", got[0].Enrichment)
	}
}

// TestWaitPolicyHoldsUntilAnswer: with Wait, unavailable answers are retried
// until the API answers.
func TestWaitPolicyHoldsUntilAnswer(t *testing.T) {
	var n atomic.Int64
	lk := &fakeLookup{answer: func(context.Context, string) (*defender.User, error) {
		if n.Add(1) < 3 {
			return nil, defender.ErrUnavailable
		}
		return nil, defender.ErrNotFound
	}}
	r := newRig(t, pipeline.Config{Wait: true, WaitRetry: 10 * time.Millisecond}, lk, 1)
	r.produce(t, 0, idA)
	got := r.read(t, 1)
	if got[0].Enrichment.Status != "not_found" {
		t.Fatalf("status %q, want not_found after waiting", got[0].Enrichment.Status)
	}
	if n.Load() != 3 {
		t.Fatalf("%d lookups, want 3", n.Load())
	}
}

// TestShutdownLeavesUnfinishedEventsUncommitted: an event still waiting when
// the drain ends is not published and its offset is not committed.
func TestShutdownLeavesUnfinishedEventsUncommitted(t *testing.T) {
	lk := &fakeLookup{
		hits: map[string]*defender.User{idB: testUser(t, "b")},
		answer: func(ctx context.Context, id string) (*defender.User, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
	}
	r := newRig(t, pipeline.Config{MaxEnrichWait: time.Minute, DrainTimeout: 200 * time.Millisecond}, lk, 1)
	r.produce(t, 0, idB, idB, idA, idB)
	r.read(t, 3)
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after a clean stop: %v", err)
	}
	c := r.c.Committed(t, r.group, r.in)
	if c[0] != 2 {
		t.Fatalf("committed offset %d, want 2: the stuck event at offset 2 must be consumed again", c[0])
	}
}

// TestWriteFailureStopsWithoutCommit: a write that cannot succeed stops the
// pipeline with an error naming the topic, and nothing is committed.
func TestWriteFailureStopsWithoutCommit(t *testing.T) {
	lk := &fakeLookup{hits: map[string]*defender.User{idA: testUser(t, "a")}}
	r := newRig(t, pipeline.Config{OutputTopic: "missing-output-topic"}, lk, 1)
	r.produce(t, 0, idA)
	select {
	case err := <-r.done:
		r.runErrOnce.Do(func() {
			r.runErr = err
			_ = r.producer.Close(context.Background())
			r.stopCommits()
			<-r.commitsDone
			_ = r.consumer.Close(context.Background())
		})
		if err == nil || !strings.Contains(err.Error(), "missing-output-topic") {
			t.Fatalf("Run error = %v, want one naming the topic", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("pipeline kept running after a write failure")
	}
	if c := r.c.Committed(t, r.group, r.in); c[0] > 0 {
		t.Fatalf("committed %v after a failed write", c)
	}
	if errors.Is(r.runErr, context.Canceled) {
		t.Fatal("stopped for the wrong reason")
	}
}

// flakySource fails its first fetches as the consumer does while the
// broker is away: kafka-go reports the error and keeps retrying behind it.
type flakySource struct {
	*consumer.Consumer
	failures atomic.Int64
}

func (f *flakySource) Fetch(ctx context.Context) (*consumer.Message, error) {
	if f.failures.Add(-1) >= 0 {
		return nil, errors.New(`consumer: fetch from topic "in": failed to dial: dial tcp 127.0.0.1:9092: connect: connection refused`)
	}
	return f.Consumer.Fetch(ctx)
}

// TestFetchErrorsAreRetried: fetch errors (a broker restarting) do not stop
// the pipeline; fetching goes on and the alerts come out.
func TestFetchErrorsAreRetried(t *testing.T) {
	lk := &fakeLookup{hits: map[string]*defender.User{idA: testUser(t, "a")}}
	src := &flakySource{}
	src.failures.Store(3)
	r := newRigWith(t, pipeline.Config{}, lk, 1, func(c *consumer.Consumer) pipeline.Source {
		src.Consumer = c
		return src
	})
	waitUntil(t, "three failed fetches, or Run to end", func() bool { return src.failures.Load() < 0 || len(r.done) > 0 })
	select {
	case err := <-r.done:
		r.done <- err // for the teardown at cleanup
		t.Fatalf("Run returned %v after a fetch error, want it to keep fetching", err)
	default:
	}
	r.produce(t, 0, idA, idA)
	if got := r.read(t, 2); got[0].Enrichment.Status != "enriched" || got[1].Enrichment.Status != "enriched" {
		t.Fatalf("got %+v", got)
	}
}

// TestWaitPolicyPublishesRefusals: with Wait, an answer no retry can change
// (a 403) is published as failed instead of holding the partition for ever.
func TestWaitPolicyPublishesRefusals(t *testing.T) {
	lk := &fakeLookup{answer: func(context.Context, string) (*defender.User, error) {
		return nil, &defender.APIError{StatusCode: 403, Code: "Forbidden"}
	}}
	r := newRig(t, pipeline.Config{Wait: true, WaitRetry: 10 * time.Millisecond}, lk, 1)
	r.produce(t, 0, idA)
	got := r.read(t, 1)
	if got[0].Enrichment.Status != "failed" {
		t.Fatalf("status %q, want failed", got[0].Enrichment.Status)
	}
	if n := lk.calls.Load(); n != 1 {
		t.Fatalf("%d lookups of a refused alert, want 1", n)
	}
}
