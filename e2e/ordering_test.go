package e2e

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// Events of one alert id come out in input order, also while their lookup
// is slow and other alerts' events overtake them.
func TestPerAlertOrder(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		e := newEnv(t, c, 2)
		tl := newTail(t, e)
		startConnector(t, e, map[string]string{"ENRICHER_MAX_ENRICH_WAIT": "20s"})
		warm := produceAlerts(t, c, e.in, 1)
		tl.waitCovered(30*time.Second, warm)

		// Four alerts, 40 events interleaved at random on one partition,
		// in three batches: the first while every lookup takes 800ms, the
		// second while those lookups are still running, the third once
		// the answers are cached.
		ids := newAlertIDs(4)
		rng := rand.New(rand.NewPCG(1, 2))
		batch := func(n int) []message {
			msgs := make([]message, n)
			for i := range msgs {
				msgs[i] = alertMessage(ids[rng.IntN(len(ids))], 0)
			}
			return msgs
		}
		e.sim.SetLatency(800 * time.Millisecond)
		inputs := produce(t, c, e.in, batch(15)...)
		inputs = append(inputs, produce(t, c, e.in, batch(15)...)...)
		outs, _ := tl.waitCovered(30*time.Second, inputs)
		e.sim.SetLatency(0)
		inputs = append(inputs, produce(t, c, e.in, batch(10)...)...)
		outs, _ = tl.waitCovered(30*time.Second, inputs)

		checkOrder(t, inputs, outs)
		got := byMarker(outs)
		for _, ev := range inputs {
			checkEnvelope(t, e, got[ev.Marker], ev, "enriched")
		}
		for _, id := range ids {
			if n := callsFor(e.sim, id); n != 1 {
				t.Errorf("%d calls for alert %s, want 1 (concurrent lookups share one call)", n, id)
			}
		}
	})
}

// checkOrder asserts that, per alert id, the outputs' order on their
// partition is the order of the inputs.
func checkOrder(t *testing.T, inputs []event, outs []output) {
	t.Helper()
	outs = slices.Clone(outs)
	slices.SortFunc(outs, func(a, b output) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	order := map[string]int{} // marker → position in the input
	for i, ev := range inputs {
		order[ev.Marker] = i
	}
	last := map[string]output{} // alert id → last output seen
	compared := 0
	for _, o := range outs {
		i, ok := order[o.Marker]
		if !ok {
			continue
		}
		if prev, ok := last[o.Env.AlertID]; ok {
			if prev.Partition != o.Partition {
				t.Errorf("alert %s came out on partitions %d and %d", o.Env.AlertID, prev.Partition, o.Partition)
			}
			compared++
			if j := order[prev.Marker]; j > i {
				t.Errorf("alert %s: input %d (offset %d) came out after input %d (offset %d)",
					o.Env.AlertID, j, inputs[j].Offset, i, inputs[i].Offset)
			}
		}
		last[o.Env.AlertID] = o
	}
	if want := len(order) - len(last); compared < want {
		t.Errorf("compared the order of %d pairs of outputs, want at least %d", compared, want)
	}
}

// A cache hit is not held behind another alert's slow lookup: alert B,
// whose user is cached, written after alert A, whose lookup is slow, comes
// out first.
func TestNoHeadOfLineBlocking(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		ids := newAlertIDs(2)
		a, b := ids[0], ids[1]
		// A's lookup is held at the simulator until B has come out, however
		// long that takes: B held behind A would never come out.
		hold := make(chan struct{})
		var holdOnce sync.Once
		release := func() { holdOnce.Do(func() { close(hold) }) }
		e := newEnv(t, c, 1, simulator.Options{Users: func(id string) (map[string]any, bool) {
			if id == a {
				<-hold
			}
			return simulator.SyntheticUser(id), true
		}})
		t.Cleanup(release) // before the simulator's Close, which waits for Users
		tl := newTail(t, e)
		startConnector(t, e, map[string]string{"ENRICHER_MAX_ENRICH_WAIT": "60s"})

		warm := produceAlerts(t, c, e.in, 1, withIDs(b), onPartition(0))
		tl.waitCovered(30*time.Second, warm)

		inputs := produce(t, c, e.in, alertMessage(a, 0), alertMessage(b, 0))
		if inputs[0].Offset >= inputs[1].Offset {
			t.Fatalf("A at offset %d, B at %d: want A first", inputs[0].Offset, inputs[1].Offset)
		}
		// B's output is awaited alone: A's lookup is still held.
		outs, _ := tl.waitCovered(30*time.Second, inputs[1:])
		got := byMarker(outs)
		ob := got[inputs[1].Marker]
		if _, ok := got[inputs[0].Marker]; ok {
			t.Errorf("A (slow lookup) came out no later than B (cache hit)")
		}
		checkEnvelope(t, e, ob, inputs[1], "enriched")
		if ob.Env.Enrichment.Source != "cache" {
			t.Errorf("B's source is %q, want cache", ob.Env.Enrichment.Source)
		}
		release()
		outs, _ = tl.waitCovered(30*time.Second, inputs)
		oa := byMarker(outs)[inputs[0].Marker]
		checkEnvelope(t, e, oa, inputs[0], "enriched")
		if !oa.EnrichedAt().After(ob.EnrichedAt()) || !oa.Seen.After(ob.Seen) {
			t.Errorf("A enriched at %s (read %s), B at %s (read %s): want B first",
				oa.EnrichedAt(), oa.Seen, ob.EnrichedAt(), ob.Seen)
		}
	})
}
