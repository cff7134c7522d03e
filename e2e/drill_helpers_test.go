package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// drillFigures are the numbers every drill reports in one line, so that a
// run's log can be read as a table (RELIABILITY.md keeps the last ones).
type drillFigures struct {
	EventsIn    int
	Outputs     int // output records, duplicates included
	DeadLetters int // dead-letter records, duplicates included
	Duplicates  int
	Lost        int
	APICalls    int
	// MaxWindow is, per configured window, the most API calls that arrived
	// in any interval of its length, as "20/1s:17 200/10s:151".
	MaxWindow string
	Restarts  int // connector restarts (drills 1 and 3) or broker restarts (drill 2)
	Elapsed   time.Duration
	Extra     string // what only this drill counts
}

// fill takes the loss check's counts.
func (f *drillFigures) fill(r lossReport, outs []output, dls []deadLetter) {
	f.EventsIn, f.Outputs, f.DeadLetters = r.Events, len(outs), len(dls)
	f.Duplicates, f.Lost = r.Duplicates, r.Missing
}

// report logs the one-line summary. It starts with "DRILL" so that
// `go test -v ... | grep DRILL` gives the table.
func (f drillFigures) report(t testing.TB) {
	t.Helper()
	line := fmt.Sprintf("DRILL %s: events in %d, outputs %d, dead letters %d, duplicates %d, lost %d, API calls %d, max calls in any window %s, restarts %d, elapsed %s",
		t.Name(), f.EventsIn, f.Outputs, f.DeadLetters, f.Duplicates, f.Lost, f.APICalls, f.MaxWindow, f.Restarts, f.Elapsed.Round(100*time.Millisecond))
	if f.Extra != "" {
		line += "; " + f.Extra
	}
	t.Log(line)
}

// windowPeaks returns, per limit, the most of times (in any order) that fall
// in one half-open interval of the limit's length: what a server counting
// calls by arrival would see at its worst moment.
func windowPeaks(times []time.Time, limits budget.Limits) []int {
	ts := slices.Clone(times)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	peaks := make([]int, len(limits))
	for k, l := range limits {
		j := 0
		for i := range ts {
			for ts[i].Sub(ts[j]) >= l.Per {
				j++
			}
			peaks[k] = max(peaks[k], i-j+1)
		}
	}
	return peaks
}

// checkBudget asserts that the calls the simulator saw never exceeded any
// window of limits (ENRICHER_DEFENDER_RATE_LIMITS syntax), counted by
// arrival, and returns the peaks in the MaxWindow format.
func checkBudget(t testing.TB, calls []simulator.Call, limits string) string {
	t.Helper()
	ls, err := budget.ParseLimits(limits)
	if err != nil {
		t.Fatalf("limits %q: %v", limits, err)
	}
	times := make([]time.Time, len(calls))
	for i, c := range calls {
		times[i] = c.Time
	}
	peaks := windowPeaks(times, ls)
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = fmt.Sprintf("%s:%d", l, peaks[i])
		if peaks[i] > l.Calls {
			t.Errorf("budget broken: %d API calls arrived within %s, the limit is %s", peaks[i], l.Per, l)
		}
	}
	return strings.Join(parts, " ")
}

// stream writes alerts to a topic from a goroutine of its own, so that a
// drill can kill, start and restart things while the stream flows. It uses
// one franz-go client for the whole stream, with acks from every in-sync
// replica, and partitions by key as the Java producer does (murmur2), like
// kafkatest.Cluster.Produce.
type stream struct {
	written atomic.Int64
	hurry   atomic.Bool // set: write the rest without pacing
	done    chan struct{}

	mu     sync.Mutex
	events []event
	err    error
}

// streamOpts shape a stream.
type streamOpts struct {
	n, batch int
	pace     time.Duration // between batches; 0 writes as fast as acks come
	ids      []string      // cycled through; nil: 500 fresh ids
}

