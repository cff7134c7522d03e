package app

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/budget"
)

// TestNewWiresTheBudget: the budget New builds keeps ENRICHER_DEFENDER_RESERVE
// for High and Medium lookups and reports its metrics on the app's registry.
func TestNewWiresTheBudget(t *testing.T) {
	cfg, deps, _, _ := checkConfig(t)
	cfg.HTTPAddr = ""
	limits, err := budget.ParseLimits("10/1h")
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefenderRateLimits, cfg.DefenderReserve = limits, 0.2
	a, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		a.budget.Close()
		_ = a.consumer.Close(context.Background())
		_ = a.retries.Close(context.Background())
		_ = a.producer.Close(context.Background())
	}()

	low := budget.WithPriority(context.Background(), budget.PriorityLow)
	for i := range 8 {
		done, err := a.budget.Acquire(low)
		if err != nil {
			t.Fatalf("low call %d: %v", i, err)
		}
		done()
	}
	// The 9th Low call waits for the reserve: it gives up once queued.
	ctx, cancel := context.WithCancel(low)
	errc := make(chan error, 1)
	go func() {
		done, err := a.budget.Acquire(ctx)
		if err == nil {
			done()
		}
		errc <- err
	}()
	deadline := time.Now().Add(60 * time.Second) // guards against a hang only
	for a.budget.Waiting() != 1 && len(errc) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the 9th Low call to queue")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("9th Low call of 10/1h with a 20%% reserve: err = %v, want it to wait", err)
	}
	done, err := a.budget.Acquire(budget.WithPriority(context.Background(), budget.PriorityHigh))
	if err != nil {
		t.Fatalf("a High call in the reserve: %v", err)
	}
	done()

	mfs, err := a.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "priority" {
					got[mf.GetName()+"{"+l.GetValue()+"}"] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	for name, want := range map[string]float64{
		"enricher_budget_granted_total{low}":  8,
		"enricher_budget_granted_total{high}": 1,
		"enricher_budget_waiting{low}":        0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (reported %v), want %v", name, v, ok, want)
		}
	}
}
