package budget

import (
	"context"
	"errors"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

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

type span struct{ start, end time.Time }

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

// TestWindowNeverExceeds drives the budget on a manual clock with calls of
// random length, always asking for the next call as soon as one may start,
// and checks the guarantee over every interval. It drives the budget's own
// decision (grantLocked, nextLocked) step by step, so that it is exact and
// fast; the blocking Acquire around it is tested below.
func TestWindowNeverExceeds(t *testing.T) {
	for _, limits := range []Limits{
		{{5, time.Second}, {20, 10 * time.Second}},
		{{100, time.Minute}, {1500, time.Hour}},
		{{1, 100 * time.Millisecond}},
	} {
		t.Run(limits.String(), func(t *testing.T) {
			clk := clock.NewManual(time.Unix(1_700_000_000, 0))
			w, err := New(limits, clk)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			type running struct {
				span
				done func()
			}
			var open []running
			var spans []span
			const total = 2500
			for len(spans) < total {
				if len(spans)+len(open) < total {
					if done := tryAcquire(w); done != nil {
						// Each call lasts 0 to 2 s, as slow answers do.
						end := clk.Now().Add(time.Duration(rng.IntN(2000)) * time.Millisecond)
						open = append(open, running{span{start: clk.Now(), end: end}, done})
						continue
					}
				}
				sort.Slice(open, func(i, j int) bool { return open[i].end.Before(open[j].end) })
				next, ok := nextInstant(w)
				if ok && len(spans)+len(open) < total && (len(open) == 0 || !next.After(open[0].end)) {
					clk.Set(next)
					continue
				}
				clk.Set(maxTime(clk.Now(), open[0].end))
				open[0].done()
				spans = append(spans, open[0].span)
				open = open[1:]
			}
			busiest := checkSpans(t, spans, limits)
			// Liveness: the budget was used, not just respected.
			for i, l := range limits {
				if busiest[i] != l.Calls {
					t.Errorf("window %v: at most %d calls together, want the limit reached", l, busiest[i])
				}
			}
			t.Logf("%d calls in %v", len(spans), spans[len(spans)-1].start.Sub(spans[0].start))
		})
	}
}

func tryAcquire(w *Window) func() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c := w.grantLocked(w.clock.Now()); c != nil {
		return w.doneFunc(c)
	}
	return nil
}

func nextInstant(w *Window) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nextLocked(w.clock.Now())
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// waitBriefly gives a just-granted Acquire time to return; a manual clock
// does not move by itself, so a miss means "not granted now".
func waitBriefly(ch chan func()) func() {
	select {
	case d := <-ch:
		return d
	case <-time.After(20 * time.Millisecond):
		return nil
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
	ctx2, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := w.Acquire(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("101st call in the first minute: err = %v, want it to wait", err)
	}
	clk.Advance(time.Minute - time.Millisecond)
	ctx3, cancel3 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel3()
	if _, err := w.Acquire(ctx3); err == nil {
		t.Fatal("a call was granted 1ms before the window freed")
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := w.Acquire(ctx); err == nil {
		t.Fatal("granted a second call while the first one, in a 1/1s window, was still running")
	}
	done() // ends at t=5s: the next call may start at t=6s
	got := make(chan func(), 1)
	go func() {
		d, err := w.Acquire(context.Background())
		if err == nil {
			got <- d
		}
	}()
	if waitBriefly(got) != nil {
		t.Fatal("granted a call less than a window after the previous one ended")
	}
	clk.Advance(time.Second)
	if d := waitBriefly(got); d == nil {
		t.Fatal("no call a full window after the previous one ended")
	} else {
		d()
	}
}

func TestPauseUntilHoldsEveryCall(t *testing.T) {
	clk := clock.NewManual(time.Unix(0, 0))
	w, _ := New(Limits{{100, time.Minute}}, clk)
	w.PauseUntil(clk.Now().Add(2 * time.Second))
	w.PauseUntil(clk.Now().Add(time.Second)) // a shorter pause does not shorten it
	got := make(chan func(), 3)
	for i := 0; i < 3; i++ {
		go func() {
			d, err := w.Acquire(context.Background())
			if err == nil {
				got <- d
			}
		}()
	}
	clk.Advance(1999 * time.Millisecond)
	if waitBriefly(got) != nil {
		t.Fatal("a call started inside the pause")
	}
	clk.Advance(time.Millisecond)
	for i := 0; i < 3; i++ {
		d := waitBriefly(got)
		if d == nil {
			t.Fatalf("call %d did not start when the pause ended", i)
		}
		d()
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
	for w.Waiting() != 1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
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
				order <- i
				d()
			}
		}()
		for w.Waiting() != i+1 {
			time.Sleep(time.Millisecond)
		}
	}
	for i := 0; i < 5; i++ {
		clk.Advance(time.Second)
		select {
		case got := <-order:
			if got != i {
				t.Fatalf("waiter %d served at turn %d", got, i)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("no waiter served at turn %d", i)
		}
	}
}

func TestClose(t *testing.T) {
	w, _ := New(Limits{{1, time.Hour}}, nil)
	d, _ := w.Acquire(context.Background())
	d()
	errc := make(chan error, 1)
	go func() { _, err := w.Acquire(context.Background()); errc <- err }()
	for w.Waiting() != 1 {
		time.Sleep(time.Millisecond)
	}
	w.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
	if _, err := w.Acquire(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: err = %v", err)
	}
}

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
