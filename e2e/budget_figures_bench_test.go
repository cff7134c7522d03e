package e2e

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// BenchmarkBudgetFigures runs the built binary against the simulator in
// the three situations where the call budget decides what a SOC gets, and
// reports their figures (one run is the measurement; it is not a rate):
//
//   - outage: Defender answers 503 from 3 s to 9 s while new alerts arrive
//     at 40 a second (ENRICHER_MAX_ENRICH_WAIT=2s, budget 1000/1s): the
//     calls that reached the dead API, the seconds from its return to the
//     first enriched alert, and the events left unavailable once the
//     updates are out (target: none).
//   - burst: 2,000 alerts at once, 10% High, 30% Medium, 60% Low, against
//     a budget of 10/1s,300/1m (ENRICHER_MAX_ENRICH_WAIT=3s): the share of
//     each severity enriched on its first event, and the time until every
//     alert has its user, by its first event or an update.
//   - users: 1,000 alerts over a pool of 100 users, every alert naming its
//     user: the calls made (target: at most one per user, plus the 404s).
//
// It takes about eight minutes, most of it the burst draining through 300
// calls a minute:
//
//	go test -run '^$' -bench BudgetFigures -benchtime 1x -v ./e2e/
func BenchmarkBudgetFigures(b *testing.B) {
	buildBinary(b)
	cluster := func(b *testing.B) *kafkatest.Cluster {
		if os.Getenv(kafkatest.EnvBrokers) != "" {
			return kafkatest.NewReal(b)
		}
		return kafkatest.NewFake(b)
	}
	b.Run("outage", func(b *testing.B) {
		for range b.N {
			figuresOutage(b, cluster(b))
		}
	})
	b.Run("burst", func(b *testing.B) {
		for range b.N {
			figuresBurst(b, cluster(b))
		}
	})
	b.Run("users", func(b *testing.B) {
		for range b.N {
			figuresUsers(b, cluster(b))
		}
	})
}

// severityAlert is an alerts API object of the given severity, naming
// user in relatedUser and evidence when user is not nil.
func severityAlert(id, marker, severity string, user *simulator.PoolUser) []byte {
	related, evidence := "null", ""
	if user != nil {
		related = fmt.Sprintf(`{"userName":%q,"domainName":%q}`, user.AccountName, strings.ToUpper(user.AccountDomain))
		evidence = fmt.Sprintf(`{"entityType":"User","evidenceCreationTime":"2026-11-27T10:00:00.1234567Z","accountName":%q,"domainName":%q,"userSid":%q,"aadUserId":null,"userPrincipalName":null}`,
			user.AccountName, strings.ToUpper(user.AccountDomain), user.AccountSid)
	}
	return fmt.Appendf(nil, `{"id":%q,"e2eMarker":%q,"incidentId":7,"severity":%q,"status":"New","category":"Execution","title":"Suspicious PowerShell command line","machineId":"111e6dd8c833c8a052ea231ec1b19adaf497b625","relatedUser":%s,"evidence":[%s]}`,
		id, marker, severity, related, evidence)
}

func severityMessage(id, severity string, user *simulator.PoolUser) message {
	m := newMarker()
	v := severityAlert(id, m, severity, user)
	return message{Key: []byte(id), Value: v, Partition: kafkatest.ByKey, Events: []event{{Marker: m, AlertID: id, Record: -1, Alert: v}}}
}

// firstAndUpdates splits outs into first events and updates, by marker.
func firstAndUpdates(outs []output) (first, updated map[string]output) {
	first, updated = map[string]output{}, map[string]output{}
	for _, o := range outs {
		if o.Env.Update != nil {
			updated[o.Marker] = o
		} else if _, ok := first[o.Marker]; !ok {
			first[o.Marker] = o
		}
	}
	return first, updated
}

