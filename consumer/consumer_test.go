package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const testTopic = "defender.alerts"

// hangGuard bounds the waits of these tests: long enough that only a hang,
// not a loaded machine, reaches it.
const hangGuard = 60 * time.Second

// testWriter passes log lines to the test's output until the test ends;
// kafka-go goroutines may still log after that, and writing to a finished
// test's output fails it.
type testWriter struct {
	mu   sync.Mutex
	w    io.Writer
	done bool
}

func (tw *testWriter) Write(p []byte) (int, error) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.done {
		return len(p), nil
	}
	return tw.w.Write(p)
}

func testLogger(t testing.TB) *slog.Logger {
	tw := &testWriter{w: t.Output()}
	t.Cleanup(func() {
		tw.mu.Lock()
		tw.done = true
		tw.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(tw, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newCluster starts a one-broker kfake cluster on 127.0.0.1 with the test
// topic.
func newCluster(t testing.TB, partitions int32) (*kfake.Cluster, []string) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.Ports(0), kfake.SeedTopics(partitions, testTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()
}

func newProducer(t testing.TB, addrs []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// produce writes perPartition records to every partition, starting with
// record number from; the value names partition and number.
func produce(t testing.TB, cl *kgo.Client, partitions int32, from, perPartition int) {
	t.Helper()
	var recs []*kgo.Record
	for i := from; i < from+perPartition; i++ {
		for p := range partitions {
			recs = append(recs, &kgo.Record{Topic: testTopic, Partition: p, Value: fmt.Appendf(nil, "%d/%d", p, i)})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// committedOffsets asks the broker for the group's committed offsets; -1 means
// none.
func committedOffsets(t testing.TB, addrs []string, group string, partitions int32) map[int]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = group
	rt := kmsg.NewOffsetFetchRequestTopic()
	rt.Topic = testTopic
	for p := range partitions {
		rt.Partitions = append(rt.Partitions, p)
	}
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("offset fetch: %v", err)
	}
	if resp.ErrorCode != 0 {
		t.Fatalf("offset fetch: error code %d", resp.ErrorCode)
	}
	out := make(map[int]int64)
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode != 0 {
				t.Fatalf("offset fetch partition %d: error code %d", rp.Partition, rp.ErrorCode)
			}
			out[int(rp.Partition)] = rp.Offset
		}
	}
	return out
}

func newConsumer(t testing.TB, addrs []string, group string, mod func(*Config)) *Consumer {
	t.Helper()
	cfg := Config{
		Brokers:           addrs,
		Topic:             testTopic,
		Group:             group,
		CommitInterval:    50 * time.Millisecond,
		CommitTimeout:     5 * time.Second,
		Logger:            testLogger(t).With("member", group+fmt.Sprint(rand.IntN(1000))),
		heartbeatInterval: 200 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

func fetchN(t testing.TB, c *Consumer, n int) []*Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	out := make([]*Message, 0, n)
	for len(out) < n {
		m, err := c.Fetch(ctx)
		if err != nil {
			t.Fatalf("fetch %d of %d: %v", len(out)+1, n, err)
		}
		out = append(out, m)
	}
	return out
}

func closeConsumer(t testing.TB, c *Consumer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	good := Config{Brokers: []string{"127.0.0.1:9092"}, Topic: "t", Group: "g"}
	tests := []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Brokers = nil }, "consumer: Brokers is empty"},
		{func(c *Config) { c.Brokers = []string{" "} }, "consumer: Brokers contains an empty address"},
		{func(c *Config) { c.Topic = "" }, "consumer: Topic is empty"},
		{func(c *Config) { c.Group = "" }, "consumer: Group is empty"},
		{func(c *Config) { c.StartOffset = 42 }, "consumer: StartOffset is 42"},
		{func(c *Config) { c.CommitInterval = -time.Second }, "consumer: CommitInterval is negative"},
		{func(c *Config) { c.CommitTimeout = -time.Second }, "consumer: CommitTimeout is negative"},
		{func(c *Config) { c.MaxBytes = -1 }, "consumer: MaxBytes is negative"},
	}
	for _, tt := range tests {
		cfg := good
		tt.mod(&cfg)
		c, err := New(cfg)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("New: error %v, want %q", err, tt.want)
		}
		if c != nil {
			t.Errorf("New returned a consumer with error %v", err)
		}
	}

	cfg, err := good.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StartOffset != kafka.FirstOffset || cfg.CommitInterval != time.Second || cfg.CommitTimeout != 10*time.Second ||
		cfg.MaxBytes != 10<<20 || cfg.Dialer == nil || cfg.Dialer.Timeout != 10*time.Second || cfg.Logger == nil {
		t.Errorf("defaults not applied: %+v", cfg)
	}
}

// TestAtLeastOnce acknowledges fetched messages in a random order, leaving
// some undone, and checks that the commit is exactly the contiguous done
// prefix per partition and that the next member of the group is given every
// message from there on again.
func TestAtLeastOnce(t *testing.T) {
	const partitions, perPartition = 3, 40
	_, addrs := newCluster(t, partitions)
	produce(t, newProducer(t, addrs), partitions, 0, perPartition)

	c1 := newConsumer(t, addrs, "g", nil)
	msgs := fetchN(t, c1, partitions*perPartition)

	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	// The commit per partition must stop at its first undone message.
	want := map[int]int64{0: perPartition, 1: perPartition, 2: perPartition}
	var undone []*Message
	var wg sync.WaitGroup
	for i, m := range msgs {
		switch {
		case m.Partition == 0 && m.Offset == 0, // nothing committable on 0
			m.Partition == 1 && m.Offset == 17,
			m.Partition != 2 && rng.IntN(10) == 0:
			undone = append(undone, m)
			want[m.Partition] = min(want[m.Partition], m.Offset)
		case i%3 == 0:
			// Three acknowledgements, from as many goroutines.
			m.Expect(3)
			for range 3 {
				wg.Go(m.Done)
			}
		default:
			wg.Go(m.Done)
		}
	}
	wg.Wait()
	if got := c1.Stats().InFlight; got != int64(len(undone)) {
		t.Errorf("in flight = %d, want %d", got, len(undone))
	}

	if err := c1.Commit(context.Background()); err != nil {
		t.Fatalf("commit: %v", err)
	}
	got := committedOffsets(t, addrs, "g", partitions)
	for p := range partitions {
		w := want[int(p)]
		if w == 0 {
			w = -1 // nothing committed
		}
		if got[int(p)] != w {
			t.Errorf("partition %d: committed %d, want %d", p, got[int(p)], w)
		}
	}
	st := c1.Stats()
	if st.Commits != 1 || st.CommitErrors != 0 {
		t.Errorf("stats %+v, want one commit", st)
	}
	if _, ok := st.Committed[0]; ok {
		t.Errorf("partition 0 reported committed: %v", st.Committed)
	}
	// A commit with nothing new is no request at all.
	if err := c1.Commit(context.Background()); err != nil || c1.Stats().Commits != 1 {
		t.Errorf("second commit: %v, commits %d", err, c1.Stats().Commits)
	}
	closeConsumer(t, c1)
	if _, err := c1.Fetch(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("fetch after close: %v, want ErrClosed", err)
	}
	if err := c1.Commit(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("commit after close: %v, want ErrClosed", err)
	}

	// The next member starts at the committed offsets: every undone message
	// comes again, with the done ones after it as duplicates.
	c2 := newConsumer(t, addrs, "g", nil)
	n := 0
	for _, w := range want {
		n += perPartition - int(w)
	}
	again := fetchN(t, c2, n)
	next := map[int]int64{}
	for p, w := range want {
		next[p] = w
	}
	for _, m := range again {
		if m.Offset != next[m.Partition] {
			t.Fatalf("partition %d: got offset %d, want %d", m.Partition, m.Offset, next[m.Partition])
		}
		next[m.Partition]++
	}
	for _, m := range undone {
		if m.Offset >= next[m.Partition] {
			t.Errorf("undone partition %d offset %d not fetched again", m.Partition, m.Offset)
		}
	}
}

func TestCloseCommitsDone(t *testing.T) {
	const partitions, perPartition = 2, 10
	_, addrs := newCluster(t, partitions)
	produce(t, newProducer(t, addrs), partitions, 0, perPartition)

	c := newConsumer(t, addrs, "g", func(cfg *Config) { cfg.CommitInterval = time.Hour })
	for _, m := range fetchN(t, c, partitions*perPartition) {
		if m.Offset < 7 {
			m.Done()
		}
	}
	closeConsumer(t, c)
	got := committedOffsets(t, addrs, "g", partitions)
	for p := range partitions {
		if got[int(p)] != 7 {
			t.Errorf("partition %d: committed %d, want 7", p, got[int(p)])
		}
	}
}

func TestNoAcknowledgementCommitsNothing(t *testing.T) {
	const partitions, perPartition = 2, 10
	_, addrs := newCluster(t, partitions)
	produce(t, newProducer(t, addrs), partitions, 0, perPartition)

	c := newConsumer(t, addrs, "g", nil)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(ctx) }()
	fetchN(t, c, partitions*perPartition)
	// A few commit intervals. Nothing is done, so no wait can make the
	// checks below fail falsely; the pause only gives a wrong commit the
	// time to happen.
	time.Sleep(200 * time.Millisecond)
	cancel()
	if err := <-runDone; err != nil {
		t.Errorf("run: %v", err)
	}
	closeConsumer(t, c)
	if st := c.Stats(); st.Commits != 0 || st.CommitErrors != 0 || st.InFlight != partitions*perPartition {
		t.Errorf("stats %+v, want no commits and everything in flight", st)
	}
	for p, off := range committedOffsets(t, addrs, "g", partitions) {
		if off != -1 {
			t.Errorf("partition %d: committed %d, want none", p, off)
		}
	}
}

