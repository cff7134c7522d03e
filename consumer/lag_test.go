package consumer

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/defender-enricher/defender-enricher/health"
)

// The lag is the end offset minus the group's committed offset, per
// partition, read from the broker; Run reports it as a gauge, with the
// commits' duration and failures beside it.
func TestLag(t *testing.T) {
	const partitions = 2
	_, addrs := newCluster(t, partitions)
	produce(t, newProducer(t, addrs), partitions, 0, 10)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	c := newConsumer(t, addrs, "lag", func(cfg *Config) { cfg.Metrics = m; cfg.LagInterval = 20 * time.Millisecond })

	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	lag, err := c.Lag(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if lag[0] != 10 || lag[1] != 10 {
		t.Fatalf("before any commit: lag %v, want 10 on each partition", lag)
	}

	// Acknowledge 3 records of each partition and commit.
	done := map[int]int{}
	for _, msg := range fetchN(t, c, 20) {
		if done[msg.Partition] < 3 && msg.Offset < 3 {
			done[msg.Partition]++
			msg.Done()
		}
	}
	if err := c.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if lag, err = c.Lag(ctx); err != nil || lag[0] != 7 || lag[1] != 7 {
		t.Fatalf("3 of 10 committed per partition: lag %v (%v), want 7 each", lag, err)
	}

	runCtx, stop := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(runCtx) }()
	waitFor(t, "the lag gauge", func() bool {
		for p := range partitions {
			g, err := m.lag.GetMetricWithLabelValues(testTopic, strconv.Itoa(p))
			if err != nil || testutil.ToFloat64(g) != 7 {
				return false
			}
		}
		return true
	})
	stop()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m.commits, "enricher_consumer_commit_duration_seconds"); n != 1 {
		t.Errorf("commit duration series: %d, want 1 (topic %s)", n, testTopic)
	}
	if got := testutil.ToFloat64(m.failures.WithLabelValues(testTopic)); got != 0 {
		t.Errorf("commit failures: %v, want 0", got)
	}
}

// A consumer is ready once it joined its group and fetched; a member the
// group gave no partition is ready once it joined.
func TestReady(t *testing.T) {
	_, addrs := newCluster(t, 1)
	produce(t, newProducer(t, addrs), 1, 0, 1)
	a := newConsumer(t, addrs, "ready", nil)
	if a.Ready() {
		t.Fatal("ready before joining its group")
	}
	fetchN(t, a, 1)
	waitFor(t, "the first member ready", a.Ready)

	// A second member: one of the two holds the only partition.
	b := newConsumer(t, addrs, "ready", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for {
			if _, err := a.Fetch(ctx); err != nil {
				return
			}
		}
	}()
	go func() {
		for {
			if _, err := b.Fetch(ctx); err != nil {
				return
			}
		}
	}()
	waitFor(t, "the second member ready", b.Ready)
	if a.assigned.Load()+b.assigned.Load() != 1 {
		t.Errorf("assigned %d and %d partitions, want 1 between them", a.assigned.Load(), b.assigned.Load())
	}
}

// The committer ticks the liveness watchdog: stuck in its own work (here a
// commit lock never released) for longer than the bound, it is reported.
func TestCommitterWatchdog(t *testing.T) {
	_, addrs := newCluster(t, 1)
	var mu sync.Mutex
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	w := health.New(time.Minute, clock)
	beat := w.Beat("committer")
	c := newConsumer(t, addrs, "watchdog", func(cfg *Config) { cfg.Beat = beat })

	c.commitMu.Lock()
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(ctx) }()
	waitFor(t, "the committer to start a commit", func() bool { return !beat.Waiting() })
	w.Stalled()
	advance(61 * time.Second)
	if s := w.Stalled(); !slices.Equal(s, []string{"committer"}) {
		t.Fatalf("61s in a commit that cannot take its lock: stalled %v, want [committer]", s)
	}
	c.commitMu.Unlock()
	waitFor(t, "the committer to wait for its next tick", beat.Waiting)
	if s := w.Stalled(); len(s) != 0 {
		t.Fatalf("after the lock was released: stalled %v", s)
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
}