func figuresOutage(b *testing.B, c *kafkatest.Cluster) {
	e := newEnv(b, c, 4)
	tl := newTail(b, e)
	p := startBinary(b, binaryVars(e, map[string]string{
		"ENRICHER_MAX_ENRICH_WAIT":      "2s",
		"ENRICHER_DEFENDER_RATE_LIMITS": "1000/1s",
		"ENRICHER_LOG_LEVEL":            "warn",
	}), "run")
	defer p.Stop(20 * time.Second)
	// The connector is up once it has published an alert.
	warm := produce(b, c, e.in, severityMessage(newAlertIDs(1)[0], "High", nil))
	tl.waitCovered(60*time.Second, warm)

	const rate, seconds = 40, 15
	start := time.Now()
	var down, back time.Time
	var inputs []event
	for i, id := range newAlertIDs(rate * seconds) {
		at := start.Add(time.Duration(i) * time.Second / rate)
		time.Sleep(time.Until(at))
		switch since := time.Since(start); {
		case down.IsZero() && since >= 3*time.Second:
			e.sim.SetOutage(http.StatusServiceUnavailable)
			down = time.Now()
		case back.IsZero() && since >= 9*time.Second:
			e.sim.SetOutage(0)
			back = time.Now()
		}
		inputs = append(inputs, produce(b, c, e.in, severityMessage(id, "Medium", nil))...)
	}
	outs, _ := tl.waitFor(5*time.Minute, "an output for every alert and an update for every unavailable one", func(outs []output, _ []deadLetter) bool {
		first, updated := firstAndUpdates(outs)
		for _, ev := range inputs {
			o, ok := first[ev.Marker]
			if !ok {
				return false
			}
			if _, ok := updated[ev.Marker]; o.Env.Enrichment.Status == "unavailable" && !ok {
				return false
			}
		}
		return true
	})
	first, updated := firstAndUpdates(outs)
	var dead, enrichedAfter2s, producedAfter2s int
	for _, call := range e.sim.Calls() {
		if !call.Time.Before(down) && call.Time.Before(back) {
			dead++
		}
	}
	firstEnriched := time.Duration(-1)
	var unavailable, left int
	for _, ev := range inputs {
		o := first[ev.Marker]
		if o.Env.Enrichment.Status == "enriched" && o.EnrichedAt().After(back) {
			if d := o.EnrichedAt().Sub(back); firstEnriched < 0 || d < firstEnriched {
				firstEnriched = d
			}
		}
		if ev.Produced.After(back.Add(2 * time.Second)) {
			producedAfter2s++
			if o.Env.Enrichment.Status == "enriched" {
				enrichedAfter2s++
			}
		}
		if o.Env.Enrichment.Status == "unavailable" {
			unavailable++
			if u, ok := updated[ev.Marker]; !ok || u.Env.Enrichment.Status != "enriched" {
				left++
			}
		}
	}
	b.Logf("outage: %d alerts, %d calls reached the dead API, first enriched alert %.1f s after its return, %d of %d alerts produced 2 s after the return enriched at once, %d published unavailable, %d left without their user after the updates",
		len(inputs), dead, firstEnriched.Seconds(), enrichedAfter2s, producedAfter2s, unavailable, left)
	b.ReportMetric(float64(dead), "calls-during-outage")
	b.ReportMetric(firstEnriched.Seconds(), "s-to-first-enriched")
	b.ReportMetric(float64(left), "left-unavailable")
	b.ReportMetric(0, "ns/op")
	if dead > 15 {
		b.Errorf("%d calls reached the dead API, want at most 15", dead)
	}
	if enrichedAfter2s != producedAfter2s {
		b.Errorf("%d of %d alerts produced 2 s after the API's return were enriched, want all", enrichedAfter2s, producedAfter2s)
	}
	if left != 0 {
		b.Errorf("%d alerts left without their user, want 0", left)
	}
}