// startStream starts writing o.n alerts to topic, each with a fresh marker,
// in batches of o.batch every o.pace. Each batch waits up to two minutes for
// its acknowledgements, which covers a broker restart; the stream stops at
// the first error, which wait reports. It is stopped at cleanup.
func startStream(t testing.TB, c *kafkatest.Cluster, topic string, o streamOpts) *stream {
	t.Helper()
	if o.batch <= 0 {
		o.batch = 1000
	}
	if len(o.ids) == 0 {
		o.ids = newAlertIDs(500)
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.Brokers()...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		// Large batches, sent as soon as the previous request is answered:
		// 50,000 alerts of about 1 KB each take a few seconds.
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20),
		kgo.MaxBufferedRecords(4*o.batch),
		kgo.MetadataMinAge(250*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("stream client: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &stream{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer cl.Close()
		s.run(ctx, cl, topic, o)
	}()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	return s
}

func (s *stream) run(ctx context.Context, cl *kgo.Client, topic string, o streamOpts) {
	var tick <-chan time.Time
	if o.pace > 0 {
		tk := time.NewTicker(o.pace)
		defer tk.Stop()
		tick = tk.C
	}
	next := 0
	for next < o.n {
		if next > 0 && tick != nil && !s.hurry.Load() {
			select {
			case <-tick:
			case <-ctx.Done():
				s.fail(ctx.Err())
				return
			}
		}
		n := min(o.batch, o.n-next)
		msgs := make([]message, n)
		recs := make([]*kgo.Record, n)
		index := make(map[*kgo.Record]int, n)
		for i := range msgs {
			msgs[i] = alertMessage(o.ids[(next+i)%len(o.ids)], kafkatest.ByKey)
			recs[i] = &kgo.Record{Topic: topic, Key: msgs[i].Key, Value: msgs[i].Value}
			index[recs[i]] = i
		}
		now := time.Now()
		bctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		results := cl.ProduceSync(bctx, recs...)
		cancel()
		evs := make([]event, 0, n)
		for _, res := range results {
			if res.Err != nil {
				s.fail(fmt.Errorf("stream: producing alert %d: %w", next+index[res.Record], res.Err))
				return
			}
		}
		for i, r := range recs {
			ev := msgs[i].Events[0]
			ev.Partition, ev.Offset = r.Partition, r.Offset
			ev.Key, ev.Value, ev.Produced = msgs[i].Key, msgs[i].Value, now
			evs = append(evs, ev)
		}
		s.mu.Lock()
		s.events = append(s.events, evs...)
		s.mu.Unlock()
		next += n
		s.written.Store(int64(next))
	}
}

func (s *stream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

// finish makes the stream write what is left without pacing, once a drill
// has done what the paced part was for.
func (s *stream) finish() { s.hurry.Store(true) }

// wait waits up to timeout for the stream to end and returns its events in
// the order written; it fails the test if the stream failed or is late.
func (s *stream) wait(t testing.TB, timeout time.Duration) []event {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(timeout):
		t.Fatalf("stream: %d alerts written after %v, not finished", s.written.Load(), timeout)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		t.Fatalf("%v (after %d alerts)", s.err, len(s.events))
	}
	return slices.Clone(s.events)
}

// outputs is how many output records the tail has read so far.
func (tl *tail) outputs() int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return len(tl.outs)
}

