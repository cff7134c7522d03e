package e2e

// Failure drills: each one does to the connector what production will, on
// the real Apache Kafka broker, and proves that nothing is lost. Each logs a
// one-line summary starting with "DRILL" (events in, outputs, dead letters,
// duplicates, lost, API calls, the most calls in any window of the budget,
// restarts, elapsed); RELIABILITY.md keeps the last figures and the command
// that reproduces each drill.
//
// The drills run one after the other (none calls t.Parallel): the broker
// drill restarts a broker, and the others measure time.

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/schemas"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// kill -9 of the connector binary, four times at random moments while it
// works through a 50,000-event stream, each time restarted in the same
// group: every event comes out at least once; the duplicates are counted.
//
// Each kill waits for the running process to have committed something
// (after a restart that takes kafka-go's 30 s session timeout, until the
// group gives up on the killed member), then for a random 0-1.5 s, so that
// it lands while the process is fetching, enriching, writing and committing.
// With a commit every 100 ms and up to 1,000 events in flight, a connector
// that committed an offset before its output was acknowledged would lose
// the events in flight at the kill, and the no-loss check would name them.
func TestDrillKill9(t *testing.T) {
	c := kafkatest.NewReal(t)
	begin := time.Now()
	const (
		events = 50_000
		kills  = 4
	)
	rng := newRand(t)
	e := newEnv(t, c, 8)
	// Lookups of 100 ms keep events in flight, fetched but not yet written:
	// the moments at which a commit could run ahead of an acknowledgement.
	e.sim.SetLatency(100 * time.Millisecond)
	tl := newTail(t, e)
	vars := binaryVars(e, nil) // commits every 100ms

	p := startBinary(t, vars, "run")
	// About 250 alerts a second while the kills go on, the rest at once
	// after them: the connector is killed during a live stream, and the
	// drill does not wait for a slow producer at its end.
	s := startStream(t, c, e.in, streamOpts{n: events, batch: 100, pace: 400 * time.Millisecond, ids: newAlertIDs(5000)})
	var committed int64 // by the processes killed so far
	for i := range kills {
		started := time.Now()
		waitProgress(t, e, p, committed, 90*time.Second)
		working := time.Since(started)
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		kill9(t, p)
		// A commit the process sent just before it died may still land.
		time.Sleep(250 * time.Millisecond)
		committed = committedSum(t, e)
		t.Logf("kill %d at %v: the process committed its first offsets %v after it started; %d alerts written, %d committed, %d outputs read so far",
			i+1, time.Since(begin).Round(time.Millisecond), working.Round(time.Millisecond), s.written.Load(), committed, tl.outputs())
		p = startBinary(t, vars, "run")
	}
	s.finish()
	inputs := s.wait(t, 2*time.Minute)
	outs, dls := awaitOutcome(t, e, tl, 3*time.Minute, inputs, p)
	waitCommitted(t, e, inputs, time.Minute)
	p.Stop(15 * time.Second)
	r := verifyNoLossSampled(t, inputs, outs, dls, 25)

	f := drillFigures{APICalls: e.sim.CallCount(), Restarts: kills, Elapsed: time.Since(begin)}
	f.fill(r, outs, dls)
	f.MaxWindow = checkBudget(t, e.sim.Calls(), vars["ENRICHER_DEFENDER_RATE_LIMITS"])
	f.report(t)
}

