package simulator_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/simulator"
)

func alertIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("da6374729003828%05d_%d", i, -1364969609+7*i)
	}
	return ids
}

func TestUserPoolDeterministic(t *testing.T) {
	a, b := simulator.NewUserPool(50, 7), simulator.NewUserPool(50, 7)
	if a.Len() != 50 || b.Len() != 50 {
		t.Fatalf("Len = %d, %d, want 50", a.Len(), b.Len())
	}
	for i := range a.Len() {
		if !reflect.DeepEqual(a.At(i), b.At(i)) {
			t.Errorf("user %d differs for one seed: %+v vs %+v", i, a.At(i), b.At(i))
		}
	}
	other := simulator.NewUserPool(50, 8)
	same := 0
	for i := range a.Len() {
		if a.At(i).AccountSid == other.At(i).AccountSid {
			same++
		}
	}
	if same != 0 {
		t.Errorf("seeds 7 and 8 share %d SIDs", same)
	}
	for _, id := range alertIDs(200) {
		u1, ok1 := a.UserFor(id)
		u2, ok2 := b.UserFor(id)
		u3, ok3 := a.UserFor(id)
		if ok1 != ok2 || ok1 != ok3 || !reflect.DeepEqual(u1, u2) || !reflect.DeepEqual(u1, u3) {
			t.Errorf("UserFor(%s) is not one user: %v %+v, %v %+v, %v %+v", id, ok1, u1, ok2, u2, ok3, u3)
		}
	}
	if n := simulator.NewUserPool(0, 1).Len(); n != 1 {
		t.Errorf("NewUserPool(0).Len() = %d, want 1", n)
	}
}