// waitOutputs waits until the tail has read at least n output records, or
// until p (when not nil) exits, which fails the test with its log.
func waitOutputs(t testing.TB, tl *tail, p *proc, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for tl.outputs() < n {
		if p != nil {
			select {
			case <-p.done:
				t.Fatalf("the connector exited (%v) while %d outputs were awaited; its log:\n%s", p.err, n, tailLines(p.Stderr(), 40))
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %d outputs: %d read", timeout, n, tl.outputs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// running fails the test if p has exited.
func (p *proc) running(what string) {
	p.t.Helper()
	select {
	case <-p.done:
		p.t.Fatalf("the connector exited (%v) %s; its log:\n%s", p.err, what, tailLines(p.Stderr(), 60))
	default:
	}
}

// waitCommitted waits until the group's committed offsets on e's input
// topic cover every input, as they must while the connector runs.
func waitCommitted(t testing.TB, e *env, inputs []event, timeout time.Duration) map[int32]int64 {
	t.Helper()
	end := endOffsets(inputs)
	deadline := time.Now().Add(timeout)
	for {
		got := e.cluster.Committed(t, e.group, e.in)
		behind := ""
		for p, off := range end {
			if got[p] < off {
				behind += fmt.Sprintf(" partition %d at %d of %d;", p, got[p], off)
			}
		}
		if behind == "" {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the committed offsets are behind:%s", timeout, behind)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// newRand returns a generator whose seed is logged, so that a failing run's
// random moments can be read back.
func newRand(t testing.TB) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("ENRICHER_DRILL_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("ENRICHER_DRILL_SEED=%q: %v", v, err)
		}
		seed = s
	}
	t.Logf("random seed %d (ENRICHER_DRILL_SEED=%d repeats it)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// sent is one Defender request as the connector's HTTP client saw it.
type sent struct {
	AlertID    string
	At         time.Time // RoundTrip called
	Answered   time.Time // status and headers received, or the error
	Status     int       // 0 when no answer came
	RetryAfter string
}

// recorder is an http.RoundTripper that records the Defender requests
// (those to host) passing through it.
type recorder struct {
	next http.RoundTripper
	host string

	mu   sync.Mutex
	sent []sent
}

// recordingClient returns a copy of the simulator's client whose Defender
// requests are recorded.
func recordingClient(sim *simulator.Server) (*http.Client, *recorder) {
	hc := *sim.Client()
	rec := &recorder{next: hc.Transport, host: strings.TrimPrefix(sim.URL(), "https://")}
	hc.Transport = rec
	return &hc, rec
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != r.host {
		return r.next.RoundTrip(req)
	}
	s := sent{At: time.Now()}
	if rest, ok := strings.CutPrefix(req.URL.Path, "/api/alerts/"); ok {
		s.AlertID, _, _ = strings.Cut(rest, "/")
	}
	resp, err := r.next.RoundTrip(req)
	s.Answered = time.Now()
	if err == nil {
		s.Status, s.RetryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	}
	r.mu.Lock()
	r.sent = append(r.sent, s)
	r.mu.Unlock()
	return resp, err
}

func (r *recorder) snapshot() []sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sent)
}

// retryAfterReport is what checkRetryAfter found.
type retryAfterReport struct {
	Throttled int // 429 answers
	// InPeriod counts calls that arrived within a Retry-After period after
	// a 429, InFlight those of them that had been sent before the
	// connector received that 429, InSlack those sent within grantSlack
	// after it, and Violations the rest.
	InPeriod, InFlight, InSlack, Violations int
	// MaxSlack is the longest an InSlack call was sent after its 429 came
	// back.
	MaxSlack time.Duration
}

// grantSlack is how long after receiving a 429 a request may still be sent
// without having ignored it: the budget may have granted it just before the
// 429 arrived, and the few statements between the grant and the send can be
// descheduled for a moment on a loaded machine.
const grantSlack = 50 * time.Millisecond

// checkRetryAfter checks, over the simulator's log, that no call arrived
// during a Retry-After period after a 429: for a 429 that arrived at T with
// Retry-After d, a call arriving in (T, T+d) is a violation unless the
// connector sent it before it received that 429 (plus grantSlack). Calls
// are matched with the client's record by alert id and order: the attempts
// of one lookup are sequential, and every alert id is looked up by one
// lookup at a time.
func checkRetryAfter(t testing.TB, calls []simulator.Call, rec []sent) retryAfterReport {
	t.Helper()
	byAlert := map[string][]sent{}
	for _, s := range rec {
		byAlert[s.AlertID] = append(byAlert[s.AlertID], s)
	}
	seen := map[string]int{}
	matched := make([]*sent, len(calls))
	for i, c := range calls {
		k := seen[c.AlertID]
		seen[c.AlertID]++
		if k < len(byAlert[c.AlertID]) {
			matched[i] = &byAlert[c.AlertID][k]
		}
	}
	var r retryAfterReport
	counted := make([]bool, len(calls))
	for i, c := range calls {
		if c.Status != http.StatusTooManyRequests {
			continue
		}
		r.Throttled++
		m := matched[i]
		if m == nil || m.Status != http.StatusTooManyRequests {
			t.Errorf("429 for %s at %s: no matching request in the connector's record", c.AlertID, c.Time.Format("15:04:05.000"))
			continue
		}
		secs, err := strconv.Atoi(m.RetryAfter)
		if err != nil || secs <= 0 {
			t.Errorf("429 for %s: Retry-After %q, want whole seconds", c.AlertID, m.RetryAfter)
			continue
		}
		until := c.Time.Add(time.Duration(secs) * time.Second)
		for j := i + 1; j < len(calls) && calls[j].Time.Before(until); j++ {
			if !calls[j].Time.After(c.Time) || counted[j] {
				continue
			}
			counted[j] = true
			r.InPeriod++
			sentAt := calls[j].Time // without a record, sent no later than it arrived
			if matched[j] != nil {
				sentAt = matched[j].At
			}
			switch {
			case !sentAt.After(m.Answered):
				r.InFlight++
				continue
			case !sentAt.After(m.Answered.Add(grantSlack)):
				r.InSlack++
				r.MaxSlack = max(r.MaxSlack, sentAt.Sub(m.Answered))
				continue
			}
			r.Violations++
			t.Errorf("call for %s arrived at %s, %v after a 429 (Retry-After %ds) that the connector received %v before sending it",
				calls[j].AlertID, calls[j].Time.Format("15:04:05.000"), calls[j].Time.Sub(c.Time).Round(time.Millisecond),
				secs, sentAt.Sub(m.Answered).Round(time.Millisecond))
		}
	}
	return r
}

// kafkaScript runs scripts/kafka.sh with args and extra environment
// variables, bounded by timeout, and returns its output (stdout, where
// only the KAFKA_BROKERS line goes). It fails the test with the script's
// stderr if it fails.
func kafkaScript(t testing.TB, env []string, timeout time.Duration, args ...string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("finding the repository: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "kafka.sh"), args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	// The broker is started detached and keeps the script's stdout and
	// stderr only until it redirects its own; WaitDelay keeps a stray
	// holder of the pipes from blocking Wait.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/kafka.sh %s: %v\n%s", strings.Join(args, " "), err, tailLines(stderr.String(), 40))
	}
	return string(out)
}

// privateBroker is a broker of the drill's own, started by scripts/kafka.sh
// in a temporary directory on free ports of 127.0.0.1: restarting it hits
// no test of another package that `go test ./...` runs at the same time
// against the broker of ENRICHER_TEST_KAFKA_BROKERS.
type privateBroker struct {
	t   testing.TB
	env []string
	c   *kafkatest.Cluster
}

// startPrivateBroker starts the broker and stops it (deleting its data) at
// cleanup. It needs what scripts/kafka.sh needs: a JDK and Maven (the jars
// are already in the local Maven repository once the shared broker ran).
func startPrivateBroker(t *testing.T) *privateBroker {
	t.Helper()
	dir := t.TempDir()
	port, controller := freePort(t), freePort(t)
	b := &privateBroker{t: t, env: []string{
		"KAFKA_DIR=" + dir,
		"KAFKA_PORT=" + strconv.Itoa(port),
		"KAFKA_CONTROLLER_PORT=" + strconv.Itoa(controller),
	}}
	// Registered after TempDir, so it runs before the directory goes.
	t.Cleanup(func() { kafkaScript(t, b.env, 2*time.Minute, "stop") })
	out := kafkaScript(t, b.env, 3*time.Minute, "start")
	brokers := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "KAFKA_BROKERS="))
	if brokers != net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) {
		t.Fatalf("scripts/kafka.sh start printed %q, want KAFKA_BROKERS=127.0.0.1:%d", out, port)
	}
	t.Setenv(kafkatest.EnvBrokers, brokers)
	b.c = kafkatest.NewReal(t)
	return b
}

// restart restarts the broker (args: "restart" or "restart", "--kill") and
// returns how long it was away; scripts/kafka.sh returns once the broker
// answers Kafka requests and coordinates groups again.
func (b *privateBroker) restart(args ...string) time.Duration {
	b.t.Helper()
	start := time.Now()
	kafkaScript(b.t, b.env, 3*time.Minute, append([]string{"restart"}, args...)...)
	return time.Since(start)
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// verifyNoLossSampled is verifyNoLoss for streams of tens of thousands of
// events: the same accounting (every input event out at least once,
// duplicates counted, strays and undecodable outputs reported), but the
// output schema is checked on every first output of a status and on every
// every-th output instead of on all of them, which under the race detector
// would take longer than the drill itself. The schema is checked in full
// by the other end-to-end tests.
func verifyNoLossSampled(t testing.TB, inputs []event, outs []output, dls []deadLetter, every int) lossReport {
	t.Helper()
	r := lossReport{Events: len(inputs)}
	want := make(map[string]bool, len(inputs))
	for _, ev := range inputs {
		if want[ev.id()] {
			t.Fatalf("two input events share the identity %s", ev.id())
		}
		want[ev.id()] = true
	}
	seen := make(map[string]int, len(inputs))
	statuses := map[string]bool{}
	validated := 0
	for i, o := range outs {
		if o.DecodeErr != nil {
			t.Errorf("output %d/%d does not decode: %v\n%.300s", o.Partition, o.Offset, o.DecodeErr, o.Value)
			continue
		}
		if st := o.Env.Enrichment.Status; !statuses[st] || i%every == 0 {
			statuses[st] = true
			validated++
			if err := validateOutput(o.Value); err != nil {
				t.Errorf("output %d/%d does not match the output schema: %v\n%.300s", o.Partition, o.Offset, err, o.Value)
			}
		}
		seen[o.id()]++
	}
	for _, d := range dls {
		seen[d.id()]++
	}
	var strays, missing []string
	for id, n := range seen {
		if !want[id] {
			r.Strays += n
			strays = append(strays, id)
		}
	}
	for _, ev := range inputs {
		n := seen[ev.id()]
		if n == 0 {
			r.Missing++
			if len(missing) < 10 {
				missing = append(missing, fmt.Sprintf("%s (partition %d offset %d)", ev.id(), ev.Partition, ev.Offset))
			}
			continue
		}
		r.Duplicates += n - 1
	}
	t.Logf("no-loss check: %d input events, %d outputs (%d checked against the schema), %d dead letters, %d missing, %d duplicates, %d strays",
		r.Events, len(outs), validated, len(dls), r.Missing, r.Duplicates, r.Strays)
	if r.Missing > 0 {
		t.Errorf("%d of %d input events never came out, first: %s", r.Missing, r.Events, strings.Join(missing, ", "))
	}
	if r.Strays > 0 {
		slices.Sort(strays)
		t.Errorf("%d records came out that no input event explains, first: %s", r.Strays, strings.Join(strays[:min(len(strays), 10)], ", "))
	}
	return r
}

// kill9 sends SIGKILL to p and checks that the signal is what ended it: a
// drill whose kill did not happen must not pass as one that survived it.
func kill9(t testing.TB, p *proc) {
	t.Helper()
	p.running("before it was to be killed")
	p.Kill()
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) {
		t.Fatalf("after SIGKILL: %v, want the process killed by the signal", p.err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("after SIGKILL: %v, want the process killed by the signal", p.err)
	}
}

// committedSum adds up the group's committed offsets on e's input topic: a
// measure of progress that needs nothing from the connector.
func committedSum(t testing.TB, e *env) int64 {
	t.Helper()
	var n int64
	for _, o := range e.cluster.Committed(t, e.group, e.in) {
		n += o
	}
	return n
}

// waitProgress waits until the group's committed offsets on e's input
// topic go past from, failing the test if p exits first or after timeout.
func waitProgress(t testing.TB, e *env, p *proc, from int64, timeout time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n := committedSum(t, e)
		if n > from {
			return n
		}
		if p != nil {
			p.running("while its progress was awaited")
		}
		if time.Now().After(deadline) {
			t.Fatalf("no commit past %d within %v", from, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var eventsLine = regexp.MustCompile(`(?m)^enricher_(?:events_total\{[^}]*\}|dead_letters_total\{[^}]*\}) (\S+)$`)

// acknowledged returns the events a running binary has acknowledged so
// far, read from its /metrics at addr, or -1 if it does not answer.
func acknowledged(addr string) int64 {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return -1
	}
	var n float64
	for _, m := range eventsLine.FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		n += v
	}
	return int64(n)
}

// member is one connector binary of a group drill, with its /metrics
// address.
type member struct {
	name string
	addr string
	p    *proc
	last int64 // acknowledged events when last read, kept after it is killed
}

func startMember(t testing.TB, e *env, name string) *member {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	m := &member{name: name, addr: addr}
	m.p = startBinary(t, binaryVars(e, map[string]string{"ENRICHER_HTTP_ADDR": addr}), "run")
	return m
}

// acked reads the member's count, keeping the last one read once it is gone.
func (m *member) acked() int64 {
	if n := acknowledged(m.addr); n >= 0 {
		m.last = n
	}
	return m.last
}

// eventsFrom waits until the stream has written at least k alerts after
// its first from, and returns those k.
func (s *stream) eventsFrom(t testing.TB, from, k int, timeout time.Duration) []event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		if len(s.events) >= from+k {
			evs := slices.Clone(s.events[from : from+k])
			s.mu.Unlock()
			return evs
		}
		err := s.err
		s.mu.Unlock()
		if err != nil {
			t.Fatalf("%v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream: %d alerts written, want %d within %v", s.written.Load(), from+k, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// collect marks, in seen, the events of want among what tl has read since
// the counts *no and *nd, and moves the counts on.
func (tl *tail) collect(want, seen map[string]bool, no, nd *int) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, o := range tl.outs[*no:] {
		if want[o.id()] {
			seen[o.id()] = true
		}
	}
	for _, d := range tl.dls[*nd:] {
		if want[d.id()] {
			seen[d.id()] = true
		}
	}
	*no, *nd = len(tl.outs), len(tl.dls)
}

// awaitCovered is tail.waitCovered that also fails as soon as one of procs
// exits, with its log, instead of waiting out the timeout.
func awaitCovered(t testing.TB, tl *tail, timeout time.Duration, inputs []event, procs ...*proc) ([]output, []deadLetter) {
	t.Helper()
	want := make(map[string]bool, len(inputs))
	for _, ev := range inputs {
		want[ev.id()] = true
	}
	seen := make(map[string]bool, len(inputs))
	var no, nd int
	deadline := time.Now().Add(timeout)
	for {
		tl.collect(want, seen, &no, &nd)
		if len(seen) == len(want) {
			return tl.snapshot()
		}
		for _, p := range procs {
			p.running(fmt.Sprintf("with %d of %d events out", len(seen), len(want)))
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %d of %d input events came out (%d outputs, %d dead letters read)", timeout, len(seen), len(want), no, nd)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// highWatermarks returns, per partition of topic, the offset after its
// newest record.
func highWatermarks(t testing.TB, c *kafkatest.Cluster, topic string) map[int32]int64 {
	t.Helper()
	return c.HighWatermarks(t, topic)
}

// caughtUp reports whether the tail has read every record of e's output
// and dead-letter topics up to the given high watermarks.
func (tl *tail) caughtUp(out, dlq map[int32]int64) bool {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	outRead, dlqRead := map[int32]int64{}, map[int32]int64{}
	for _, o := range tl.outs {
		outRead[o.Partition] = max(outRead[o.Partition], o.Offset+1)
	}
	for _, d := range tl.dls {
		dlqRead[d.Partition] = max(dlqRead[d.Partition], d.Offset+1)
	}
	for p, hw := range out {
		if outRead[p] < hw {
			return false
		}
	}
	for p, hw := range dlq {
		if dlqRead[p] < hw {
			return false
		}
	}
	return true
}

// awaitOutcome waits until every input event has come out, or until the
// run has settled without it: the group committed past every input (so
// the connector will not look at them again) and the tail has read
// everything on the output and dead-letter topics. Either way it returns
// what was read, for the no-loss check to judge; a connector that
// committed what it never wrote fails that check at once instead of at
// the timeout. It fails the test as soon as one of procs exits, and after
// timeout.
func awaitOutcome(t testing.TB, e *env, tl *tail, timeout time.Duration, inputs []event, procs ...*proc) ([]output, []deadLetter) {
	t.Helper()
	want := make(map[string]bool, len(inputs))
	for _, ev := range inputs {
		want[ev.id()] = true
	}
	end := endOffsets(inputs)
	seen := make(map[string]bool, len(inputs))
	var no, nd int
	deadline := time.Now().Add(timeout)
	lastSettleCheck := time.Now()
	for {
		tl.collect(want, seen, &no, &nd)
		if len(seen) == len(want) {
			return tl.snapshot()
		}
		for _, p := range procs {
			p.running(fmt.Sprintf("with %d of %d events out", len(seen), len(want)))
		}
		if time.Since(lastSettleCheck) > time.Second {
			lastSettleCheck = time.Now()
			committed := e.cluster.Committed(t, e.group, e.in)
			settled := true
			for p, off := range end {
				if committed[p] < off {
					settled = false
				}
			}
			if settled && tl.caughtUp(highWatermarks(t, e.cluster, e.out), highWatermarks(t, e.cluster, e.dlq)) {
				t.Logf("settled with %d of %d input events out: everything is committed and read", len(seen), len(want))
				return tl.snapshot()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %d of %d input events came out (%d outputs, %d dead letters read)", timeout, len(seen), len(want), no, nd)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// privateRedis is a Redis of the drill's own, started by scripts/redis.sh
// in a temporary directory on a free port of 127.0.0.1: restarting it hits
// no test of another package that uses the Redis of
// ENRICHER_TEST_REDIS_URL at the same time.
type privateRedis struct {
	t   testing.TB
	env []string
	url string
}

// startPrivateRedis starts the server and stops it at cleanup. It needs
// what scripts/redis.sh needs: redis-server (which it installs with
// apt-get when missing).
func startPrivateRedis(t *testing.T) *privateRedis {
	t.Helper()
	port := freePort(t)
	r := &privateRedis{t: t, env: []string{"REDIS_DIR=" + t.TempDir(), "REDIS_PORT=" + strconv.Itoa(port)}}
	t.Cleanup(func() { runScript(t, "redis.sh", r.env, time.Minute, "stop") })
	out := runScript(t, "redis.sh", r.env, 2*time.Minute, "start")
	r.url = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "REDIS_URL="))
	if want := "redis://127.0.0.1:" + strconv.Itoa(port) + "/0"; r.url != want {
		t.Fatalf("scripts/redis.sh start printed %q, want REDIS_URL=%s", out, want)
	}
	return r
}

// restart stops the server and starts it again on the same port, empty
// (it keeps nothing on disk), and returns how long it was away.
func (r *privateRedis) restart() time.Duration {
	r.t.Helper()
	start := time.Now()
	runScript(r.t, "redis.sh", r.env, time.Minute, "stop")
	runScript(r.t, "redis.sh", r.env, 2*time.Minute, "start")
	return time.Since(start)
}

// runScript runs scripts/NAME with args and extra environment variables,
// bounded by timeout, and returns its stdout; it fails the test with the
// script's stderr if it fails.
func runScript(t testing.TB, name string, env []string, timeout time.Duration, args ...string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("finding the repository: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", name), args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second // a daemon started by the script may hold the pipes
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/%s %s: %v\n%s", name, strings.Join(args, " "), err, tailLines(stderr.String(), 40))
	}
	return string(out)
}
