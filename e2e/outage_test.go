package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/kafkatest"
)

// A Defender outage: events are published without their user (failed,
// or unavailable) within ENRICHER_MAX_ENRICH_WAIT, the breaker opens so
// that the dead API is left alone but for its probes and alerts pass
// through at once, and once Defender is back and the breaker's open time
// has passed, new alerts are enriched again.
//
// It runs with a wait longer than the client's retries (four attempts, at
// most 3.5s of backoff) and with a wait shorter than them: the breaker
// counts calls, not lookups, so it opens either way.
func TestDefenderOutage(t *testing.T) {
	for _, maxWait := range []time.Duration{5 * time.Second, time.Second} {
		t.Run("wait="+maxWait.String(), func(t *testing.T) {
			kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) { testOutage(t, c, maxWait) })
		})
	}
}

func testOutage(t *testing.T, c *kafkatest.Cluster, maxWait time.Duration) {
	const (
		// The longest open time: it starts at 1s and doubles while the
		// probes fail.
		breakerTimeout = 10 * time.Second
		// Fetch wait, scheduling and the output's acknowledgement on top
		// of the wait itself; generous for a loaded machine.
		margin = 2 * time.Second
	)
	e := newEnv(t, c, 2)
	tl := newTail(t, e)
	a, _ := startConnector(t, e, map[string]string{
		"ENRICHER_MAX_ENRICH_WAIT":  maxWait.String(),
		"ENRICHER_BREAKER_TIMEOUT":  breakerTimeout.String(),
		"ENRICHER_BREAKER_FAILURES": "3",
		// Every alert of the stream names one user: with reuse, their
		// lookups wait for one another's call instead of calling, and the
		// breaker, which counts lookups, sees one failure per burst.
		"ENRICHER_REUSE_USER": "false",
	})
	// The group is joined and the partitions are read once an alert
	// came through: from here on, time to output is the pipeline's.
	warm := produceAlerts(t, c, e.in, 2, withIDs(newAlertIDs(2)...))
	tl.waitCovered(30*time.Second, warm)

	e.sim.SetOutage(http.StatusServiceUnavailable)
	down := produceAlerts(t, c, e.in, 12, withIDs(newAlertIDs(12)...))
	outs, _ := tl.waitCovered(maxWait+margin+5*time.Second, down)
	got := byMarker(outs)
	for _, ev := range down {
		o := got[ev.Marker]
		if s := o.Env.Enrichment.Status; s != "unavailable" && s != "failed" {
			t.Errorf("%s during the outage: status %q, want unavailable or failed", ev.AlertID, s)
			continue
		}
		checkEnvelope(t, e, o, ev, o.Env.Enrichment.Status)
		if d := o.Seen.Sub(ev.Produced); d > maxWait+margin {
			t.Errorf("%s: out %v after it was produced, want within %v + %v", ev.AlertID, d, maxWait, margin)
		}
	}
	// The breaker opens: the dead API is not called for every alert.
	waitUntil(t, 60*time.Second, "the breaker to open during the outage", func() bool {
		return metricValue(t, a.Registry(), "enricher_breaker_transitions_total", map[string]string{"to": "open"}) >= 1
	})
	// While it is open, alerts pass through at once; the only calls are
	// the probes, one each time it is half-open.
	halfOpen := func() float64 {
		return metricValue(t, a.Registry(), "enricher_breaker_transitions_total", map[string]string{"to": "half-open"})
	}
	calls, probes := e.sim.CallCount(), halfOpen()
	open := produceAlerts(t, c, e.in, 5, withIDs(newAlertIDs(5)...))
	outs, _ = tl.waitCovered(maxWait+margin+5*time.Second, open)
	got = byMarker(outs)
	for _, ev := range open {
		o := got[ev.Marker]
		checkEnvelope(t, e, o, ev, "unavailable")
		if d := o.Seen.Sub(ev.Produced); d > margin {
			t.Errorf("%s with the breaker open: out %v after it was produced, want at once", ev.AlertID, d)
		}
	}
	if n, p := e.sim.CallCount()-calls, halfOpen()-probes; float64(n) > p {
		t.Errorf("%d API calls while the breaker was open, want no more than its %v probes", n, p)
	}
	t.Logf("outage: %d calls for %d alerts, then %d more (probes) for %d alerts while the breaker was open",
		calls, len(warm)+len(down), e.sim.CallCount()-calls, len(open))

	// Defender is back. Until the breaker's open time has passed alerts
	// may still pass through; then one probe closes it.
	e.sim.SetOutage(0)
	back := time.Now()
	var first time.Time
	tries := 0
	// The breaker's open time has no event to wait for: one probe alert
	// every 100ms until one is enriched.
	pace := time.NewTicker(100 * time.Millisecond)
	defer pace.Stop()
	for first.IsZero() {
		if time.Since(back) > breakerTimeout+15*time.Second {
			t.Fatalf("no alert enriched %v after the outage ended (%d tried)", time.Since(back), tries)
		}
		if tries > 0 {
			<-pace.C
		}
		probe := produceAlerts(t, c, e.in, 1, withIDs(newAlertIDs(1)...))
		tries++
		outs, _ := tl.waitCovered(maxWait+margin+5*time.Second, probe)
		if o := byMarker(outs)[probe[0].Marker]; o.Env.Enrichment.Status == "enriched" {
			first = o.EnrichedAt()
		}
	}
	t.Logf("first alert enriched %v after the outage ended, after %d tries", first.Sub(back), tries)
	after := produceAlerts(t, c, e.in, 10, withIDs(newAlertIDs(10)...))
	outs, _ = tl.waitCovered(30*time.Second, after)
	got = byMarker(outs)
	for _, ev := range after {
		checkEnvelope(t, e, got[ev.Marker], ev, "enriched")
	}
}

