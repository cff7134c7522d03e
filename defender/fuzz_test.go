package defender_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/defender"
)

// validAlertID is the contract's definition of an alert id, written
// independently of defender.ValidAlertID.
var validAlertID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// tripwireBudget fails the test if a call is asked for when none may be,
// and otherwise refuses the call so that nothing reaches the network.
type tripwireBudget struct {
	t        *testing.T
	allowed  bool
	acquired atomic.Int32
}

var errNoCallsWhileFuzzing = errors.New("no calls while fuzzing")

func (b *tripwireBudget) Acquire(context.Context) (func(), error) {
	b.acquired.Add(1)
	if !b.allowed {
		b.t.Error("Budget.Acquire called for an invalid alert id")
	}
	return nil, errNoCallsWhileFuzzing
}

func (b *tripwireBudget) PauseUntil(time.Time) { b.t.Error("PauseUntil called while fuzzing") }

// FuzzValidAlertID checks that an alert id is valid exactly when it is 1 to
// 128 characters of A-Z a-z 0-9 _ -, that a valid id escapes to itself in a
// URL path, and that an invalid id never comes near a call: neither a token
// nor the budget is asked for.
//
// The seed corpus is in testdata/fuzz/FuzzValidAlertID; fuzz with
//
//	go test -run '^$' -fuzz FuzzValidAlertID -fuzztime 60s ./defender/
func FuzzValidAlertID(f *testing.F) {
	for _, s := range []string{
		"da637472900382838869_1364969609", "da637308392288907382_-880718168", "636688558380765161_2136280442",
		"", "a", "../../machines", "a/b", "a?b=c", "a%2Fb", "a b", "é", "a\x00b", "-", "_",
	} {
		f.Add(s)
	}
	ep, err := defender.ResolveEndpoint("https://127.0.0.1:1", "https://127.0.0.1:1/.default", "")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, id string) {
		valid := defender.ValidAlertID(id)
		if want := validAlertID.MatchString(id); valid != want {
			t.Fatalf("ValidAlertID(%q) = %v, want %v", id, valid, want)
		}
		if valid && url.PathEscape(id) != id {
			t.Fatalf("valid id %q escapes to %q", id, url.PathEscape(id))
		}
		cred := &staticToken{token: "fuzz"}
		b := &tripwireBudget{t: t, allowed: valid}
		c, err := defender.New(defender.Options{
			Endpoint:   ep,
			Credential: cred,
			Budget:     b,
			HTTPClient: &http.Client{Transport: &refusingTransport{}},
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.User(context.Background(), id)
		if valid {
			if !errors.Is(err, errNoCallsWhileFuzzing) || b.acquired.Load() != 1 {
				t.Fatalf("User(%q) = %v after %d acquisitions, want the budget's refusal after 1", id, err, b.acquired.Load())
			}
			return
		}
		if !errors.Is(err, defender.ErrInvalidAlertID) {
			t.Fatalf("User(%q) = %v, want ErrInvalidAlertID", id, err)
		}
		if n := cred.calls.Load(); n != 0 {
			t.Fatalf("User(%q) asked for a token %d times", id, n)
		}
	})
}
