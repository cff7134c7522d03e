package cache_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/cache"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// TestOneCallPerUser is the figure of "one call per user": 1,000 alerts
// over 100 users, each alert naming its user, looked up all at once
// through the cache in front of the real client, against the simulator
// over TLS with a real token. Twenty of the alerts are unknown to the API
// (404), one for each of twenty users. The API is asked at most once per
// user plus once per unknown alert.
func TestOneCallPerUser(t *testing.T) {
	t.Parallel()
	const alerts, users = 1000, 100
	user := make([]map[string]any, users)
	for j := range user {
		u := simulator.SyntheticUser(fmt.Sprintf("user-%d", j))
		u["accountDomain"], u["accountName"] = "contoso", fmt.Sprintf("user%03d", j)
		u["id"] = `contoso\` + u["accountName"].(string)
		u["accountSid"] = fmt.Sprintf("S-1-5-21-1004336348-1177238915-682003330-%d", 10000+j)
		user[j] = u
	}
	alertID := func(i int) string { return fmt.Sprintf("da638458473376270421_%d", 1_000_000+i) }
	// Alert i is about user i%100; one alert of each of users 0 to 19 is
	// unknown to the API.
	unknown := func(i int) bool { return i%users < 20 && i/users == i%10 }
	index := make(map[string]int, alerts)
	for i := range alerts {
		index[alertID(i)] = i
	}
	s, err := simulator.New(simulator.Options{Users: func(id string) (map[string]any, bool) {
		i, ok := index[id]
		if !ok || unknown(i) {
			return nil, false
		}
		return user[i%users], true
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	reg := prometheus.NewRegistry()
	c := newReuseStack(t, s, reg)

	// How the alerts name their user: by SID and name, by name, by name in
	// capitals. Each shares the domain\name with the others, so that
	// whichever alert's call comes first is found by all of them.
	ref := func(i int) defender.UserRef {
		u := user[i%users]
		switch i % 3 {
		case 0:
			return defender.UserRef{SID: u["accountSid"].(string), Domain: "contoso", Name: u["accountName"].(string)}
		case 1:
			return defender.UserRef{Domain: "contoso", Name: u["accountName"].(string)}
		default:
			return defender.UserRef{Domain: "CONTOSO", Name: strings.ToUpper(u["accountName"].(string))}
		}
	}
	results := make([]cache.Result, alerts)
	errs := make([]error, alerts)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range alerts {
		wg.Go(func() {
			<-start
			results[i], errs[i] = c.LookupFor(context.Background(), alertID(i), ref(i))
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)

	byUser, unknownAnswered := 0, 0
	for i := range alerts {
		r, err := results[i], errs[i]
		want := user[i%users]["id"]
		switch {
		case err == nil && r.User != nil && r.User.ID == want:
			if r.ByUser {
				byUser++
			}
			if unknown(i) && !r.ByUser {
				t.Errorf("alert %d is unknown to the API but got %+v", i, r)
			}
		case unknown(i) && errors.Is(err, defender.ErrNotFound) && !r.ByUser:
			unknownAnswered++
		default:
			t.Errorf("alert %d (user %v): %+v, %v", i, want, r, err)
		}
	}
	found := make(map[int]int) // user: calls answered 200
	notFound, other := 0, 0
	for _, call := range s.Calls() {
		i, ok := index[call.AlertID]
		switch {
		case !ok:
			other++
		case call.Status == 200:
			found[i%users]++
		case call.Status == 404 && unknown(i):
			notFound++
		default:
			other++
		}
	}
	calls := len(s.Calls())
	t.Logf("%d alerts over %d users, each naming its user, looked up at once: %d API calls (%d found, %d 404s of 20 unknown alerts, %d other); "+
		"%d answered with another alert's user; %v", alerts, users, calls, calls-notFound-other, notFound, other, byUser, took.Round(time.Millisecond))
	for j := range users {
		if found[j] != 1 {
			t.Errorf("user %d: %d calls answered 200, want 1", j, found[j])
		}
	}
	if other != 0 || notFound > 20 || notFound != unknownAnswered {
		t.Errorf("%d other calls, %d 404s for %d unknown alerts answered 404; want 0 and at most 20, one per 404 answer", other, notFound, unknownAnswered)
	}
	if byUser != alerts-calls {
		t.Errorf("%d answers by user for %d calls; want every lookup without a call to be one", byUser, calls)
	}
	if got := counterValue(t, reg, "enricher_user_reuse_total"); got != byUser {
		t.Errorf("enricher_user_reuse_total = %d, want %d", got, byUser)
	}
	if c.InFlight() != 0 {
		t.Errorf("InFlight = %d", c.InFlight())
	}
}

// newReuseStack is the cache with ReuseUser in front of the real client
// and a budget that does not throttle, against s.
func newReuseStack(t *testing.T, s *simulator.Server, reg prometheus.Registerer) *cache.Cache {
	t.Helper()
	ls, err := budget.ParseLimits("100000/1s")
	if err != nil {
		t.Fatal(err)
	}
	w, err := budget.New(ls, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	ep, err := defender.ResolveEndpoint(s.URL(), s.Scope(), s.AuthorityHost())
	if err != nil {
		t.Fatal(err)
	}
	cred, err := s.Credential()
	if err != nil {
		t.Fatal(err)
	}
	client, err := defender.New(defender.Options{
		Endpoint: ep, Credential: cred, Budget: w, HTTPClient: s.Client(),
		BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(client, cache.Options{
		Store: cache.NewLRU(10_000, time.Hour), Users: cache.NewLRU(10_000, time.Hour), ReuseUser: true, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func counterValue(t *testing.T, g prometheus.Gatherer, name string) int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return int(mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	t.Fatalf("no %s", name)
	return 0
}
