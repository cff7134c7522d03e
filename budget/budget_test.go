package budget

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/defender-enricher/defender-enricher/clock"
)

func TestParseLimits(t *testing.T) {
	tests := []struct {
		in      string
		want    Limits
		wantErr bool
	}{
		{in: "100/1m,1500/1h", want: Limits{{100, time.Minute}, {1500, time.Hour}}},
		{in: " 5/1s , 20/10s ", want: Limits{{5, time.Second}, {20, 10 * time.Second}}},
		{in: "100/m", want: Limits{{100, time.Minute}}},
		{in: "3/h", want: Limits{{3, time.Hour}}},
		{in: "", wantErr: true},
		{in: "100", wantErr: true},
		{in: "0/1m", wantErr: true},
		{in: "-1/1m", wantErr: true},
		{in: "x/1m", wantErr: true},
		{in: "100/0s", wantErr: true},
		{in: "100/-1m", wantErr: true},
		{in: "100/fortnight", wantErr: true},
		{in: "100/1m,", wantErr: true},
		{in: "1000000/1h", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseLimits(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseLimits(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if tt.wantErr {
			continue
		}
		if got.String() != tt.want.String() {
			t.Errorf("ParseLimits(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if got, _ := ParseLimits(DefaultLimits); got.String() != DefaultLimits {
		t.Errorf("DefaultLimits round trip = %q", got)
	}
}

type span struct {
	start, end time.Time
	seq        int      // grant order: calls granted at one instant differ only by it
	prio       Priority // of the caller
}

// checkSpans proves the guarantee as a server sees it: whenever a server
// counts each call, at a moment of its choosing between the call's start and
// end, no interval of length Per holds more than Calls of them. Taking the
// latest-starting call j of any such group, every other call of the group
// must have ended after start_j - Per; so it is enough that, for every j,
// fewer than Calls other calls started no later than j and ended after
// start_j - Per.
func checkSpans(t *testing.T, spans []span, limits Limits) (busiest []int) {
	t.Helper()
	sort.Slice(spans, func(i, j int) bool { return spans[i].start.Before(spans[j].start) })
	for _, l := range limits {
		worst := 0
		for j := range spans {
			n := 1
			for i := range spans {
				if i != j && !spans[i].start.After(spans[j].start) && spans[i].end.After(spans[j].start.Add(-l.Per)) {
					n++
				}
			}
			worst = max(worst, n)
			if n > l.Calls {
				t.Fatalf("window %v: %d calls could be counted together around %v", l, n, spans[j].start)
			}
		}
		t.Logf("window %v: at most %d calls counted together", l, worst)
		busiest = append(busiest, worst)
	}
	return busiest
}

// checkReserve proves the reserve: a call of a priority below PriorityMedium
// started only while fewer than the lower limit's Calls calls, granted
// before it, still counted in the window (running, or ended less than Per
// before it started). It returns, per window, the most calls counting when
// such a call started, itself included.
func checkReserve(t *testing.T, spans []span, lower Limits) (busiest []int) {
	t.Helper()
	for _, l := range lower {
		worst := 0
		for _, s := range spans {
			if s.prio.mayUseReserve() {
				continue
			}
			n := 1
			for _, o := range spans {
				if o.seq < s.seq && o.end.After(s.start.Add(-l.Per)) {
					n++
				}
			}
			worst = max(worst, n)
			if n > l.Calls {
				t.Fatalf("window %v less its reserve: a %v call started with %d calls counting, itself included, at %v", l, s.prio, n, s.start)
			}
		}
		t.Logf("window %v less its reserve: at most %d calls counting when a call below medium started", l, worst)
		busiest = append(busiest, worst)
	}
	return busiest
}

// TestWindowNeverExceeds drives the budget on a manual clock with callers
// of random priority and calls of random length, and checks the guarantee
// over every interval, and the reserve for the calls below PriorityMedium.
// Four callers below PriorityMedium always wait (a flood of Low,
// Informational and deferred lookups); High and Medium callers arrive at
// random instants, about a third as many as the budget allows. It drives
// the budget's own admission, queue and timers (admitLocked, the scheduler
// and the clock's timers) without goroutines, moving the clock to the
// earliest of the instant the head of the queue may go, the next arrival
// and the next end of a call, so that it is exact and fast; the blocking
// Acquire around it is tested below.
func TestWindowNeverExceeds(t *testing.T) {
	for _, tc := range []struct {
		limits  Limits
		reserve float64
	}{
		{Limits{{5, time.Second}, {20, 10 * time.Second}}, 0},
		{Limits{{5, time.Second}, {20, 10 * time.Second}}, 0.2},
		{Limits{{100, time.Minute}, {1500, time.Hour}}, 0.2},
		{Limits{{1, 100 * time.Millisecond}}, 0.5},
	} {
		t.Run(fmt.Sprintf("%v reserve %v", tc.limits, tc.reserve), func(t *testing.T) {
			clk := clock.NewManual(time.Unix(1_700_000_000, 0))
			w, err := New(tc.limits, clk, WithReserve(tc.reserve))
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			// High and Medium callers arrive every 0 to 2*gap, about a
			// third of the tightest window's rate.
			gap := time.Duration(math.MaxInt64)
			for _, l := range tc.limits {
				gap = min(gap, 3*l.Per/time.Duration(l.Calls))
			}
			type running struct {
				span
				done func()
			}
			var (
				open     []running
				spans    []span
				queued   []*waiter // highest priority first, then in arrival order
				arrived  int
				nextHigh = clk.Now()
			)
			const total, flood = 2500, 4
			start := func(c *call, p Priority) {
				// Each call lasts 0 to 2 s, as slow answers do.
				end := c.at.Add(time.Duration(rng.IntN(2000)) * time.Millisecond)
				open = append(open, running{span{start: c.at, end: end, seq: len(spans) + len(open), prio: p}, w.doneFunc(c)})
			}
			// collect starts the calls granted to queued callers, in the
			// order the budget grants them: priority first, then arrival.
			collect := func() {
				left := queued[:0]
				for _, wt := range queued {
					select {
					case c := <-wt.ready:
						start(c, wt.prio)
					default:
						left = append(left, wt)
					}
				}
				queued = left
			}
			arrive := func(p Priority) {
				arrived++
				w.mu.Lock()
				c, wt := w.admitLocked(p)
				w.mu.Unlock()
				if c != nil {
					start(c, p)
				} else {
					queued = append(queued, wt)
					sort.SliceStable(queued, func(i, j int) bool { return queued[i].prio > queued[j].prio })
				}
				collect()
			}
			lowQueued := func() (n int) {
				for _, wt := range queued {
					if !wt.prio.mayUseReserve() {
						n++
					}
				}
				return n
			}
			for len(spans) < total {
				if arrived < total && lowQueued() < flood {
					arrive([]Priority{PriorityDeferred, PriorityInformational, PriorityLow}[rng.IntN(3)])
					continue
				}
				if arrived < total && !clk.Now().Before(nextHigh) {
					arrive([]Priority{PriorityMedium, PriorityHigh}[rng.IntN(2)])
					nextHigh = nextHigh.Add(time.Duration(rng.Int64N(int64(2 * gap))))
					continue
				}
				// The earliest of: the head may go, a caller arrives, a
				// call ends (the head first, at one instant).
				sort.Slice(open, func(i, j int) bool { return open[i].end.Before(open[j].end) })
				var target time.Time
				ending := false
				if len(queued) > 0 {
					next, ok := nextInstant(w, queued[0].prio)
					if ok && !next.After(clk.Now()) {
						t.Fatalf("a %v caller may go at %v but waits", queued[0].prio, next)
					}
					if ok {
						target = next
					}
				}
				if arrived < total && (target.IsZero() || nextHigh.Before(target)) {
					target = nextHigh
				}
				if len(open) > 0 && (target.IsZero() || open[0].end.Before(target)) {
					target, ending = maxTime(clk.Now(), open[0].end), true
				}
				if target.IsZero() {
					t.Fatalf("%d callers wait with no call running, no arrival and no instant to go", len(queued))
				}
				clk.Set(target) // the budget's timer grants the head when it is due
				if ending {
					open[0].done()
					spans = append(spans, open[0].span)
					open = open[1:]
				}
				collect()
			}
			if w.Waiting() != 0 || len(queued) != 0 {
				t.Fatalf("%d callers still wait (%d seen)", w.Waiting(), len(queued))
			}
			busiest := checkSpans(t, spans, tc.limits)
			lowest := checkReserve(t, spans, w.lower)
			// Liveness: the budget was used, not just respected, by the
			// callers that may spend the reserve and by those that may not.
			for i, l := range tc.limits {
				if busiest[i] != l.Calls {
					t.Errorf("window %v: at most %d calls together, want the limit reached", l, busiest[i])
				}
				if lowest[i] != w.lower[i].Calls {
					t.Errorf("window %v: at most %d calls counting when a call below medium started, want %d", l, lowest[i], w.lower[i].Calls)
				}
			}
			t.Logf("%d calls in %v", len(spans), spans[len(spans)-1].start.Sub(spans[0].start))
		})
	}
}

func nextInstant(w *Window, p Priority) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nextLocked(w.clock.Now(), w.limitsFor(p))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// waitFor polls cond until it holds. The deadline only guards against a
// hang: a loaded machine must not trip it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// receive returns the next value of ch, failing the test only if none comes
// before a deadline that guards against a hang.
func receive[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(60 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// acquireAsync calls Acquire in a goroutine and waits until the call is
// either granted or queued. A manual clock moves only when the test moves
// it, and the budget grants queued waiters inside the Advance that frees
// them, so a waiter still queued once Advance returns was not granted.
func acquireAsync(t *testing.T, w *Window, p Priority) (granted <-chan func()) {
	t.Helper()
	before := w.Waiting()
	ch := make(chan func(), 1)
	go func() {
		d, err := w.Acquire(WithPriority(context.Background(), p))
		if err == nil {
			ch <- d
		}
	}()
	waitFor(t, "Acquire to be granted or queued", func() bool { return len(ch) == 1 || w.Waiting() == before+1 })
	return ch
}

// wantWaits checks that an Acquire made now is not granted at the clock's
// current time: it is queued, and it gives up when its caller does.
func wantWaits(t *testing.T, w *Window, what string) {
	t.Helper()
	wantWaitsAt(t, w, PriorityInformational, what)
}

// wantWaitsAt is wantWaits for a caller of priority p.
func wantWaitsAt(t *testing.T, w *Window, p Priority, what string) {
	t.Helper()
	ctx, cancel := context.WithCancel(WithPriority(context.Background(), p))
	defer cancel()
	before := w.Waiting()
	errc := make(chan error, 1)
	go func() {
		d, err := w.Acquire(ctx)
		if err == nil {
			d()
		}
		errc <- err
	}()
	waitFor(t, "Acquire to be granted or queued", func() bool { return len(errc) == 1 || w.Waiting() == before+1 })
	cancel()
	if err := receive(t, "Acquire to return", errc); !errors.Is(err, context.Canceled) {
		t.Fatalf("%s: err = %v, want it to wait", what, err)
	}
}

func TestWindowFillsItsLimit(t *testing.T) {
	clk := clock.NewManual(time.Unix(0, 0))
	w, _ := New(Limits{{100, time.Minute}, {1500, time.Hour}}, clk)
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		done, err := w.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		done()
	}
	// The 101st call in the same instant must wait a full minute.
	wantWaits(t, w, "101st call in the first minute")
	clk.Advance(time.Minute - time.Millisecond)
	wantWaits(t, w, "a call 1ms before the window freed")
	clk.Advance(time.Millisecond)
	done, err := w.Acquire(ctx)
	if err != nil {
		t.Fatalf("call after the window freed: %v", err)
	}
	done()
}

func TestRunningCallHoldsItsSlot(t *testing.T) {
	clk := clock.NewManual(time.Unix(0, 0))
	w, _ := New(Limits{{1, time.Second}}, clk)
	done, _ := w.Acquire(context.Background())
	clk.Advance(5 * time.Second) // the call is slow: still running
	wantWaits(t, w, "a second call while the first one, in a 1/1s window, was still running")
	done() // ends at t=5s: the next call may start at t=6s
	got := acquireAsync(t, w, PriorityInformational)
	clk.Advance(999 * time.Millisecond)
	if len(got) != 0 || w.Waiting() != 1 {
		t.Fatal("granted a call less than a window after the previous one ended")
	}
	clk.Advance(time.Millisecond)
	if w.Waiting() != 0 {
		t.Fatal("no call a full window after the previous one ended")
	}
	receive(t, "the granted call", got)()
}

func TestPauseUntilHoldsEveryCall(t *testing.T) {
	clk := clock.NewManual(time.Unix(0, 0))
	w, _ := New(Limits{{100, time.Minute}}, clk)
	w.PauseUntil(clk.Now().Add(2 * time.Second))
	w.PauseUntil(clk.Now().Add(time.Second)) // a shorter pause does not shorten it
	var got []<-chan func()
	for i := 0; i < 3; i++ {
		got = append(got, acquireAsync(t, w, PriorityInformational))
	}
	clk.Advance(1999 * time.Millisecond)
	for _, ch := range got {
		if len(ch) != 0 {
			t.Fatal("a call started inside the pause")
		}
	}
	if n := w.Waiting(); n != 3 {
		t.Fatalf("%d calls wait inside the pause, want 3", n)
	}
	clk.Advance(time.Millisecond)
	if n := w.Waiting(); n != 0 {
		t.Fatalf("%d calls did not start when the pause ended", n)
	}
	for i, ch := range got {
		receive(t, fmt.Sprintf("call %d to start when the pause ended", i), ch)()
	}
	if !w.PausedUntil().IsZero() {
		t.Errorf("PausedUntil = %v after the pause", w.PausedUntil())
	}
}

func TestCancelledWaiterGivesUpItsPlace(t *testing.T) {
	clk := clock.NewManual(time.Unix(0, 0))
	w, _ := New(Limits{{1, time.Second}}, clk)
	d, _ := w.Acquire(context.Background())
	d()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := w.Acquire(ctx); errc <- err }()
	waitFor(t, "the waiter to queue", func() bool { return w.Waiting() == 1 })
	cancel()
	if err := receive(t, "the cancelled Acquire to return", errc); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if w.Waiting() != 0 {
		t.Fatalf("Waiting = %d after cancel", w.Waiting())
	}
	clk.Advance(time.Second)
	// The slot the cancelled waiter would have had is still free.
	d2, err := w.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	d2()
}

func TestWaitersAreServedInOrder(t *testing.T) {
	clk := clock.NewManual(time.Unix(0, 0))
	w, _ := New(Limits{{1, time.Second}}, clk)
	d, _ := w.Acquire(context.Background())
	d()
	order := make(chan int, 5)
	for i := 0; i < 5; i++ {
		go func() {
			d, err := w.Acquire(context.Background())
			if err == nil {
				// The call ends before it is reported: the test advances
				// the clock only once it has, so that each call ends at
				// the instant it was granted and the next waiter is due
				// exactly one window later.
				d()
				order <- i
			}
		}()
		waitFor(t, fmt.Sprintf("waiter %d to queue", i), func() bool { return w.Waiting() == i+1 })
	}
	for i := 0; i < 5; i++ {
		clk.Advance(time.Second)
		if got := receive(t, fmt.Sprintf("a waiter served at turn %d", i), order); got != i {
			t.Fatalf("waiter %d served at turn %d", got, i)
		}
	}
}

func TestClose(t *testing.T) {
	w, _ := New(Limits{{1, time.Hour}}, nil)
	d, _ := w.Acquire(context.Background())
	d()
	errc := make(chan error, 1)
	go func() { _, err := w.Acquire(context.Background()); errc <- err }()
	waitFor(t, "the waiter to queue", func() bool { return w.Waiting() == 1 })
	w.Close()
	if err := receive(t, "the waiter to be woken", errc); !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
	if _, err := w.Acquire(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: err = %v", err)
	}
}

// BenchmarkAcquireFree is one Acquire and its done when a call is always
// free, from a context without a priority, on a budget without a reserve.
func BenchmarkAcquireFree(b *testing.B) {
	w, _ := New(Limits{{1 << 30 >> 14, time.Nanosecond * 1000}}, nil)
	ctx := context.Background()
	for b.Loop() {
		d, err := w.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		d()
	}
}

// BenchmarkAcquireFreeParallel is BenchmarkAcquireFree from every core at
// once, contending for the budget's lock.
func BenchmarkAcquireFreeParallel(b *testing.B) {
	w, _ := New(Limits{{1 << 30 >> 14, time.Nanosecond * 1000}}, nil)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			d, err := w.Acquire(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			d()
		}
	})
}

// BenchmarkAcquireFreeWithPriority is BenchmarkAcquireFree as the connector
// runs it: a Low priority in the context, the 20% reserve, the metrics.
func BenchmarkAcquireFreeWithPriority(b *testing.B) {
	w, _ := New(Limits{{1 << 30 >> 14, time.Nanosecond * 1000}}, nil, WithReserve(0.2), WithRegisterer(prometheus.NewRegistry()))
	ctx := WithPriority(context.Background(), PriorityLow)
	for b.Loop() {
		d, err := w.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		d()
	}
}