// The broker is restarted twice mid-stream, cleanly (SIGTERM) and then
// with SIGKILL (scripts/kafka.sh restart and restart --kill), while the
// connector binary runs: the connector rides both out by itself, without
// a restart of its own, and loses nothing. Outputs of lookups that end
// while the broker is away are written once it is back (the writer
// retries); fetching resumes on its own (kafka-go reports the broker's
// absence to Fetch and keeps retrying). After each restart the group
// waits out kafka-go's 30 s session timeout: kafka-go left the group when
// the broker went away and joins again as a new member, which the broker
// lets in once the old one has expired.
//
// The restarts hit a broker of the drill's own, started by scripts/kafka.sh
// on free ports in a temporary directory: `go test ./...` runs the test
// binaries of several packages at once, and restarting the broker of
// ENRICHER_TEST_KAFKA_BROKERS would fail whatever other package is using it
// at that moment. The drill still runs only when a real broker is named,
// and scripts/kafka.sh returns only once the restarted broker serves
// requests and coordinates groups again.
func TestDrillBrokerRestart(t *testing.T) {
	kafkatest.NewReal(t) // skips without a real broker
	b := startPrivateBroker(t)
	c := b.c
	begin := time.Now()
	e := newEnv(t, c, 4)
	// Lookups that take a second keep events in flight across the moment
	// the broker goes away: their outputs are written while it is down.
	e.sim.SetLatency(time.Second)
	tl := newTail(t, e)
	p := startBinary(t, binaryVars(e, nil), "run")
	// 100 alerts a second, each with a fresh alert id: no answer comes from
	// the cache, so about 100 events are always waiting for their lookup.
	const events = 12_000
	s := startStream(t, c, e.in, streamOpts{n: events, batch: 10, pace: 100 * time.Millisecond, ids: newAlertIDs(events)})

	var notes []string
	for _, args := range [][]string{nil, {"--kill"}} {
		waitOutputs(t, tl, p, tl.outputs()+200, 90*time.Second)
		name := strings.Join(append([]string{"restart"}, args...), " ")
		away := b.restart(args...)
		p.running("after scripts/kafka.sh " + name)
		// Recovered once alerts written after the restart come out.
		back := time.Now()
		later := s.eventsFrom(t, int(s.written.Load()), 200, time.Minute)
		awaitCovered(t, tl, 2*time.Minute, later, p)
		notes = append(notes, fmt.Sprintf("%s: broker back after %v, connector flowing %v later",
			name, away.Round(100*time.Millisecond), time.Since(back).Round(100*time.Millisecond)))
		t.Log(notes[len(notes)-1])
	}
	s.finish()
	inputs := s.wait(t, 2*time.Minute)
	outs, dls := awaitOutcome(t, e, tl, 2*time.Minute, inputs, p)
	waitCommitted(t, e, inputs, time.Minute)
	p.Stop(15 * time.Second)
	r := verifyNoLossSampled(t, inputs, outs, dls, 10)
	log := p.Stderr()
	notes = append(notes, fmt.Sprintf("the connector logged %d failed writes (retried) and %d failed fetches (retried)",
		strings.Count(log, "kafka writer: error writing messages"), strings.Count(log, "fetching failed; retrying")))

	f := drillFigures{APICalls: e.sim.CallCount(), Restarts: 2, Elapsed: time.Since(begin), Extra: strings.Join(notes, "; ")}
	f.fill(r, outs, dls)
	f.MaxWindow = checkBudget(t, e.sim.Calls(), e.base["ENRICHER_DEFENDER_RATE_LIMITS"])
	f.report(t)
}

