package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/redistest"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// Three connector binaries in one group share one call budget in Redis
// (10/1s,100/10s, and Defender's own limit of 10 calls a second) while
// 1,000 new alerts arrive naming users of a pool of 100; one member is
// killed with SIGKILL and not started again, and then Redis is restarted
// empty (it keeps nothing on disk). Nothing is lost; every alert gets its
// user, on its first event or as an update from the retry topic (or
// not_found, for the alerts whose user Defender does not know); the
// simulator saw the fleet's calls within both windows over every interval
// of the whole run, the restart included, and answered no 429.
//
// The restart hits a Redis of the drill's own, started by scripts/redis.sh
// on a free port in a temporary directory, so that no other test using
// the Redis of ENRICHER_TEST_REDIS_URL is disturbed; the drill still runs
// only when a real broker and a real Redis are named.
func TestDrillFleetOnRedis(t *testing.T) {
	c := kafkatest.NewReal(t)
	redistest.NewReal(t) // skips without a real Redis
	rs := startPrivateRedis(t)
	begin := time.Now()
	const (
		limits = "10/1s,100/10s"
		alerts = 1000
	)
	rng := newRand(t)
	pool := simulator.NewUserPool(100, 7)
	e := newEnv(t, c, 6, simulator.Options{Users: pool.Users()})
	// Defender's own limit: a fleet that overspent its budget would be
	// answered 429. The simulator keeps one window; the tighter one.
	e.sim.SetRateLimit(10, time.Second)
	for k, v := range map[string]string{
		"ENRICHER_REDIS_URL":             rs.url,
		"ENRICHER_DEFENDER_RATE_LIMITS":  limits,
		"ENRICHER_REUSE_USER":            "true",
		"ENRICHER_KAFKA_SESSION_TIMEOUT": "6s",
		// A lease of 20 s: a killed member's call counts no longer.
		"ENRICHER_DEFENDER_TIMEOUT": "5s",
		"ENRICHER_MAX_ENRICH_WAIT":  "2s",
		"ENRICHER_LOG_LEVEL":        "warn",
	} {
		e.base[k] = v
	}
	tl := newTail(t, e)
	members := []*member{startMember(t, e, "a"), startMember(t, e, "b"), startMember(t, e, "c")}

	// 50 alerts a second, each a new alert id naming a user of the pool
	// (one in twenty names none Defender knows: a 404).
	ids := newAlertIDs(alerts)
	const batch, pace = 20, 400 * time.Millisecond
	killAt, restartAt := 10+rng.IntN(5), 25+rng.IntN(5) // batches
	var (
		inputs           []event
		victim           *member
		killedAt, downAt time.Time
		away             time.Duration
	)
	tick := time.NewTicker(pace)
	defer tick.Stop()
	for b := 0; b*batch < alerts; b++ {
		if b > 0 {
			<-tick.C
		}
		msgs := make([]message, 0, batch)
		for _, id := range ids[b*batch : min((b+1)*batch, alerts)] {
			if u, ok := pool.UserFor(id); ok {
				msgs = append(msgs, severityMessage(id, "Medium", &u))
			} else {
				msgs = append(msgs, severityMessage(id, "Medium", nil))
			}
		}
		inputs = append(inputs, produce(t, c, e.in, msgs...)...)
		switch b {
		case killAt:
			victim = members[rng.IntN(len(members))]
			victim.acked()
			kill9(t, victim.p)
			killedAt = time.Now()
			t.Logf("killed member %s at %v, after it acknowledged %d events; %d alerts written", victim.name,
				time.Since(begin).Round(time.Millisecond), victim.last, len(inputs))
		case restartAt:
			downAt = time.Now()
			away = rs.restart()
			t.Logf("Redis restarted empty at %v, away %v; %d alerts written", downAt.Sub(begin).Round(time.Millisecond),
				away.Round(time.Millisecond), len(inputs))
		}
	}
	var live []*proc
	for _, m := range members {
		if m != victim {
			live = append(live, m.p)
		}
	}

	// Every alert with its user, or not_found: on its first event, or on
	// an update once an event published unavailable was tried again.
	settled := func(outs []output) (left int) {
		done := map[string]bool{}
		for _, o := range outs {
			if st := o.Env.Enrichment.Status; st == "enriched" || st == "not_found" {
				done[o.Marker] = true
			}
		}
		for _, ev := range inputs {
			if !done[ev.Marker] {
				left++
			}
		}
		return left
	}
	outs, dls := tl.waitFor(3*time.Minute, "every alert enriched or not_found, first or by an update", func(outs []output, _ []deadLetter) bool {
		for _, p := range live {
			p.running("while the alerts were awaited")
		}
		return settled(outs) == 0
	})
	waitCommitted(t, e, inputs, time.Minute)
	r := verifyNoLoss(t, inputs, outs, dls)

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
	}
	// Every member logs the Redis that lost its state, and carries on.
	resets := 0
	for _, p := range live {
		if strings.Contains(p.Stderr(), "had lost its state") {
			resets++
		}
	}
	for _, m := range members {
		if m != victim {
			m.p.Stop(15 * time.Second)
		}
	}
	if resets != len(live) {
		t.Errorf("%d of the %d living members logged that Redis had lost its state", resets, len(live))
	}

	calls := e.sim.Calls()
	statuses, perID := map[int]int{}, map[string]int{}
	var afterRestart int
	for _, cl := range calls {
		statuses[cl.Status]++
		perID[cl.AlertID]++
		if cl.Time.After(downAt) {
			afterRestart++
		}
	}
	if statuses[http.StatusTooManyRequests] > 0 {
		t.Errorf("Defender answered 429 %d times: the fleet overspent its budget", statuses[http.StatusTooManyRequests])
	}
	// One call per alert id for the fleet: the cache and a lock per alert
	// are shared in Redis. Two calls for one id are allowed only where the
	// shared answer was lost: in a Redis that came back empty (one call
	// before the restart, one after), or with the killed member, whose
	// call was running when it died (it began at most a call's length
	// before the kill; its lock expired and another member called).
	times := map[string][]time.Time{}
	for _, cl := range calls {
		times[cl.AlertID] = append(times[cl.AlertID], cl.Time)
	}
	for id, ts := range times {
		if len(ts) < 2 {
			continue
		}
		lostWithRedis := ts[0].Before(downAt) && ts[1].After(downAt)
		lostWithMember := !ts[0].Before(killedAt.Add(-15*time.Second)) && ts[0].Before(killedAt) && ts[1].After(killedAt)
		if len(ts) > 2 || !lostWithRedis && !lostWithMember {
			t.Errorf("alert %s called %d times, at %v: want one call, or two where the shared answer was lost", id, len(ts), ts)
		}
	}
	byCount := map[int]int{}
	for _, n := range perID {
		byCount[n]++
	}
	var perIDParts []string
	for _, n := range slices.Sorted(func(yield func(int) bool) {
		for n := range byCount {
			if !yield(n) {
				return
			}
		}
	}) {
		perIDParts = append(perIDParts, fmt.Sprintf("%d call(s) %d", n, byCount[n]))
	}
	first, updates := 0, 0
	for _, o := range outs {
		if o.Env.Update != nil {
			updates++
		} else {
			first++
		}
	}
	unavailable := 0
	for _, o := range outs {
		if o.Env.Update == nil && o.Env.Enrichment.Status == "unavailable" {
			unavailable++
		}
	}

	f := drillFigures{APICalls: len(calls), Restarts: 1, Elapsed: time.Since(begin)}
	f.fill(r, outs, dls)
	f.Duplicates = first - len(inputs) // first events published twice; updates are not duplicates
	f.MaxWindow = checkBudget(t, calls, limits)
	f.Extra = fmt.Sprintf("acknowledged per member: %s; member %s killed at %v, Redis restarted at %v (away %v); first events unavailable %d, updates %d; calls by status %v, %d after the restart; alert ids by calls: %s",
		strings.Join(counts, ", "), victim.name, killedAt.Sub(begin).Round(100*time.Millisecond), downAt.Sub(begin).Round(100*time.Millisecond),
		away.Round(100*time.Millisecond), unavailable, updates, statuses, afterRestart, strings.Join(perIDParts, ", "))
	f.report(t)
}