// With ENRICHER_ON_UNAVAILABLE=wait, an alert looked up during an outage is
// held until Defender answers, then published enriched, with nothing of
// the failed tries left in its envelope.
func TestDefenderOutageWaitPolicy(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		e := newEnv(t, c, 1)
		tl := newTail(t, e)
		// The breaker stays closed, so that every held alert's own lookup
		// calls the API: with it open, one probe at a time goes through,
		// and which alert's it is depends on which goroutine asks first.
		startConnector(t, e, map[string]string{
			"ENRICHER_ON_UNAVAILABLE":   "wait",
			"ENRICHER_BREAKER_FAILURES": "1000000",
		})
		warm := produceAlerts(t, c, e.in, 1)
		tl.waitCovered(30*time.Second, warm)

		e.sim.SetOutage(http.StatusServiceUnavailable)
		calls := e.sim.CallCount()
		held := produceAlerts(t, c, e.in, 3, withIDs(newAlertIDs(3)...))
		// Held, not published: wait until the API has refused a call for
		// every alert, so that each event has settled as failed at least
		// once before Defender comes back.
		waitUntil(t, 60*time.Second, "a call refused for every alert during the outage", func() bool {
			refused := map[string]bool{}
			for _, call := range e.sim.Calls()[calls:] {
				if call.Status == http.StatusServiceUnavailable {
					refused[call.AlertID] = true
				}
			}
			for _, ev := range held {
				if !refused[ev.AlertID] {
					return false
				}
			}
			return true
		})
		if outs, _ := tl.snapshot(); len(outs) != len(warm) {
			t.Fatalf("%d outputs during the outage with the wait policy, want none beyond the warm-up", len(outs)-len(warm))
		}
		e.sim.SetOutage(0)
		outs, _ := tl.waitCovered(60*time.Second, held)
		got := byMarker(outs)
		for _, ev := range held {
			checkEnvelope(t, e, got[ev.Marker], ev, "enriched")
		}
	})
}
