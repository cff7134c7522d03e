package e2e

import (
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/kafkatest"
)

// Two connectors share a group on a four-partition topic; one is stopped
// mid-stream. Every input event comes out, duplicates allowed and counted,
// and the group's commits end up covering the whole stream.
func TestTwoConnectorsOneStops(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		e := newEnv(t, c, 4)
		tl := newTail(t, e)
		a1, stop1 := startConnector(t, e, nil)
		a2, stop2 := startConnector(t, e, nil)
		ids := newAlertIDs(200)

		// A trickle until both members have partitions: the second one's
		// join makes the group rebalance, which the first notices only at
		// its next heartbeat.
		var inputs []event
		pace := time.NewTicker(100 * time.Millisecond)
		defer pace.Stop()
		deadline := time.Now().Add(60 * time.Second)
		for a1.Stats().Total() == 0 || a2.Stats().Total() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("after 60s, connector 1 acknowledged %d events and connector 2 %d: want both working", a1.Stats().Total(), a2.Stats().Total())
			}
			inputs = append(inputs, produceAlerts(t, c, e.in, 8, withIDs(ids...))...)
			<-pace.C
		}
		t.Logf("both connectors working after %d events", len(inputs))

		stopped := make(chan error, 1)
		var stopAt int
		inputs = append(inputs, produceStream(t, c, e.in, 3000, 50, 50*time.Millisecond, func(written int) {
			// Stop the first a third of the way through: its partitions
			// move to the second while the stream goes on.
			if stopAt == 0 && written >= 1000 {
				stopAt = written
				t.Logf("stopping connector 1 after %d events of the stream (it acknowledged %d, connector 2 %d)",
					written, a1.Stats().Total(), a2.Stats().Total())
				go func() { stopped <- stop1() }()
			}
		}, withIDs(ids...))...)
		if err := <-stopped; err != nil {
			t.Errorf("connector 1: %v", err)
		}
		outs, dls := tl.waitCovered(90*time.Second, inputs)
		r := verifyNoLoss(t, inputs, outs, dls)
		s1, s2 := a1.Stats(), a2.Stats()
		t.Logf("connector 1 acknowledged %d events, connector 2 %d; %d duplicates", s1.Total(), s2.Total(), r.Duplicates)
		if s2.Total() == 0 {
			t.Error("connector 2 took over nothing")
		}
		if s1.Total()+s2.Total() < int64(len(inputs)) {
			t.Errorf("the connectors acknowledged %d events between them, want at least %d", s1.Total()+s2.Total(), len(inputs))
		}
		if err := stop2(); err != nil {
			t.Errorf("connector 2: %v", err)
		}
		checkCommitted(t, e, inputs)
	})
}
