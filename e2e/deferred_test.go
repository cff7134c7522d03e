package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/app"
	"github.com/defender-enricher/defender-enricher/kafkatest"
)

// The binary during a Defender outage: every alert goes out unavailable at
// once and is deferred; once the API is back each gets an update with its
// user. kill -9 while alerts are being deferred, and again while updates
// are being published, loses none: at the end every event published
// unavailable has an update, and the retry group has committed the whole
// retry topic.
func TestDeferredEventsSurviveKill(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		e := newEnv(t, c, 4)
		tl := newTail(t, e)
		// A short session: the group hands a killed process's partitions
		// on after 6 s, not 30, and the test is about deferral, not that.
		vars := binaryVars(e, map[string]string{"ENRICHER_MAX_ENRICH_WAIT": "500ms", "ENRICHER_KAFKA_SESSION_TIMEOUT": "6s"})
		e.sim.SetOutage(503)

		first := startBinary(t, vars, "run")
		var second *proc
		inputs := produceStream(t, c, e.in, 400, 20, 10*time.Millisecond, func(written int) {
			if second == nil && written >= 200 {
				first.Kill()
				t.Logf("SIGKILL after %d of 400 alerts written, during the outage", written)
				second = startBinary(t, vars, "run")
			}
		})
		outs, _ := tl.waitCovered(120*time.Second, inputs)
		for _, o := range outs {
			if o.Env.Enrichment.Status != "unavailable" {
				t.Fatalf("during the outage an event went out %s", o.Env.Enrichment.Status)
			}
		}

		e.sim.SetOutage(0)
		var third *proc
		waitUpdated := func(what string, enough func(updated, owed int) bool) []output {
			outs, _ := tl.waitFor(120*time.Second, what, func(outs []output, _ []deadLetter) bool {
				updated, owed := updates(outs)
				return enough(len(updated), len(owed))
			})
			return outs
		}
		waitUpdated("a first update", func(updated, _ int) bool { return updated > 0 })
		second.Kill()
		t.Log("SIGKILL while updates were being published")
		third = startBinary(t, vars, "run")
		outs = waitUpdated("an update for every event published unavailable", func(updated, owed int) bool { return owed == 0 })
		third.Stop(15 * time.Second)

		r := verifyNoLoss(t, inputs, outs, nil)
		updated, _ := updates(outs)
		for origin, u := range updated {
			if u.Env.Enrichment.Status != "enriched" || u.Env.Update.PreviousStatus != "unavailable" {
				t.Errorf("update of %s: status %s, previous %s", origin, u.Env.Enrichment.Status, u.Env.Update.PreviousStatus)
			}
		}
		retryEnd := c.HighWatermarks(t, e.retry)
		committed := c.Committed(t, app.RetryGroup(e.group), e.retry)
		for p, hw := range retryEnd {
			if committed[p] != hw {
				t.Errorf("retry partition %d: committed %d of %d", p, committed[p], hw)
			}
		}
		var deferred int64
		for _, hw := range retryEnd {
			deferred += hw
		}
		t.Logf("%d alerts, %d outputs (%d duplicates), %d deferrals, %d events updated, 2 kill -9", len(inputs), len(outs), r.Duplicates, deferred, len(updated))
	})
}

// updates returns, by origin, the updates among outs, and the origins of
// events published unavailable that have none yet.
func updates(outs []output) (updated map[string]output, owed map[string]bool) {
	updated, owed = map[string]output{}, map[string]bool{}
	for _, o := range outs {
		origin := fmt.Sprintf("%d/%d", o.Env.Origin.Partition, o.Env.Origin.Offset)
		switch {
		case o.Env.Update != nil:
			updated[origin] = o
			delete(owed, origin)
		case o.Env.Enrichment.Status == "unavailable":
			if _, ok := updated[origin]; !ok {
				owed[origin] = true
			}
		}
	}
	return updated, owed
}
