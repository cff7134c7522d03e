package demo

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/defender-enricher/defender-enricher/simulator"
)

// named is a user as an alert names it.
type named struct{ name, domain, sid string }

func (n named) is(u simulator.PoolUser) bool {
	return strings.EqualFold(n.name, u.AccountName) && strings.EqualFold(n.domain, u.AccountDomain) && (n.sid == "" || n.sid == u.AccountSid)
}

// objectNames reads what an alerts API object names: relatedUser (nil when
// null) and its User evidence, in order.
func objectNames(t *testing.T, b []byte) (id, severity string, related *named, evidence []named) {
	t.Helper()
	var v struct {
		ID          string `json:"id"`
		Severity    string `json:"severity"`
		RelatedUser *struct {
			UserName   string `json:"userName"`
			DomainName string `json:"domainName"`
		} `json:"relatedUser"`
		Evidence []map[string]any `json:"evidence"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("alert object %s: %v", b, err)
	}
	if v.RelatedUser != nil {
		related = &named{name: v.RelatedUser.UserName, domain: v.RelatedUser.DomainName}
	}
	for _, e := range v.Evidence {
		if e["entityType"] != "User" {
			if e["accountName"] != nil || e["userSid"] != nil {
				t.Errorf("%s: %v evidence names an account", v.ID, e["entityType"])
			}
			continue
		}
		s := func(k string) string { x, _ := e[k].(string); return x }
		evidence = append(evidence, named{s("accountName"), s("domainName"), s("userSid")})
		if s("aadUserId") == "" || !strings.Contains(s("userPrincipalName"), "@") {
			t.Errorf("%s: user evidence without aadUserId or userPrincipalName: %v", v.ID, e)
		}
	}
	return v.ID, v.Severity, related, evidence
}

// envelopeAlert is what the records of one alert in an envelope name.
type envelopeAlert struct {
	severity string
	infos    int
	users    []named
}

func envelopeNames(t *testing.T, b []byte) map[string]*envelopeAlert {
	t.Helper()
	var v struct {
		Records []struct {
			Category   string         `json:"category"`
			Properties map[string]any `json:"properties"`
		} `json:"records"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("envelope %s: %v", b, err)
	}
	alerts := map[string]*envelopeAlert{}
	for _, r := range v.Records {
		s := func(k string) string { x, _ := r.Properties[k].(string); return x }
		id := s("AlertId")
		a := alerts[id]
		if a == nil {
			a = &envelopeAlert{severity: s("Severity")}
			alerts[id] = a
		}
		if s("Severity") != a.severity {
			t.Errorf("%s: records of severities %q and %q", id, a.severity, s("Severity"))
		}
		switch {
		case r.Category == "AdvancedHunting-AlertInfo":
			a.infos++
			if s("AccountSid") != "" || s("AccountName") != "" {
				t.Errorf("%s: an AlertInfo record names an account", id)
			}
		case s("EntityType") == "User":
			a.users = append(a.users, named{s("AccountName"), s("AccountDomain"), s("AccountSid")})
			if s("AccountObjectId") == "" || s("AccountUpn") == "" {
				t.Errorf("%s: user evidence record %v", id, r.Properties)
			}
		case s("AccountSid") != "" || s("AccountName") != "":
			t.Errorf("%s: %s evidence names an account", id, s("EntityType"))
		}
	}
	return alerts
}

// checkNames: whatever an alert names, its first user is the pool's user
// for its id, relatedUser agrees, and any other user is another of the
// pool.
func checkNames(t *testing.T, pool *simulator.UserPool, sids map[string]bool, id string, related *named, users []named) {
	t.Helper()
	u, ok := pool.UserFor(id)
	if len(users) == 0 {
		if related != nil {
			t.Errorf("%s: relatedUser %v without user evidence", id, *related)
		}
		return
	}
	if !ok {
		t.Errorf("%s: the pool has no user for it, but the alert names %v", id, users)
		return
	}
	if !users[0].is(u) {
		t.Errorf("%s: names %v first, the pool's user is %s %s", id, users[0], u.ID, u.AccountSid)
	}
	if related != nil && !related.is(u) {
		t.Errorf("%s: relatedUser %v, the pool's user is %s", id, *related, u.ID)
	}
	for _, n := range users[1:] {
		if n.sid == u.AccountSid || !sids[n.sid] {
			t.Errorf("%s: names %v besides its user %s: not another user of the pool", id, n, u.ID)
		}
	}
}

func poolSIDs(pool *simulator.UserPool) map[string]bool {
	sids := map[string]bool{}
	for i := range pool.Len() {
		sids[pool.At(i).AccountSid] = true
	}
	return sids
}