// member is one consumer of the group with its fetch loop and commit loop,
// acknowledging each message after a short random delay, as the output
// would.
type member struct {
	c      *Consumer
	cancel context.CancelFunc
	wg     sync.WaitGroup
	acked  atomic.Int64
}

func startMember(t *testing.T, c *Consumer, ack func(m *Message)) *member {
	ctx, cancel := context.WithCancel(context.Background())
	mb := &member{c: c, cancel: cancel}
	mb.wg.Go(func() { _ = c.Run(ctx) })
	mb.wg.Go(func() {
		for {
			m, err := c.Fetch(ctx)
			switch {
			case err == nil:
			case ctx.Err() != nil || errors.Is(err, ErrClosed):
				return
			default:
				t.Logf("fetch: %v", err)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			mb.wg.Go(func() {
				time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
				ack(m)
				mb.acked.Add(1)
				m.Done()
			})
		}
	})
	return mb
}

// waitFor polls cond until it holds or hangGuard has passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTwoMembersNoLoss runs two members of a group on four partitions while
// records keep arriving, closes one mid-stream without waiting for its
// in-flight messages, and checks that every record was acknowledged by
// someone.
func TestTwoMembersNoLoss(t *testing.T) {
	const partitions, perPartition = 4, 400
	const total = partitions * perPartition
	_, addrs := newCluster(t, partitions)
	prod := newProducer(t, addrs)

	var mu sync.Mutex
	acks := make(map[string]int, total)
	ack := func(m *Message) {
		mu.Lock()
		acks[string(m.Value)]++
		mu.Unlock()
	}
	distinct := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acks)
	}

	// Records arrive in batches; the second half only after the first member
	// is gone, so that its partitions certainly move to the second.
	aClosed := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Go(func() {
		const batch = 10
		for i := 0; i < perPartition; i += batch {
			if i == perPartition/2 {
				<-aClosed
			}
			produce(t, prod, partitions, i, batch)
			time.Sleep(25 * time.Millisecond)
		}
	})

	a := startMember(t, newConsumer(t, addrs, "g", nil), ack)
	waitFor(t, "first member to acknowledge", func() bool { return a.acked.Load() >= 100 })
	b := startMember(t, newConsumer(t, addrs, "g", nil), ack)
	// Both in the second generation: the second member has partitions,
	// though what it reads depends on what the first had committed.
	waitFor(t, "second generation", func() bool {
		return b.c.Stats().Rebalances >= 1 && a.c.Stats().Rebalances >= 2
	})

	// Close the first member mid-stream: stop fetching and close at once,
	// with its in-flight messages still being acknowledged.
	a.cancel()
	closeConsumer(t, a.c)
	close(aClosed)
	sa := a.c.Stats()
	t.Logf("first member closed: %d acknowledged, stats %+v", a.acked.Load(), sa)

	waitFor(t, "every record acknowledged", func() bool { return distinct() == total })
	pwg.Wait()
	a.wg.Wait()
	waitFor(t, "second member to finish", func() bool { return b.c.Stats().InFlight == 0 })
	b.cancel()
	closeConsumer(t, b.c)
	b.wg.Wait()

	mu.Lock()
	dups := 0
	for _, n := range acks {
		dups += n - 1
	}
	mu.Unlock()
	sb := b.c.Stats()
	t.Logf("acknowledged %d records, %d duplicates; first member %d acks, second %d; second member stats %+v",
		total, dups, a.acked.Load(), b.acked.Load(), sb)
	if sb.Rebalances < 2 {
		t.Errorf("second member saw %d rebalances, want at least 2 (join, then the first member leaving)", sb.Rebalances)
	}
	for p, off := range committedOffsets(t, addrs, "g", partitions) {
		if off != perPartition {
			t.Errorf("partition %d: committed %d, want %d", p, off, perPartition)
		}
	}
}

