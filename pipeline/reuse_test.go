package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/cache"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/pipeline"
)

// CachedFor and LookupFor make fakeLookup a pipeline.Lookup that pays no
// heed to the user an alert names.
func (f *fakeLookup) CachedFor(id string, _ defender.UserRef) (cache.Result, error, bool) {
	u, err, ok := f.Cached(id)
	return cache.Result{User: u, Cached: ok}, err, ok
}

func (f *fakeLookup) LookupFor(ctx context.Context, id string, _ defender.UserRef) (cache.Result, error) {
	return f.Lookup(ctx, id)
}

// userLookup is a pipeline.Lookup that knows users: the alert ids in hits
// are kept; a user in kept is answered to CachedFor for any alert naming
// it exactly, and one in flying to LookupFor, both ByUser; anything else
// is a call answering other. It records the refs it is given.
type userLookup struct {
	hits         map[string]*defender.User
	kept, flying []*defender.User
	other        *defender.User
	mu           sync.Mutex
	cachedFor    map[string][]defender.UserRef // by alert id
	lookupFor    map[string][]defender.UserRef
}

func (l *userLookup) CachedFor(id string, ref defender.UserRef) (cache.Result, error, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cachedFor[id] = append(l.cachedFor[id], ref)
	if u, ok := l.hits[id]; ok {
		return cache.Result{User: u, Cached: true}, nil, true
	}
	if u := named(l.kept, ref); u != nil {
		return cache.Result{User: u, Cached: true, ByUser: true}, nil, true
	}
	return cache.Result{}, nil, false
}

func (l *userLookup) LookupFor(_ context.Context, id string, ref defender.UserRef) (cache.Result, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lookupFor[id] = append(l.lookupFor[id], ref)
	if u := named(l.flying, ref); u != nil {
		return cache.Result{User: u, ByUser: true}, nil
	}
	return cache.Result{User: l.other}, nil
}

func named(users []*defender.User, ref defender.UserRef) *defender.User {
	for _, u := range users {
		if u.Is(ref) {
			return u
		}
	}
	return nil
}

func (l *userLookup) refs(id string) (cachedFor, lookupFor []defender.UserRef) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cachedFor[id], l.lookupFor[id]
}

// TestUserCacheSource: an alert that misses the cache is looked up with the
// one user it names, and an answer given for that user is published with
// source user_cache; an alert answered by its own id is looked up without
// its hints being read.
func TestUserCacheSource(t *testing.T) {
	const (
		idKept   = "da637472900382838869_1364969609"  // names a kept user
		idFlying = "da637308392288907382_-880718168"  // names a user another alert's call finds
		idNone   = "636688558380765161_2136280442"    // names nobody
		idHit    = "da638458473376270421_-1259470431" // kept under its own id
		idRecord = "da638769935314293956_-1318848806" // an AlertEvidence record naming a kept user by SID
		sid      = "S-1-5-21-72051607-1745760036-109187956-93922"
	)
	parse := func(s string) *defender.User {
		u, err := defender.ParseUser([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	user1 := parse(`{"id":"contoso\\user1","accountSid":"` + sid + `"}`)
	user2 := parse(`{"id":"contoso\\user2"}`)
	lk := &userLookup{
		hits:      map[string]*defender.User{idHit: parse(`{"id":"contoso\\hit"}`)},
		kept:      []*defender.User{user1},
		flying:    []*defender.User{user2},
		other:     parse(`{"id":"contoso\\other"}`),
		cachedFor: map[string][]defender.UserRef{},
		lookupFor: map[string][]defender.UserRef{},
	}
	r := newRig(t, pipeline.Config{MaxEnrichWait: time.Minute}, lk, 1)
	alert := func(id, related string) []byte {
		return fmt.Appendf(nil, `{"id":%q,"severity":"High","title":"Suspicious process","relatedUser":%s}`, id, related)
	}
	r.c.Produce(t, r.in,
		kafkatest.Record{Key: []byte(idKept), Value: alert(idKept, `{"userName":"user1","domainName":"CONTOSO"}`)},
		kafkatest.Record{Key: []byte(idFlying), Value: alert(idFlying, `{"userName":"user2","domainName":"contoso"}`)},
		kafkatest.Record{Key: []byte(idNone), Value: alert(idNone, `null`)},
		kafkatest.Record{Key: []byte(idHit), Value: alert(idHit, `{"userName":"user1","domainName":"contoso"}`)},
		kafkatest.Record{Key: []byte(idRecord), Value: fmt.Appendf(nil, `{"records":[{"category":"AdvancedHunting-AlertEvidence","properties":`+
			`{"AlertId":%q,"Severity":"Low","EntityType":"User","AccountSid":%q}}]}`, idRecord, sid)},
	)
	type out struct {
		AlertID string          `json:"alertId"`
		User    json.RawMessage `json:"user"`
		Enr     struct {
			Status string `json:"status"`
			Source string `json:"source"`
		} `json:"enrichment"`
	}
	got := map[string]out{}
	for _, rec := range r.c.ReadN(t, r.out, 5, 30*time.Second) {
		var o out
		if err := json.Unmarshal(rec.Value, &o); err != nil {
			t.Fatal(err)
		}
		got[o.AlertID] = o
	}
	want := map[string]struct{ source, user string }{
		idKept:   {"user_cache", `contoso\user1`},
		idFlying: {"user_cache", `contoso\user2`},
		idNone:   {"api", `contoso\other`},
		idHit:    {"cache", `contoso\hit`},
		idRecord: {"user_cache", `contoso\user1`},
	}
	for id, w := range want {
		o := got[id]
		var u struct{ ID string }
		_ = json.Unmarshal(o.User, &u)
		if o.Enr.Status != "enriched" || o.Enr.Source != w.source || u.ID != w.user {
			t.Errorf("%s: %s from %q with user %q; want enriched from %q with %q", id, o.Enr.Status, o.Enr.Source, u.ID, w.source, w.user)
		}
	}

	zero := defender.UserRef{}
	checks := []struct {
		id                   string
		cachedFor, lookupFor []defender.UserRef
	}{
		// Answered from the kept user: no lookup.
		{idKept, []defender.UserRef{zero, {Domain: "CONTOSO", Name: "user1"}}, nil},
		{idFlying, []defender.UserRef{zero, {Domain: "contoso", Name: "user2"}}, []defender.UserRef{{Domain: "contoso", Name: "user2"}}},
		// Names nobody: no second try of the cache.
		{idNone, []defender.UserRef{zero}, []defender.UserRef{zero}},
		// A hit: the hints are not read.
		{idHit, []defender.UserRef{zero}, nil},
		{idRecord, []defender.UserRef{zero, {SID: sid}}, nil},
	}
	for _, c := range checks {
		cf, lf := lk.refs(c.id)
		if fmt.Sprint(cf) != fmt.Sprint(c.cachedFor) || fmt.Sprint(lf) != fmt.Sprint(c.lookupFor) {
			t.Errorf("%s: CachedFor with %+v, LookupFor with %+v; want %+v and %+v", c.id, cf, lf, c.cachedFor, c.lookupFor)
		}
	}
	waitUntil(t, "every event acknowledged", func() bool { return r.pipeline.Stats().Total() == 5 })
	if s := r.pipeline.Stats(); s.FromCache != 4 || s.Enriched != 5 {
		t.Errorf("stats %+v: want 5 enriched, 4 of them from the cache", s)
	}
}
