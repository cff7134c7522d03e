package budget

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/defender-enricher/defender-enricher/clock"
	"github.com/defender-enricher/defender-enricher/redistest"
)

// windowMetrics returns the samples of the gauge family name by their
// window label; a family with no sample returns an empty map.
func windowMetrics(t *testing.T, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		if mf.GetType().String() != "GAUGE" {
			t.Fatalf("%s is a %v, want a gauge", name, mf.GetType())
		}
		for _, m := range mf.GetMetric() {
			window := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "window" {
					window = l.GetValue()
				}
			}
			if _, dup := got[window]; dup {
				t.Fatalf("%s has two samples for window %q", name, window)
			}
			got[window] = m.GetGauge().GetValue()
		}
	}
	return got
}

func wantWindows(t *testing.T, reg *prometheus.Registry, name string, want map[string]float64, what string) {
	t.Helper()
	if got := windowMetrics(t, reg, name); !maps.Equal(got, want) {
		t.Fatalf("%s: %s = %v, want %v", what, name, got, want)
	}
}

// TestWindowMetricsCountEachWindow: enricher_budget_window_calls counts,
// at each scrape, the calls running and those that ended less than the
// window's length ago, per window; enricher_budget_window_limit is each
// window's limit, labelled with the length as the limits string writes it.
func TestWindowMetricsCountEachWindow(t *testing.T) {
	type step struct {
		advance time.Duration      // first the clock moves
		end     bool               // then the calls left running end
		grant   int                // then this many calls are granted and end at once
		run     int                // then this many are granted and left running
		want    map[string]float64 // enricher_budget_window_calls after the step
	}
	tests := []struct {
		name      string
		limits    string
		wantLimit map[string]float64
		steps     []step
	}{
		{
			name: "the default limits", limits: DefaultLimits,
			wantLimit: map[string]float64{"1m": 100, "1h": 1500},
			steps: []step{
				{want: map[string]float64{"1m": 0, "1h": 0}},
				{grant: 3, want: map[string]float64{"1m": 3, "1h": 3}},
				{advance: 30 * time.Second, grant: 2, want: map[string]float64{"1m": 5, "1h": 5}},
				// The first three ended a minute ago: out of the minute, in the hour.
				{advance: 30 * time.Second, want: map[string]float64{"1m": 2, "1h": 5}},
				{advance: 30 * time.Second, want: map[string]float64{"1m": 0, "1h": 5}},
				{advance: time.Hour, want: map[string]float64{"1m": 0, "1h": 0}},
			},
		},
		{
			name: "a running call counts in every window until a window after its end", limits: "2/1s,10/1m",
			wantLimit: map[string]float64{"1s": 2, "1m": 10},
			steps: []step{
				{run: 1, grant: 1, want: map[string]float64{"1s": 2, "1m": 2}},
				{advance: 2 * time.Minute, want: map[string]float64{"1s": 1, "1m": 1}},
				{end: true, want: map[string]float64{"1s": 1, "1m": 1}},
				{advance: time.Second, want: map[string]float64{"1s": 0, "1m": 1}},
				{advance: time.Minute, want: map[string]float64{"1s": 0, "1m": 0}},
			},
		},
		{
			name: "bare units and a length of no whole minutes", limits: "5/s,7/90s",
			wantLimit: map[string]float64{"1s": 5, "1m30s": 7},
			steps: []step{
				{grant: 4, want: map[string]float64{"1s": 4, "1m30s": 4}},
				{advance: time.Minute, grant: 1, want: map[string]float64{"1s": 1, "1m30s": 5}},
				{advance: 30 * time.Second, want: map[string]float64{"1s": 0, "1m30s": 1}},
			},
		},
		{
			name: "two windows of one length are one series with the tighter limit", limits: "5/1m,3/60s,10/1h",
			wantLimit: map[string]float64{"1m": 3, "1h": 10},
			steps: []step{
				{grant: 3, want: map[string]float64{"1m": 3, "1h": 3}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limits, err := ParseLimits(tt.limits)
			if err != nil {
				t.Fatal(err)
			}
			clk := clock.NewManual(time.Unix(1_800_000_000, 0))
			reg := prometheus.NewRegistry()
			w, err := New(limits, clk, WithRegisterer(reg))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			var running []func()
			for i, s := range tt.steps {
				what := fmt.Sprintf("after step %d", i)
				clk.Advance(s.advance)
				if s.end {
					for _, done := range running {
						done()
					}
					running = nil
				}
				for j := range s.grant {
					grantNow(t, w, PriorityHigh, fmt.Sprintf("%s: call %d", what, j))
				}
				for range s.run {
					ch := acquireAsync(t, w, PriorityHigh)
					if len(ch) != 1 {
						t.Fatalf("%s: a call to leave running waits", what)
					}
					running = append(running, <-ch)
				}
				wantWindows(t, reg, "enricher_budget_window_calls", s.want, what)
				wantWindows(t, reg, "enricher_budget_window_limit", tt.wantLimit, what)
			}
			for _, done := range running {
				done()
			}
		})
	}
}

// TestWindowMetricsAtTheLimit: a window whose calls reached its limit
// reports calls equal to the limit while the next caller waits; when the
// oldest call ages out the waiter takes its place, so the window stays at
// its limit, and a second later the next oldest has aged out too.
func TestWindowMetricsAtTheLimit(t *testing.T) {
	clk := clock.NewManual(time.Unix(1_800_000_000, 0))
	reg := prometheus.NewRegistry()
	w, err := New(Limits{{3, time.Minute}}, clk, WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range 3 {
		grantNow(t, w, PriorityHigh, fmt.Sprintf("call %d", i))
		clk.Advance(time.Second)
	}
	waiter := acquireAsync(t, w, PriorityHigh)
	if len(waiter) != 0 {
		t.Fatal("a fourth call in the minute was granted")
	}
	wantWindows(t, reg, "enricher_budget_window_calls", map[string]float64{"1m": 3}, "the window full, a caller waiting")
	wantWindows(t, reg, "enricher_budget_window_limit", map[string]float64{"1m": 3}, "the window full")
	if got := metric(t, reg, "enricher_budget_waiting", PriorityHigh); got != 1 {
		t.Fatalf("enricher_budget_waiting{priority=high} = %v, want 1", got)
	}
	// The first call ended at the start: a minute later it ages out and the
	// waiter takes its place, inside the Advance.
	clk.Advance(time.Minute - 3*time.Second)
	done := receive(t, "the waiter's call", waiter)
	wantWindows(t, reg, "enricher_budget_window_calls", map[string]float64{"1m": 3}, "the waiter granted")
	done()
	clk.Advance(time.Second)
	wantWindows(t, reg, "enricher_budget_window_calls", map[string]float64{"1m": 2}, "a second later")
}

// TestRedisWindowMetricsAreTheFleets: every replica of a Redis budget
// reports the calls the fleet's windows count in Redis, its running calls
// and the other replicas' included, against the windows' limits.
func TestRedisWindowMetricsAreTheFleets(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		// Windows long enough that nothing ages out while the test runs on
		// Redis's own clock.
		limits := Limits{{10, time.Hour}, {100, 24 * time.Hour}}
		regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
		a := newShared(t, s, limits, RedisOptions{Registerer: regA})
		b := newShared(t, s, limits, RedisOptions{Registerer: regB})
		wantLimit := map[string]float64{"1h": 10, "24h": 100}
		for name, reg := range map[string]*prometheus.Registry{"a": regA, "b": regB} {
			wantWindows(t, reg, "enricher_budget_window_calls", map[string]float64{"1h": 0, "24h": 0}, "replica "+name+" before any call")
			wantWindows(t, reg, "enricher_budget_window_limit", wantLimit, "replica "+name)
		}
		endCall(t, a, grantNowRedis(t, a, PriorityHigh).id)
		endCall(t, a, grantNowRedis(t, a, PriorityHigh).id)
		running := grantNowRedis(t, b, PriorityLow)
		for name, reg := range map[string]*prometheus.Registry{"a": regA, "b": regB} {
			wantWindows(t, reg, "enricher_budget_window_calls", map[string]float64{"1h": 3, "24h": 3}, "replica "+name+" after 3 calls of the fleet")
		}
		endCall(t, b, running.id)
		b.forget(grantNowRedis(t, b, PriorityHigh).id) // taken back: counts no more
		wantWindows(t, regA, "enricher_budget_window_calls", map[string]float64{"1h": 3, "24h": 3}, "after a call taken back")
	})
}