func TestCommitBrokerGone(t *testing.T) {
	cluster, addrs := newCluster(t, 1)
	produce(t, newProducer(t, addrs), 1, 0, 3)
	const timeout = time.Second
	c := newConsumer(t, addrs, "g-gone", func(cfg *Config) {
		cfg.CommitInterval = time.Hour
		cfg.CommitTimeout = timeout
		cfg.Dialer = &kafka.Dialer{Timeout: time.Second}
	})
	for _, m := range fetchN(t, c, 3) {
		m.Done()
	}
	cluster.Close()

	start := time.Now()
	err := c.Commit(context.Background())
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("commit with the broker gone succeeded")
	}
	if elapsed > timeout+500*time.Millisecond {
		t.Errorf("commit took %s, want at most about %s", elapsed, timeout)
	}
	for _, s := range []string{testTopic, "g-gone"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %q", err, s)
		}
	}
	if st := c.Stats(); st.CommitErrors != 1 || st.Commits != 0 {
		t.Errorf("stats %+v, want one commit error", st)
	}
	t.Logf("commit error after %s: %v", elapsed.Round(time.Millisecond), err)

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := c.Close(ctx); err == nil {
		t.Error("close with the broker gone reported no commit error")
	}
}

func BenchmarkFetchDone(b *testing.B) {
	_, addrs := newCluster(b, 1)
	prod := newProducer(b, addrs)
	for i := 0; i < b.N; i += 1000 {
		produce(b, prod, 1, i, min(1000, b.N-i))
	}
	c := newConsumer(b, addrs, "bench", func(cfg *Config) { cfg.Logger = nil })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx) }()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		m, err := c.Fetch(ctx)
		if err != nil {
			b.Fatal(err)
		}
		m.Done()
	}
}