func TestUserPoolUsersAreDistinct(t *testing.T) {
	p := simulator.NewUserPool(1000, 20261127)
	sid := regexp.MustCompile(`^S-1-5-21-\d+-\d+-\d+-\d+$`)
	hex40 := regexp.MustCompile(`^[0-9a-f]{40}$`)
	seen := map[string]map[string]bool{}
	distinct := func(field, v string) {
		if seen[field] == nil {
			seen[field] = map[string]bool{}
		}
		if seen[field][v] {
			t.Errorf("two users share %s %q", field, v)
		}
		seen[field][v] = true
	}
	domainSIDs := map[string]string{}
	for i := range p.Len() {
		u := p.At(i)
		distinct("id", u.ID)
		distinct("accountName", u.AccountName)
		distinct("accountSid", u.AccountSid)
		distinct("aadUserId", u.AADUserID)
		distinct("userPrincipalName", u.UserPrincipalName)
		if u.ID != u.AccountDomain+`\`+u.AccountName || u.AccountName != strings.ToLower(u.AccountName) || u.AccountDomain != strings.ToLower(u.AccountDomain) {
			t.Errorf("id %q, account %q, domain %q", u.ID, u.AccountName, u.AccountDomain)
		}
		if len(u.AccountName) > 20 {
			t.Errorf("account name %q is longer than a sAMAccountName may be", u.AccountName)
		}
		if !sid.MatchString(u.AccountSid) {
			t.Errorf("accountSid %q", u.AccountSid)
		}
		// One domain, one domain SID: the SID less its RID.
		domainSID := u.AccountSid[:strings.LastIndexByte(u.AccountSid, '-')]
		if d, ok := domainSIDs[u.AccountDomain]; ok && d != domainSID {
			t.Errorf("domain %s has SIDs %s and %s", u.AccountDomain, d, domainSID)
		}
		domainSIDs[u.AccountDomain] = domainSID
		if !uuidRE.MatchString(u.AADUserID) || u.UserPrincipalName != u.AccountName+"@"+u.AccountDomain+".com" {
			t.Errorf("aadUserId %q, userPrincipalName %q", u.AADUserID, u.UserPrincipalName)
		}
		if !hex40.MatchString(u.MostPrevalentMachineID) || !hex40.MatchString(u.LeastPrevalentMachineID) ||
			(u.LogOnMachinesCount == 1) != (u.MostPrevalentMachineID == u.LeastPrevalentMachineID) {
			t.Errorf("machines %d, most %q, least %q", u.LogOnMachinesCount, u.MostPrevalentMachineID, u.LeastPrevalentMachineID)
		}
		if u.LastSeen.Before(u.FirstSeen) {
			t.Errorf("lastSeen %v before firstSeen %v", u.LastSeen, u.FirstSeen)
		}
	}
	if len(domainSIDs) < 2 || len(domainSIDs) > 3 {
		t.Errorf("%d domains, want 2 or 3", len(domainSIDs))
	}
}

// TestUserPoolUserFor: many alerts share a user, every user is drawn, and
// the share of alerts with no user is about 5%.
func TestUserPoolUserFor(t *testing.T) {
	p := simulator.NewUserPool(20, 3)
	const n = 10000
	perUser := map[string]int{}
	none := 0
	for _, id := range alertIDs(n) {
		u, ok := p.UserFor(id)
		if !ok {
			none++
			continue
		}
		perUser[u.AccountSid]++
	}
	if none < n*4/100 || none > n*6/100 {
		t.Errorf("%d of %d alert ids have no user, want about 5%%", none, n)
	}
	if len(perUser) != p.Len() {
		t.Errorf("%d of the %d users drawn", len(perUser), p.Len())
	}
	for sid, k := range perUser {
		if k < (n-none)/p.Len()/2 {
			t.Errorf("user %s drawn only %d times in %d", sid, k, n-none)
		}
	}
}

func TestUserPoolAnswer(t *testing.T) {
	p := simulator.NewUserPool(10, 1)
	u := p.At(3)
	a := u.Answer()
	// The fields of the documented example, less @odata.context, which the
	// Server adds.
	want := []string{"accountDomain", "accountName", "accountSid", "firstSeen", "id", "isDomainAdmin", "isOnlyNetworkUser",
		"lastSeen", "leastPrevalentMachineId", "logOnMachinesCount", "logonTypes", "mostPrevalentMachineId"}
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, want) {
		t.Fatalf("answer fields %v, want %v", keys, want)
	}
	synthetic := make([]string, 0, len(want))
	for k := range simulator.SyntheticUser("x") {
		synthetic = append(synthetic, k)
	}
	slices.Sort(synthetic)
	if !slices.Equal(synthetic, want) {
		t.Errorf("SyntheticUser's fields %v differ from a pool user's %v", synthetic, want)
	}
	if a["id"] != u.ID || a["accountSid"] != u.AccountSid || a["logOnMachinesCount"] != u.LogOnMachinesCount ||
		a["firstSeen"] != u.FirstSeen.Format(time.RFC3339) || !strings.HasSuffix(a["lastSeen"].(string), "Z") {
		t.Errorf("answer %v for user %+v", a, u)
	}
	a["id"] = "changed"
	if u.Answer()["id"] != u.ID {
		t.Error("Answer shares its map between calls")
	}
}

// TestUserPoolServed: the Server answers the pool's user for an alert id,
// and a 404 for an id the pool has no user for.
func TestUserPoolServed(t *testing.T) {
	t.Parallel()
	p := simulator.NewUserPool(5, 11)
	s := start(t, simulator.Options{Users: p.Users()})
	tok := token(t, s)
	var found, missing int
	for _, id := range alertIDs(60) {
		u, ok := p.UserFor(id)
		r := do(t, s, http.MethodGet, userPath(id), tok)
		if !ok {
			missing++
			if r.status != http.StatusNotFound {
				t.Errorf("%s: status %d, want 404 for an alert with no user", id, r.status)
			} else {
				checkAPIError(t, r, "NotFound")
			}
			continue
		}
		found++
		want := u.Answer()
		want["@odata.context"] = s.URL() + "/api/$metadata#Users/$entity"
		b, _ := json.Marshal(want)
		var w map[string]any
		_ = json.Unmarshal(b, &w)
		if r.status != http.StatusOK || !equalJSON(r.body, w) {
			t.Errorf("%s: %d %v\nwant 200 %v", id, r.status, r.body, w)
		}
	}
	if found == 0 || missing == 0 {
		t.Errorf("%d ids with a user, %d without: the sample checks only one kind", found, missing)
	}
}