// TestRedisWindowMetricsCountALostState: on a Redis that lost its state,
// the calls reported are those the budget counts: the calls written back
// and the phantom calls that fill each window at the reset, until they
// age out.
func TestRedisWindowMetricsCountALostState(t *testing.T) {
	s := redistest.NewMini(t)
	m := s.Mini()
	t0 := time.Unix(1_800_000_000, 0)
	m.SetTime(t0)
	const per, lease = 10 * time.Second, 5 * time.Second
	limits := Limits{{3, per}}
	reg := prometheus.NewRegistry()
	alive := newShared(t, s, limits, RedisOptions{Lease: lease, Registerer: reg})
	mine := endCall(t, alive, grantNowRedis(t, alive, PriorityHigh).id)
	wantWindows(t, reg, "enricher_budget_window_calls", map[string]float64{"10s": 1}, "before the loss")
	m.SetTime(t0.Add(time.Second))
	s.Lose(t)
	m.SetTime(t0.Add(time.Second))
	reset := t0.Add(time.Second)
	refused(t, alive, PriorityHigh) // seeds: one call written back, two phantom ones
	wantWindows(t, reg, "enricher_budget_window_calls", map[string]float64{"10s": 3}, "after the loss")
	m.SetTime(mine.Add(per).Add(time.Microsecond))
	wantWindows(t, reg, "enricher_budget_window_calls", map[string]float64{"10s": 2}, "once the call written back aged out")
	m.SetTime(reset.Add(lease + per).Add(time.Microsecond))
	wantWindows(t, reg, "enricher_budget_window_calls", map[string]float64{"10s": 0}, "once the phantom calls aged out")
}

