package defender_test

import (
	"testing"

	"github.com/defender-enricher/defender-enricher/defender"
)

func TestUserRefIsZero(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ref             defender.UserRef
		zero, matchable bool
	}{
		{defender.UserRef{}, true, false},
		{defender.UserRef{SID: "S-1-5-21-1-2-3-1001"}, false, true},
		{defender.UserRef{Domain: "contoso", Name: "user1"}, false, true},
		{defender.UserRef{Domain: "contoso", Name: "user1", SID: "S-1-5-21-1-2-3-1001"}, false, true},
		{defender.UserRef{Name: "user1"}, false, false},
		{defender.UserRef{Domain: "contoso"}, false, false},
	}
	for _, tt := range tests {
		if got := tt.ref.IsZero(); got != tt.zero {
			t.Errorf("%+v.IsZero() = %v, want %v", tt.ref, got, tt.zero)
		}
		if got := tt.ref.Matchable(); got != tt.matchable {
			t.Errorf("%+v.Matchable() = %v, want %v", tt.ref, got, tt.matchable)
		}
	}
}

func TestUserIs(t *testing.T) {
	t.Parallel()
	const sid = "S-1-5-21-3418539524-1496149344-567949748-86813"
	user := &defender.User{ID: `northwind\jonas61`, AccountName: "jonas61", AccountDomain: "northwind", AccountSID: sid}
	noSID := &defender.User{ID: `northwind\jonas61`}
	noID := &defender.User{AccountSID: sid, AccountName: "jonas61", AccountDomain: "northwind"}
	tests := []struct {
		name string
		user *defender.User
		ref  defender.UserRef
		want bool
	}{
		{"SID", user, defender.UserRef{SID: sid}, true},
		{"SID in another case", user, defender.UserRef{SID: "s-1-5-21-3418539524-1496149344-567949748-86813"}, true},
		{"domain and name", user, defender.UserRef{Domain: "northwind", Name: "jonas61"}, true},
		{"domain and name in another case", user, defender.UserRef{Domain: "NORTHWIND", Name: "Jonas61"}, true},
		{"non-ASCII name in another case", &defender.User{ID: `northwind\ÅSA`}, defender.UserRef{Domain: "Northwind", Name: "åsa"}, true},
		{"SID and name agree", user, defender.UserRef{SID: sid, Domain: "northwind", Name: "jonas61"}, true},
		{"SID matches, name differs", user, defender.UserRef{SID: sid, Domain: "contoso", Name: "other"}, true},
		{"name matches, SID differs", user, defender.UserRef{SID: "S-1-5-21-1-2-3-4", Domain: "northwind", Name: "jonas61"}, false},
		{"another SID", user, defender.UserRef{SID: "S-1-5-21-3418539524-1496149344-567949748-86814"}, false},
		{"a SID prefix", user, defender.UserRef{SID: "S-1-5-21-3418539524-1496149344-567949748-8681"}, false},
		{"another name", user, defender.UserRef{Domain: "northwind", Name: "jonas6"}, false},
		{"another domain", user, defender.UserRef{Domain: "contoso", Name: "jonas61"}, false},
		{"a fully qualified domain", user, defender.UserRef{Domain: "northwind.local", Name: "jonas61"}, false},
		{"name only", user, defender.UserRef{Name: "jonas61"}, false},
		{"domain only", user, defender.UserRef{Domain: "northwind"}, false},
		{"the whole id as the name", user, defender.UserRef{Domain: "", Name: `northwind\jonas61`}, false},
		{"the name with a trailing space", user, defender.UserRef{Domain: "northwind", Name: "jonas61 "}, false},
		{"the name split elsewhere", user, defender.UserRef{Domain: `northwind\jon`, Name: "as61"}, false},
		{"zero ref", user, defender.UserRef{}, false},
		{"a user without a SID, by SID", noSID, defender.UserRef{SID: sid}, false},
		{"a user without a SID, by name", noSID, defender.UserRef{SID: sid, Domain: "northwind", Name: "jonas61"}, true},
		{"a user without an id, by name", noID, defender.UserRef{Domain: "northwind", Name: "jonas61"}, false},
		{"a user without an id, by SID", noID, defender.UserRef{SID: sid}, true},
		{"an empty user", &defender.User{}, defender.UserRef{SID: "", Domain: "", Name: ""}, false},
		{"nil user", nil, defender.UserRef{SID: sid}, false},
	}
	for _, tt := range tests {
		if got := tt.user.Is(tt.ref); got != tt.want {
			t.Errorf("%s: Is(%+v) = %v, want %v", tt.name, tt.ref, got, tt.want)
		}
	}
}