// Three connector binaries share a group on a six-partition topic; one is
// killed with SIGKILL and a fourth joins mid-stream. Every event comes
// out; duplicates are counted; every surviving member, the new one
// included, does part of the work; the group's commits cover the stream.
//
// The group stalls until the broker gives up on the killed member (kafka-go's
// 30 s session timeout): the new member's join waits for it.
func TestDrillGroupKillAndJoin(t *testing.T) {
	c := kafkatest.NewReal(t)
	begin := time.Now()
	rng := newRand(t)
	e := newEnv(t, c, 6)
	// Lookups of 500 ms, and few repeats among 5,000 alert ids: at any
	// moment some 80 events per member are in flight, fetched but not yet
	// written, which a connector committing ahead of its writes would lose
	// at the kill.
	e.sim.SetLatency(500 * time.Millisecond)
	tl := newTail(t, e)
	members := []*member{startMember(t, e, "a"), startMember(t, e, "b"), startMember(t, e, "c")}
	s := startStream(t, c, e.in, streamOpts{n: 20_000, batch: 100, pace: 200 * time.Millisecond, ids: newAlertIDs(5000)})

	waitUntil(t, 90*time.Second, "all three members working", func() bool {
		for _, m := range members {
			m.p.running("before the kill")
			if m.acked() <= 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Duration(500+rng.IntN(2000)) * time.Millisecond)
	victim := members[rng.IntN(len(members))]
	victim.acked()
	kill9(t, victim.p)
	killedAt := time.Now()
	t.Logf("killed member %s at %v, after it acknowledged %d events; %d alerts written", victim.name,
		time.Since(begin).Round(time.Millisecond), victim.last, s.written.Load())

	time.Sleep(time.Duration(500+rng.IntN(2000)) * time.Millisecond)
	joined := startMember(t, e, "d")
	t.Logf("member d started at %v", time.Since(begin).Round(time.Millisecond))
	waitUntil(t, 2*time.Minute, "member d working", func() bool {
		joined.p.running("after it joined")
		return joined.acked() > 0
	})
	stall := time.Since(killedAt)
	members = append(members, joined)
	s.finish()
	inputs := s.wait(t, 2*time.Minute)
	var live []*proc
	for _, m := range members {
		if m != victim {
			live = append(live, m.p)
		}
	}
	outs, dls := awaitOutcome(t, e, tl, 2*time.Minute, inputs, live...)
	waitCommitted(t, e, inputs, time.Minute)

	var counts []string
	for _, m := range members {
		if m == victim {
			counts = append(counts, fmt.Sprintf("%s %d (killed)", m.name, m.last))
			continue
		}
		n := m.acked()
		counts = append(counts, fmt.Sprintf("%s %d", m.name, n))
		if n == 0 {
			t.Errorf("member %s acknowledged nothing", m.name)
		}
		m.p.Stop(15 * time.Second)
	}
	r := verifyNoLossSampled(t, inputs, outs, dls, 10)

	f := drillFigures{APICalls: e.sim.CallCount(), Restarts: 1, Elapsed: time.Since(begin),
		Extra: fmt.Sprintf("acknowledged per member: %s; member d working %v after the kill", strings.Join(counts, ", "), stall.Round(100*time.Millisecond))}
	f.fill(r, outs, dls)
	f.MaxWindow = checkBudget(t, e.sim.Calls(), e.base["ENRICHER_DEFENDER_RATE_LIMITS"])
	f.report(t)
}

// Defender misbehaves in every way it can while alerts flow: down (503),
// slow (2 s per answer), a storm of 429s with Retry-After (ThrottleNext,
// repeatedly), its own rate limit (SetRateLimit, tighter than the
// connector's budget), and tokens that expire every 3 s throughout. Nothing
// is lost; every event comes out with a status; the connector's budget
// (20/1s,200/10s here, so the drill is short) held over the calls as the
// simulator counted them, by arrival; and no call arrived inside a
// Retry-After period, except calls already sent when the 429 came back.
func TestDrillDefenderTrouble(t *testing.T) {
	c := kafkatest.NewReal(t)
	begin := time.Now()
	const limits = "20/1s,200/10s"
	// MSAL does not cache a token that expires within five minutes, so every
	// call takes a new one from the simulator's Entra ID, and one that waited
	// for the budget or a slow answer may expire on the way (the simulator
	// answers 401 then; the drill counts such calls).
	e := newEnv(t, c, 4, simulator.Options{TokenLifetime: 3 * time.Second})
	tl := newTail(t, e)
	hc, rec := recordingClient(e.sim)
	startConnectorWith(t, e, hc, map[string]string{
		"ENRICHER_DEFENDER_RATE_LIMITS": limits,
		"ENRICHER_MAX_ENRICH_WAIT":      "3s",
		"ENRICHER_BREAKER_FAILURES":     "5",
		"ENRICHER_BREAKER_TIMEOUT":      "2s",
		"ENRICHER_NEGATIVE_CACHE_TTL":   "1m",
		"ENRICHER_LOG_LEVEL":            "warn",
	})
	ids := newAlertIDs(400)
	for _, id := range ids[:40] {
		e.sim.SetNotFound(id)
	}
	// 25 alerts a second over 400 alert ids (40 of them unknown to Defender),
	// each id two or three times: more lookups than the budget's 20 calls a
	// second, so the budget is spent at times too.
	s := startStream(t, c, e.in, streamOpts{n: 1000, batch: 5, pace: 200 * time.Millisecond, ids: ids})

	phase := func(name string, d time.Duration) {
		t.Logf("%v: %s for %v (%d alerts written, %d outputs read)", time.Since(begin).Round(time.Millisecond), name, d, s.written.Load(), tl.outputs())
		time.Sleep(d)
	}
	phase("normal", 2*time.Second)
	e.sim.SetOutage(http.StatusServiceUnavailable)
	phase("Defender down (503)", 4*time.Second)
	e.sim.SetOutage(0)
	phase("recovery", 3*time.Second)
	e.sim.SetLatency(2 * time.Second)
	phase("Defender slow (2s)", 4*time.Second)
	e.sim.SetLatency(0)
	for range 3 {
		e.sim.ThrottleNext(5, "2")
		phase("429 storm (5 calls, Retry-After 2)", 2500*time.Millisecond)
	}
	e.sim.SetRateLimit(10, time.Second)
	phase("Defender's own rate limit (10/1s)", 4*time.Second)
	e.sim.SetRateLimit(0, 0)
	s.finish()
	inputs := s.wait(t, time.Minute)
	outs, dls := awaitOutcome(t, e, tl, time.Minute, inputs)
	waitCommitted(t, e, inputs, time.Minute)
	r := verifyNoLoss(t, inputs, outs, dls)

	statuses := map[string]int{}
	for _, o := range outs {
		st := o.Env.Enrichment.Status
		statuses[st]++
		switch st {
		case "enriched", "not_found", "unavailable", "failed":
		default:
			t.Errorf("output %d/%d of alert %s: status %q, want enriched, not_found, unavailable or failed", o.Partition, o.Offset, o.Env.AlertID, st)
		}
	}
	calls := e.sim.Calls()
	checkCalls(t, e.sim, ids...)
	ra := checkRetryAfter(t, calls, rec.snapshot())
	if ra.Throttled == 0 {
		t.Error("no 429 in the drill: the Retry-After check checked nothing")
	}
	expired := 0
	for _, cl := range calls {
		if !cl.TokenValid {
			expired++
		}
	}
	f := drillFigures{APICalls: len(calls), Elapsed: time.Since(begin)}
	f.fill(r, outs, dls)
	f.MaxWindow = checkBudget(t, calls, limits)
	f.Extra = fmt.Sprintf("statuses %s; 429s %d, calls arriving inside a Retry-After period %d (sent before the 429 came back %d, within %v after it %d (at most %v), violations %d); token requests %d, calls with an expired token %d",
		formatCounts(statuses), ra.Throttled, ra.InPeriod, ra.InFlight, grantSlack, ra.InSlack, ra.MaxSlack.Round(100*time.Microsecond), ra.Violations, e.sim.TokenRequests(), expired)
	f.report(t)
}

// formatCounts prints m sorted by key, as "a 1, b 2".
func formatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// Poison in every partition: not JSON, an object nested 10,000 levels deep
// and an invalid alert id, interleaved with good alerts. Each poison
// message becomes a dead letter with its reason and origin; every
// partition keeps flowing (the good alerts written after the poison on the
// same partition are enriched); the group's committed offsets reach the end
// of every partition while the connector runs. It runs on kfake too: it
// is cheap, and the fake must not hide a partition that stops.
func TestDrillPoison(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		begin := time.Now()
		const partitions = 4
		e := newEnv(t, c, partitions)
		tl := newTail(t, e)
		startConnector(t, e, nil)

		deep := strings.Repeat("[", 10_000) + strings.Repeat("]", 10_000)
		poisons := []struct {
			reason string
			value  func(marker, id string) []byte
		}{
			{"invalid_json", func(m, id string) []byte { return []byte(`{"e2eMarker":"` + m + `","id":"` + id + `","title": `) }},
			{"invalid_json", func(m, id string) []byte {
				return []byte(`{"e2eMarker":"` + m + `","id":"` + id + `","deep":` + deep + `}`)
			}},
			{"invalid_alert_id", func(m, _ string) []byte { return []byte(`{"e2eMarker":"` + m + `","id":"../../machines"}`) }},
		}
		good := newAlertIDs(partitions * (2*len(poisons) + 2))
		var msgs []message
		reasons := map[string]string{} // marker → expected reason
		next := 0
		for round := range len(poisons) + 1 {
			for p := range int32(partitions) {
				msgs = append(msgs, alertMessage(good[next], p))
				next++
				if round < len(poisons) {
					m := newMarker()
					v := poisons[round].value(m, good[next-1])
					msgs = append(msgs, message{Key: []byte("poison"), Value: v, Partition: p,
						Events: []event{{Marker: m, Record: -1, Alert: v}}})
					reasons[m] = poisons[round].reason
				}
			}
		}
		// And one more good alert per partition, last: two after the
		// last poison of each partition.
		for p := range int32(partitions) {
			msgs = append(msgs, alertMessage(good[next], p))
			next++
		}
		inputs := produce(t, c, e.in, msgs...)
		outs, dls := awaitOutcome(t, e, tl, time.Minute, inputs)
		committed := waitCommitted(t, e, inputs, 30*time.Second)
		r := verifyNoLoss(t, inputs, outs, dls)

		got := byMarker(outs)
		dlByMarker := map[string]deadLetter{}
		for _, d := range dls {
			dlByMarker[d.Marker] = d
		}
		lastPoison := map[int32]int64{}
		for _, ev := range inputs {
			want, poison := reasons[ev.Marker]
			if !poison {
				continue
			}
			lastPoison[ev.Partition] = max(lastPoison[ev.Partition], ev.Offset)
			d, ok := dlByMarker[ev.Marker]
			switch {
			case !ok:
				t.Errorf("poison at partition %d offset %d: no dead letter", ev.Partition, ev.Offset)
			case d.Reason != want:
				t.Errorf("poison at partition %d offset %d: reason %q (%s), want %q", ev.Partition, ev.Offset, d.Reason, d.Message, want)
			case d.Message == "" || d.Topic != e.in || d.FromPartition != ev.Partition || d.FromOffset != ev.Offset:
				t.Errorf("poison at partition %d offset %d: dead letter with message %q, origin %s/%d/%d", ev.Partition, ev.Offset, d.Message, d.Topic, d.FromPartition, d.FromOffset)
			}
			if _, ok := got[ev.Marker]; ok {
				t.Errorf("poison at partition %d offset %d came out on the output topic", ev.Partition, ev.Offset)
			}
		}
		after := 0
		for _, ev := range inputs {
			if _, poison := reasons[ev.Marker]; poison {
				continue
			}
			o, ok := got[ev.Marker]
			if !ok {
				continue // verifyNoLoss reported it
			}
			if o.Env.Enrichment.Status != "enriched" {
				t.Errorf("good alert at partition %d offset %d: status %q (%s)", ev.Partition, ev.Offset, o.Env.Enrichment.Status, o.Env.Enrichment.Error)
			}
			if ev.Offset > lastPoison[ev.Partition] {
				after++
			}
		}
		if after != 2*partitions {
			t.Errorf("%d good alerts after the last poison of their partition came out, want %d", after, 2*partitions)
		}
		for _, d := range dls {
			if d.Reason == "" || d.Message == "" {
				t.Errorf("dead letter %d/%d without %s or %s", d.Partition, d.Offset, schemas.HeaderReason, schemas.HeaderMessage)
			}
		}
		checkCalls(t, e.sim, good...)

		f := drillFigures{APICalls: e.sim.CallCount(), Elapsed: time.Since(begin),
			Extra: fmt.Sprintf("poison %d in %d partitions, committed %v", len(reasons), partitions, committed)}
		f.fill(r, outs, dls)
		f.MaxWindow = checkBudget(t, e.sim.Calls(), e.base["ENRICHER_DEFENDER_RATE_LIMITS"])
		f.report(t)
	})
}
