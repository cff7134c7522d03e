package pipeline_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/pipeline"
)

// TestLookupCarriesSeverity: a lookup reaches the budget with the priority
// of its alert's severity, from an alert object's severity and from a
// streaming record's properties.Severity; an alert without one is
// Informational.
func TestLookupCarriesSeverity(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]budget.Priority{}
	lk := &fakeLookup{answer: func(ctx context.Context, id string) (*defender.User, error) {
		mu.Lock()
		seen[id] = budget.PriorityFrom(ctx)
		mu.Unlock()
		return testUser(t, "x"), nil
	}}
	r := newRig(t, pipeline.Config{}, lk, 1)
	const (
		high   = "da637472900382838869_1364969609"
		medium = "da637472900382838869_1364969610"
		low    = "da637472900382838869_1364969611"
		none   = "da637472900382838869_1364969612"
		record = "da637472900382838869_1364969613"
	)
	r.c.Produce(t, r.in,
		kafkatest.Record{Value: []byte(fmt.Sprintf(`{"id":%q,"severity":"High"}`, high))},
		kafkatest.Record{Value: []byte(fmt.Sprintf(`{"id":%q,"severity":"medium"}`, medium))},
		kafkatest.Record{Value: []byte(fmt.Sprintf(`{"id":%q,"severity":"Low"}`, low))},
		kafkatest.Record{Value: []byte(fmt.Sprintf(`{"id":%q,"severity":"UnSpecified"}`, none))},
		kafkatest.Record{Value: []byte(fmt.Sprintf(`{"records":[{"category":"AdvancedHunting-AlertInfo","properties":{"AlertId":%q,"Severity":"High","ServiceSource":"Microsoft Defender for Endpoint"}}]}`, record))},
	)
	r.read(t, 5)
	want := map[string]budget.Priority{high: budget.PriorityHigh, medium: budget.PriorityMedium, low: budget.PriorityLow,
		none: budget.PriorityInformational, record: budget.PriorityHigh}
	waitUntil(t, "five lookups", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 5 })
	mu.Lock()
	defer mu.Unlock()
	for id, p := range want {
		if seen[id] != p {
			t.Errorf("lookup of %s at priority %v, want %v", id, seen[id], p)
		}
	}
}
