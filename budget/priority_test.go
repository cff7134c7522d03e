package budget

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/defender-enricher/defender-enricher/clock"
)

func TestSeverityPriority(t *testing.T) {
	tests := []struct {
		in   string
		want Priority
	}{
		{"High", PriorityHigh},
		{"high", PriorityHigh},
		{"HIGH", PriorityHigh},
		{" High\t", PriorityHigh},
		{"Medium", PriorityMedium},
		{"mEdIuM", PriorityMedium},
		{"Low", PriorityLow},
		{"low", PriorityLow},
		{"Informational", PriorityInformational},
		{"informational", PriorityInformational},
		{"", PriorityInformational},
		{"UnSpecified", PriorityInformational},
		{"Unknown", PriorityInformational},
		{"Critical", PriorityInformational},
		{"Highest", PriorityInformational},
		{"Hi gh", PriorityInformational},
		{"3", PriorityInformational},
	}
	for _, tt := range tests {
		if got := SeverityPriority(tt.in); got != tt.want {
			t.Errorf("SeverityPriority(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestPriorityString(t *testing.T) {
	tests := []struct {
		p    Priority
		want string
	}{
		{PriorityHigh, "high"},
		{PriorityMedium, "medium"},
		{PriorityLow, "low"},
		{PriorityInformational, "informational"},
		{PriorityDeferred, "deferred"},
		{Priority(7), "Priority(7)"},
		{Priority(-3), "Priority(-3)"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("Priority(%d).String() = %q, want %q", int(tt.p), got, tt.want)
		}
	}
}

func TestPriorityFrom(t *testing.T) {
	bg := context.Background()
	if got := PriorityFrom(bg); got != PriorityInformational {
		t.Errorf("a context without a priority: %v, want informational", got)
	}
	var zero Priority
	if zero != PriorityInformational {
		t.Errorf("the zero Priority is %v, want informational", zero)
	}
	for _, p := range priorities {
		if got := PriorityFrom(WithPriority(bg, p)); got != p {
			t.Errorf("PriorityFrom(WithPriority(%v)) = %v", p, got)
		}
	}
	if got := PriorityFrom(WithPriority(WithPriority(bg, PriorityHigh), PriorityDeferred)); got != PriorityDeferred {
		t.Errorf("the inner priority: %v, want deferred", got)
	}
	ctx, cancel := context.WithTimeout(WithPriority(bg, PriorityHigh), time.Hour)
	defer cancel()
	if got := PriorityFrom(ctx); got != PriorityHigh {
		t.Errorf("a context derived from a high one: %v, want high", got)
	}
	for _, p := range []Priority{Priority(9), Priority(-5)} {
		if got := PriorityFrom(WithPriority(bg, p)); got != PriorityInformational {
			t.Errorf("PriorityFrom(WithPriority(%d)) = %v, want informational", int(p), got)
		}
	}
	for i := 1; i < len(priorities); i++ {
		if priorities[i-1] >= priorities[i] {
			t.Errorf("%v is not below %v", priorities[i-1], priorities[i])
		}
	}
}

// TestReserveRounding: the reserve is the fraction of each window's calls,
// rounded to the nearest call, and leaves at least one call below Medium.
func TestReserveRounding(t *testing.T) {
	tests := []struct {
		limits  string
		reserve float64
		want    string // the limits of a caller below Medium
	}{
		{"10/1s", 0.2, "8/1s"},
		{"100/1m,1500/1h", 0.2, "80/1m,1200/1h"},
		{"5/1s,20/10s", 0.2, "4/1s,16/10s"},
		{"10/1s", 0, "10/1s"},
		{"1/1s", 0.2, "1/1s"},
		{"1/1s", 0.9, "1/1s"},
		{"2/1s", 0.9, "1/1s"},
		{"10/1s", 0.9, "1/1s"},
		{"10/1s", 0.99, "1/1s"},
		{"5/1s", 0.1, "4/1s"},     // half a call rounds up
		{"4/1s", 0.1, "4/1s"},     // 0.4 rounds down
		{"3/1s", 0.2, "2/1s"},     // 0.6 rounds up
		{"100/1m", 0.29, "71/1m"}, // 0.29*100 is 28.999999999999996
	}
	for _, tt := range tests {
		ls, err := ParseLimits(tt.limits)
		if err != nil {
			t.Fatalf("ParseLimits(%q): %v", tt.limits, err)
		}
		w, err := New(ls, nil, WithReserve(tt.reserve))
		if err != nil {
			t.Fatalf("New(%v, reserve %v): %v", ls, tt.reserve, err)
		}
		if got := w.lower.String(); got != tt.want {
			t.Errorf("%v with a reserve of %v leaves %v below medium, want %v", ls, tt.reserve, got, tt.want)
		}
		if got := w.Limits().String(); got != ls.String() {
			t.Errorf("Limits() = %v, want %v", got, ls)
		}
		for _, p := range []Priority{PriorityHigh, PriorityMedium} {
			if got := w.limitsFor(p).String(); got != ls.String() {
				t.Errorf("%v is held to %v, want the whole %v", p, got, ls)
			}
		}
	}
}

func TestNewRejectsABadReserve(t *testing.T) {
	for _, r := range []float64{-0.01, 1, 1.5, math.NaN(), math.Inf(1), math.Inf(-1)} {
		if _, err := New(Limits{{10, time.Second}}, nil, WithReserve(r)); err == nil || !strings.Contains(err.Error(), "reserve") {
			t.Errorf("New with a reserve of %v: err = %v, want one naming the reserve", r, err)
		}
	}
}

// grantNow asks for a call of priority p and fails the test if it waits;
// the call ends at once, at the clock's current time.
func grantNow(t *testing.T, w *Window, p Priority, what string) {
	t.Helper()
	ch := acquireAsync(t, w, p)
	if len(ch) != 1 {
		t.Fatalf("%s: a %v caller waits", what, p)
	}
	(<-ch)()
}

// queueInOrder starts one caller per priority of ps, each once the one
// before it waits, on a budget with no call free, and returns the channel
// on which each reports its index once granted. Each call ends before it is
// reported, at the instant it was granted, so that on a 1/1s budget the
// next caller is due exactly one second after the last report.
func queueInOrder(t *testing.T, w *Window, ps []Priority) <-chan int {
	t.Helper()
	order := make(chan int, len(ps))
	for i, p := range ps {
		go func() {
			d, err := w.Acquire(WithPriority(context.Background(), p))
			if err == nil {
				d()
				order <- i
			}
		}()
		waitFor(t, fmt.Sprintf("caller %d (%v) to queue", i, p), func() bool { return w.Waiting() == i+1 })
	}
	return order
}

// TestWaitersAreServedByPriority: waiters go highest priority first, in
// arrival order within one priority, and deferred ones only when nobody
// else waits, whatever order they came in.
func TestWaitersAreServedByPriority(t *testing.T) {
	const (
		D = PriorityDeferred
		I = PriorityInformational
		L = PriorityLow
		M = PriorityMedium
		H = PriorityHigh
	)
	manyLow := make([]Priority, 20)
	for i := range manyLow {
		manyLow[i] = L
	}
	highAfterManyLow := []int{20}
	for i := range 20 {
		highAfterManyLow = append(highAfterManyLow, i)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	random := make([]Priority, 30)
	for i := range random {
		random[i] = priorities[rng.IntN(numPriorities)]
	}
	// The order of the spec, for the random case: highest priority first,
	// arrival order within one.
	randomWant := make([]int, len(random))
	for i := range randomWant {
		randomWant[i] = i
	}
	sort.SliceStable(randomWant, func(i, j int) bool { return random[randomWant[i]] > random[randomWant[j]] })

	tests := []struct {
		name string
		ps   []Priority
		want []int // indexes into ps, in the order served
	}{
		{"lowest first in", []Priority{D, I, L, M, H}, []int{4, 3, 2, 1, 0}},
		{"highest first in", []Priority{H, M, L, I, D}, []int{0, 1, 2, 3, 4}},
		{"first come first served within one", []Priority{L, L, L, L}, []int{0, 1, 2, 3}},
		{"mixed", []Priority{L, H, L, M, H, I, M}, []int{1, 4, 3, 6, 0, 2, 5}},
		{"high after many low", append(manyLow, H), highAfterManyLow},
		{"deferred first in goes last", []Priority{D, D, L, I}, []int{2, 3, 0, 1}},
		{"random", random, randomWant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewManual(time.Unix(0, 0))
			// A window of one call keeps no reserve: the order alone decides.
			w, err := New(Limits{{1, time.Second}}, clk, WithReserve(0.2))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			grantNow(t, w, PriorityInformational, "the first call")
			order := queueInOrder(t, w, tt.ps)
			for turn, want := range tt.want {
				clk.Advance(time.Second)
				if got := receive(t, fmt.Sprintf("a caller served at turn %d", turn), order); got != want {
					t.Fatalf("turn %d: caller %d (%v) served, want caller %d (%v)", turn, got, tt.ps[got], want, tt.ps[want])
				}
			}
		})
	}
}

// TestReserveKeepsCallsForHighAndMedium: with 10/1s and a 20% reserve, a
// flood of Low callers gets 8 calls a window, and High and Medium callers
// arriving later get the other 2 in the same window.
func TestReserveKeepsCallsForHighAndMedium(t *testing.T) {
	clk := clock.NewManual(time.Unix(0, 0))
	w, err := New(Limits{{10, time.Second}}, clk, WithReserve(0.2))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var lows []<-chan func()
	for range 30 {
		lows = append(lows, acquireAsync(t, w, PriorityLow))
	}
	for i, ch := range lows {
		if granted := len(ch) == 1; granted != (i < 8) {
			t.Fatalf("low caller %d: granted %v, want the first 8 granted", i, granted)
		}
	}
	if n := w.Waiting(); n != 22 {
		t.Fatalf("%d low callers wait, want 22", n)
	}
	for _, ch := range lows[:8] {
		(<-ch)()
	}
	grantNow(t, w, PriorityHigh, "a High caller after a flood of Low ones")
	grantNow(t, w, PriorityMedium, "a Medium caller after a flood of Low ones")
	wantWaitsAt(t, w, PriorityHigh, "an 11th call in a 10/1s window")

	// The next window: 8 more Low calls, 2 kept again.
	clk.Advance(time.Second)
	if n := w.Waiting(); n != 14 {
		t.Fatalf("%d low callers wait in the second window, want 14", n)
	}
	for i, ch := range lows[8:16] {
		receive(t, fmt.Sprintf("low caller %d in the second window", 8+i), ch)()
	}
	grantNow(t, w, PriorityHigh, "a High caller in the second window")
	grantNow(t, w, PriorityHigh, "a second High caller in the second window")
	wantWaitsAt(t, w, PriorityMedium, "an 11th call in the second window")
}

// TestHigherPriorityGoesPastOneHeldByTheReserve: a Medium caller arriving
// while a Low one waits for the reserve is granted at once, and the Low
// one goes at its own instant, when fewer than 8 calls count.
func TestHigherPriorityGoesPastOneHeldByTheReserve(t *testing.T) {
	clk := clock.NewManual(time.Unix(0, 0))
	w, err := New(Limits{{10, time.Second}}, clk, WithReserve(0.2))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	grantNow(t, w, PriorityHigh, "call 1 at 0s")
	grantNow(t, w, PriorityHigh, "call 2 at 0s")
	clk.Advance(100 * time.Millisecond)
	for i := range 6 {
		grantNow(t, w, PriorityLow, fmt.Sprintf("call %d at 100ms", 3+i))
	}
	clk.Advance(100 * time.Millisecond)
	low := acquireAsync(t, w, PriorityLow)
	if len(low) != 0 || w.Waiting() != 1 {
		t.Fatal("a 9th Low call was granted with 8 calls counting")
	}
	grantNow(t, w, PriorityMedium, "a Medium caller behind a Low one held by the reserve")
	wantWaitsAt(t, w, PriorityDeferred, "a deferred caller with 9 calls counting")
	grantNow(t, w, PriorityMedium, "a second Medium caller behind a Low one held by the reserve")
	wantWaitsAt(t, w, PriorityHigh, "an 11th call in a 10/1s window")

	// At 1s the calls of 0s age out: 8 count, not yet fewer than 8.
	clk.Advance(800 * time.Millisecond)
	if len(low) != 0 || w.Waiting() != 1 {
		t.Fatal("the Low call was granted with 8 calls counting")
	}
	grantNow(t, w, PriorityMedium, "a Medium caller at 1s")
	// At 1.1s the six calls of 100ms age out: 3 count.
	clk.Advance(99 * time.Millisecond)
	if len(low) != 0 || w.Waiting() != 1 {
		t.Fatal("the Low call was granted before the calls of 100ms aged out")
	}
	clk.Advance(time.Millisecond)
	if w.Waiting() != 0 {
		t.Fatal("the Low call was not granted once fewer than 8 calls counted")
	}
	receive(t, "the Low call", low)()
}

// TestReserveWaitsForARunningCallToEnd: a Low caller held by the reserve
// while calls run is rescheduled by the end of one, with its own limits.
func TestReserveWaitsForARunningCallToEnd(t *testing.T) {
	clk := clock.NewManual(time.Unix(0, 0))
	w, err := New(Limits{{10, time.Second}}, clk, WithReserve(0.2))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var running []func()
	for i := range 8 {
		running = append(running, receive(t, fmt.Sprintf("running call %d", i), acquireAsync(t, w, PriorityLow)))
	}
	low := acquireAsync(t, w, PriorityLow)
	clk.Advance(5 * time.Second) // the 8 calls are slow: still running
	if len(low) != 0 || w.Waiting() != 1 {
		t.Fatal("a 9th Low call was granted while 8 calls ran")
	}
	grantNow(t, w, PriorityMedium, "a Medium caller while 8 calls run") // counts until 6s
	running[0]()                                                        // ends at 5s: counts until 6s
	// 7 running and 2 ended count until 6s.
	clk.Advance(999 * time.Millisecond)
	if len(low) != 0 || w.Waiting() != 1 {
		t.Fatal("the Low call was granted with 9 calls counting")
	}
	clk.Advance(time.Millisecond)
	if w.Waiting() != 0 {
		t.Fatal("the Low call was not granted once the ended calls aged out")
	}
	receive(t, "the Low call", low)()
	for _, d := range running[1:] {
		d()
	}
}

// TestCancelledWaiterGivesUpItsPlaceToAnother: a waiter whose context ends
// leaves the queue; the one behind it goes at its own instant, and the
// order of the others holds.
func TestCancelledWaiterGivesUpItsPlaceToAnother(t *testing.T) {
	t.Run("the head, ahead of one held by the reserve", func(t *testing.T) {
		clk := clock.NewManual(time.Unix(0, 0))
		w, err := New(Limits{{10, time.Second}}, clk, WithReserve(0.2))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		grantNow(t, w, PriorityHigh, "call 1 at 0s")
		grantNow(t, w, PriorityHigh, "call 2 at 0s")
		clk.Advance(500 * time.Millisecond)
		for i := range 6 {
			grantNow(t, w, PriorityLow, fmt.Sprintf("call %d at 500ms", 3+i))
		}
		grantNow(t, w, PriorityMedium, "call 9 at 500ms")
		grantNow(t, w, PriorityMedium, "call 10 at 500ms")

		ctx, cancel := context.WithCancel(WithPriority(context.Background(), PriorityMedium))
		errc := make(chan error, 1)
		go func() {
			d, err := w.Acquire(ctx)
			if err == nil {
				d()
			}
			errc <- err
		}()
		waitFor(t, "the Medium caller to queue", func() bool { return w.Waiting() == 1 })
		low := acquireAsync(t, w, PriorityLow)
		cancel()
		if err := receive(t, "the cancelled Acquire to return", errc); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if n := w.Waiting(); n != 1 {
			t.Fatalf("Waiting = %d after the cancel, want 1", n)
		}
		// At 1s the calls of 0s age out: the Medium caller's slot is free,
		// but 8 still count, too many for the Low one.
		clk.Advance(500 * time.Millisecond)
		if len(low) != 0 || w.Waiting() != 1 {
			t.Fatal("the Low call took the slot the Medium caller gave up, in the reserve")
		}
		grantNow(t, w, PriorityHigh, "a High caller in the slot given up")
		clk.Advance(499 * time.Millisecond)
		if len(low) != 0 || w.Waiting() != 1 {
			t.Fatal("the Low call was granted before the calls of 500ms aged out")
		}
		clk.Advance(time.Millisecond)
		if w.Waiting() != 0 {
			t.Fatal("the Low call was not granted once fewer than 8 calls counted")
		}
		receive(t, "the Low call", low)()
	})
	t.Run("in the middle of one priority", func(t *testing.T) {
		clk := clock.NewManual(time.Unix(0, 0))
		w, err := New(Limits{{1, time.Second}}, clk)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		grantNow(t, w, PriorityLow, "the first call")
		order := queueInOrder(t, w, []Priority{PriorityLow})
		ctx, cancel := context.WithCancel(WithPriority(context.Background(), PriorityLow))
		errc := make(chan error, 1)
		go func() {
			d, err := w.Acquire(ctx)
			if err == nil {
				d()
			}
			errc <- err
		}()
		waitFor(t, "the second Low caller to queue", func() bool { return w.Waiting() == 2 })
		last := acquireAsync(t, w, PriorityLow)
		cancel()
		if err := receive(t, "the cancelled Acquire to return", errc); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		clk.Advance(time.Second)
		if got := receive(t, "the first Low caller", order); got != 0 {
			t.Fatalf("caller %d served first", got)
		}
		if len(last) != 0 {
			t.Fatal("the last Low caller went with the first")
		}
		clk.Advance(time.Second)
		receive(t, "the last Low caller, in the place given up", last)()
	})
}

// TestDeferredGoesAtOnceWhenNobodyWaits: a deferred caller is not held
// back when calls are free and nobody waits.
func TestDeferredGoesAtOnceWhenNobodyWaits(t *testing.T) {
	clk := clock.NewManual(time.Unix(0, 0))
	w, err := New(Limits{{10, time.Second}}, clk, WithReserve(0.2))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range 8 {
		grantNow(t, w, PriorityDeferred, fmt.Sprintf("deferred call %d", i))
	}
	wantWaitsAt(t, w, PriorityDeferred, "a 9th deferred call, in the reserve")
}

// metric returns the value of the gauge or counter name{priority=p}.
func metric(t *testing.T, reg *prometheus.Registry, name string, p Priority) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "priority" && l.GetValue() == p.String() {
					if g := m.GetGauge(); g != nil {
						return g.GetValue()
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{priority=%q}", name, p)
	return 0
}

func TestMetrics(t *testing.T) {
	clk := clock.NewManual(time.Unix(0, 0))
	reg := prometheus.NewRegistry()
	w, err := New(Limits{{1, time.Second}}, clk, WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	grantNow(t, w, PriorityHigh, "the first call")
	low := acquireAsync(t, w, PriorityLow)
	acquireAsync(t, w, PriorityLow)
	acquireAsync(t, w, PriorityDeferred)
	want := func(name string, values map[Priority]float64) {
		t.Helper()
		for _, p := range priorities {
			if got := metric(t, reg, name, p); got != values[p] {
				t.Errorf("%s{priority=%q} = %v, want %v", name, p, got, values[p])
			}
		}
	}
	want("enricher_budget_waiting", map[Priority]float64{PriorityLow: 2, PriorityDeferred: 1})
	want("enricher_budget_granted_total", map[Priority]float64{PriorityHigh: 1})

	clk.Advance(time.Second)
	receive(t, "the first Low call", low)()
	want("enricher_budget_waiting", map[Priority]float64{PriorityLow: 1, PriorityDeferred: 1})
	want("enricher_budget_granted_total", map[Priority]float64{PriorityHigh: 1, PriorityLow: 1})

	if _, err := New(Limits{{1, time.Second}}, clk, WithRegisterer(reg)); err == nil {
		t.Error("a second Window registered its metrics with the same registry")
	}
}