// TestGeneratorNamesThePoolsUser: every alert, as an alerts API object and
// as streaming-API records, names the pool's user for its id, and exactly
// the chosen shares of the known alerts name none or several.
func TestGeneratorNamesThePoolsUser(t *testing.T) {
	pool := simulator.NewUserPool(poolSize, defaultSeed)
	g := newGenerator(defaultSeed, pool)
	sids := poolSIDs(pool)
	now := time.Now().UTC()

	if len(g.known) != knownAlerts || len(g.unknown) != unknownAlerts || len(g.other) != otherAlerts {
		t.Fatalf("%d known, %d unknown, %d other alerts", len(g.known), len(g.unknown), len(g.other))
	}
	counts := map[string]int{}
	severities := map[string]int{}
	perUser := map[string]int{}
	for _, id := range g.known {
		if _, ok := pool.UserFor(id); !ok {
			t.Errorf("known alert %s has no user in the pool", id)
		}
		gotID, severity, related, users := objectNames(t, g.alertObject(id, now))
		if gotID != id {
			t.Fatalf("alert object of %s has id %s", id, gotID)
		}
		checkNames(t, pool, sids, id, related, users)
		severities[severity]++
		switch {
		case len(users) == 0:
			counts["none"]++
		case len(users) > 1:
			counts["several"]++
		case related == nil:
			counts["evidence only"]++
		default:
			counts["one"]++
		}
		if len(users) > 0 {
			perUser[users[0].sid]++
		}

		b, _ := json.Marshal(map[string]any{"records": g.records(id, now)})
		env := envelopeNames(t, b)[id]
		if env == nil || env.infos != 1 || env.severity != severity || len(env.users) != len(users) {
			t.Errorf("%s: records %+v, alert object of severity %s naming %v", id, env, severity, users)
			continue
		}
		for i := range users {
			if env.users[i].sid != users[i].sid || !strings.EqualFold(env.users[i].domain, users[i].domain) {
				t.Errorf("%s: records name %v, the alert object %v", id, env.users, users)
			}
		}
	}
	want := map[string]int{"none": namingNone, "several": namingSeveral, "evidence only": evidenceOnly,
		"one": knownAlerts - namingNone - namingSeveral - evidenceOnly}
	for k, n := range want {
		if counts[k] != n {
			t.Errorf("%d known alerts name %s, want %d (counts %v)", counts[k], k, n, counts)
		}
	}
	if namingNone != 6 || namingSeveral != 3 {
		t.Errorf("%d of %d alerts name none and %d several, want 10%% and 5%%", namingNone, knownAlerts, namingSeveral)
	}
	wantSeverities := map[string]int{"High": 6, "Medium": 18, "Low": 27, "Informational": 9}
	for s, n := range wantSeverities {
		if severities[s] != n {
			t.Errorf("%d known alerts of severity %s, want %d (%v)", severities[s], s, n, severities)
		}
	}
	repeated := 0
	for _, n := range perUser {
		if n > 1 {
			repeated++
		}
	}
	if repeated == 0 {
		t.Errorf("no user is named by two alerts: %v", perUser)
	}

	for _, id := range g.unknown {
		if _, ok := pool.UserFor(id); ok {
			t.Errorf("unknown alert %s has a user in the pool", id)
		}
		_, _, related, users := objectNames(t, g.alertObject(id, now))
		if related != nil || len(users) != 0 {
			t.Errorf("unknown alert %s names %v %v", id, related, users)
		}
	}
}

// TestGeneratorStream: the messages of the stream, in both forms, name
// their users as the pool has them, and every naming and form occurs.
func TestGeneratorStream(t *testing.T) {
	pool := simulator.NewUserPool(poolSize, 7)
	g := newGenerator(7, pool)
	sids := poolSIDs(pool)
	seen := map[string]bool{}
	for range 2000 {
		key, value, malformed := g.next()
		switch {
		case malformed:
			seen["malformed"] = true
		case key == nil:
			for id, a := range envelopeNames(t, value) {
				checkNames(t, pool, sids, id, nil, a.users)
				if a.infos != 1 {
					t.Errorf("%s: %d AlertInfo records in one envelope", id, a.infos)
				}
				seen["envelope naming "+naming(len(a.users))] = true
			}
		default:
			id, _, related, users := objectNames(t, value)
			if id != string(key) {
				t.Errorf("key %s, alert id %s", key, id)
			}
			checkNames(t, pool, sids, id, related, users)
			seen["object naming "+naming(len(users))] = true
		}
	}
	for _, k := range []string{"malformed", "object naming none", "object naming one", "object naming several",
		"envelope naming none", "envelope naming one", "envelope naming several"} {
		if !seen[k] {
			t.Errorf("no %s in 2000 messages", k)
		}
	}
}

func naming(n int) string {
	switch n {
	case 0:
		return "none"
	case 1:
		return "one"
	}
	return "several"
}

// TestDemoSimulatorAnswersThePoolsUser: the demo's Defender answers, for
// every alert the generator makes, the user the alert names.
func TestDemoSimulatorAnswersThePoolsUser(t *testing.T) {
	pool := simulator.NewUserPool(poolSize, defaultSeed)
	g := newGenerator(defaultSeed, pool)
	sim, err := newSimulator(pool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	cred, err := sim.Credential()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cred.GetToken(t.Context(), policy.TokenRequestOptions{Scopes: []string{sim.Scope()}})
	if err != nil {
		t.Fatal(err)
	}
	ask := func(id string) (int, map[string]any) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, sim.URL()+"/api/alerts/"+id+"/user", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		resp, err := sim.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		return resp.StatusCode, body
	}
	now := time.Now().UTC()
	for _, id := range g.known {
		status, body := ask(id)
		u, _ := pool.UserFor(id)
		if status != http.StatusOK || body["id"] != u.ID || body["accountSid"] != u.AccountSid {
			t.Errorf("%s: %d %v, want the pool's user %s %s", id, status, body, u.ID, u.AccountSid)
		}
		if _, _, _, users := objectNames(t, g.alertObject(id, now)); len(users) > 0 && users[0].sid != body["accountSid"] {
			t.Errorf("%s: the alert names %v, Defender answers %v", id, users[0], body["accountSid"])
		}
	}
	for _, id := range g.unknown {
		if status, body := ask(id); status != http.StatusNotFound {
			t.Errorf("%s: %d %v, want 404", id, status, body)
		}
	}
}