// TestRedisWindowMetricsWithRedisAway: a scrape whose read of Redis fails
// leaves the calls out, keeps the limits, and says so in the store's
// metrics; the next scrape with Redis back reports the calls again.
func TestRedisWindowMetricsWithRedisAway(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		proxy := s.Proxy(t)
		reg := prometheus.NewRegistry()
		r := newSharedOn(t, proxy.Client(t, s), s.Prefix(), Limits{{5, time.Hour}},
			RedisOptions{Timeout: 300 * time.Millisecond, Registerer: reg})
		endCall(t, r, grantNowRedis(t, r, PriorityHigh).id)
		wantWindows(t, reg, "enricher_budget_window_calls", map[string]float64{"1h": 1}, "with Redis up")
		for _, cut := range []struct {
			name string
			do   func()
		}{{"down", proxy.Down}, {"stalled", proxy.Stall}} {
			cut.do()
			before := metricValue(t, reg, "enricher_budget_store_errors_total")
			wantWindows(t, reg, "enricher_budget_window_calls", map[string]float64{}, "Redis "+cut.name)
			wantWindows(t, reg, "enricher_budget_window_limit", map[string]float64{"1h": 5}, "Redis "+cut.name)
			if got := metricValue(t, reg, "enricher_budget_store_errors_total"); got <= before {
				t.Fatalf("Redis %s: enricher_budget_store_errors_total %v, was %v: the failed read is not counted", cut.name, got, before)
			}
			if got := metricValue(t, reg, "enricher_budget_store_up"); got != 0 {
				t.Fatalf("Redis %s: enricher_budget_store_up = %v after a failed read", cut.name, got)
			}
			proxy.Up()
			// The first command on a connection the proxy cut may fail.
			waitForRedis(t, "a scrape to read the calls again", func() bool {
				_, ok := windowMetrics(t, reg, "enricher_budget_window_calls")["1h"]
				return ok
			})
			wantWindows(t, reg, "enricher_budget_window_calls", map[string]float64{"1h": 1}, "Redis back after "+cut.name)
			if got := metricValue(t, reg, "enricher_budget_store_up"); got != 1 {
				t.Fatalf("Redis back after %s: enricher_budget_store_up = %v", cut.name, got)
			}
		}
	})
}

// TestRedisWindowMetricsAfterClose: a closed Redis budget reads nothing
// at scrape time (its client may be closed too): the limits stay, the
// calls are left out, and the store's metrics do not change.
func TestRedisWindowMetricsAfterClose(t *testing.T) {
	s := redistest.NewMini(t)
	reg := prometheus.NewRegistry()
	r := newShared(t, s, Limits{{5, time.Hour}}, RedisOptions{Registerer: reg})
	endCall(t, r, grantNowRedis(t, r, PriorityHigh).id)
	wantWindows(t, reg, "enricher_budget_window_calls", map[string]float64{"1h": 1}, "open")
	errs := metricValue(t, reg, "enricher_budget_store_errors_total")
	r.Close()
	s.Mini().Close()
	wantWindows(t, reg, "enricher_budget_window_calls", map[string]float64{}, "closed")
	wantWindows(t, reg, "enricher_budget_window_limit", map[string]float64{"1h": 5}, "closed")
	if got := metricValue(t, reg, "enricher_budget_store_errors_total"); got != errs {
		t.Fatalf("enricher_budget_store_errors_total went from %v to %v after Close", errs, got)
	}
	if got := metricValue(t, reg, "enricher_budget_store_up"); got != 1 {
		t.Fatalf("enricher_budget_store_up = %v after Close, want it unchanged, 1", got)
	}
}

// metricValue returns the value of the unlabelled counter or gauge name.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}