func figuresBurst(b *testing.B, c *kafkatest.Cluster) {
	e := newEnv(b, c, 4)
	tl := newTail(b, e)
	p := startBinary(b, binaryVars(e, map[string]string{
		"ENRICHER_MAX_ENRICH_WAIT":      "3s",
		"ENRICHER_DEFENDER_RATE_LIMITS": "10/1s,300/1m",
		"ENRICHER_LOG_LEVEL":            "warn",
	}), "run")
	defer p.Stop(20 * time.Second)

	const n = 2000
	severity := map[string]string{}
	msgs := make([]message, 0, n)
	for i, id := range newAlertIDs(n) {
		s := "Low"
		switch {
		case i%10 == 0:
			s = "High"
		case i%10 <= 3:
			s = "Medium"
		}
		m := severityMessage(id, s, nil)
		severity[m.Events[0].Marker] = s
		msgs = append(msgs, m)
	}
	start := time.Now()
	inputs := produce(b, c, e.in, msgs...)
	var allUsers time.Duration
	outs, _ := tl.waitFor(20*time.Minute, "every alert with its user", func(outs []output, _ []deadLetter) bool {
		first, updated := firstAndUpdates(outs)
		for _, ev := range inputs {
			if first[ev.Marker].Env.Enrichment.Status != "enriched" && updated[ev.Marker].Env.Enrichment.Status != "enriched" {
				return false
			}
		}
		allUsers = time.Since(start)
		return true
	})
	first, _ := firstAndUpdates(outs)
	total, enriched := map[string]int{}, map[string]int{}
	var lastFirst time.Time
	for _, ev := range inputs {
		o := first[ev.Marker]
		s := severity[ev.Marker]
		total[s]++
		if o.Env.Enrichment.Status == "enriched" {
			enriched[s]++
		}
		if o.Seen.After(lastFirst) {
			lastFirst = o.Seen
		}
	}
	var parts []string
	for _, s := range []string{"High", "Medium", "Low"} {
		share := 100 * float64(enriched[s]) / float64(total[s])
		parts = append(parts, fmt.Sprintf("%s %d/%d (%.0f%%)", s, enriched[s], total[s], share))
		b.ReportMetric(share, "%-first-enriched-"+strings.ToLower(s))
	}
	b.Logf("burst: %d alerts, every first event out %.1f s after the burst; enriched on the first event: %s; every alert had its user after %.0f s, %d API calls",
		n, lastFirst.Sub(start).Seconds(), strings.Join(parts, ", "), allUsers.Seconds(), e.sim.CallCount())
	b.ReportMetric(allUsers.Seconds(), "s-until-every-user")
	b.ReportMetric(0, "ns/op")
	if enriched["High"] < enriched["Medium"] || enriched["Medium"] < enriched["Low"] {
		b.Errorf("first-event enrichment does not follow severity: %v", enriched)
	}
}

func figuresUsers(b *testing.B, c *kafkatest.Cluster) {
	pool := simulator.NewUserPool(100, 7)
	e := newEnv(b, c, 4, simulator.Options{Users: pool.Users()})
	tl := newTail(b, e)
	p := startBinary(b, binaryVars(e, map[string]string{
		"ENRICHER_DEFENDER_RATE_LIMITS": "1000/1s",
		"ENRICHER_LOG_LEVEL":            "warn",
	}), "run")
	defer p.Stop(20 * time.Second)

	var msgs []message
	named := map[string]bool{}
	notFound := 0
	for _, id := range newAlertIDs(1000) {
		u, ok := pool.UserFor(id)
		if !ok {
			notFound++
			msgs = append(msgs, severityMessage(id, "Medium", nil))
			continue
		}
		named[u.AccountSid] = true
		msgs = append(msgs, severityMessage(id, "Medium", &u))
	}
	inputs := produce(b, c, e.in, msgs...)
	outs, _ := tl.waitCovered(5*time.Minute, inputs)
	first, _ := firstAndUpdates(outs)
	sources := map[string]int{}
	for _, ev := range inputs {
		o := first[ev.Marker]
		sources[o.Env.Enrichment.Status+"/"+o.Env.Enrichment.Source]++
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range sources {
			if !yield(k) {
				return
			}
		}
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, sources[k]))
	}
	calls := e.sim.CallCount()
	b.Logf("users: %d alerts naming %d users, %d alerts without a user (404); %d API calls (target at most %d); by status/source: %s",
		len(inputs), len(named), notFound, calls, len(named)+notFound, strings.Join(parts, ", "))
	b.ReportMetric(float64(calls), "api-calls")
	b.ReportMetric(0, "ns/op")
	if calls > len(named)+notFound {
		b.Errorf("%d API calls for %d users and %d 404s, want at most one per user plus the 404s", calls, len(named), notFound)
	}
}
