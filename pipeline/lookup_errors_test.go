package pipeline_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/breaker"
	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/cache"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/pipeline"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// simulatedStack is the connector's lookup stack (cache, breaker, client,
// budget) against a simulator, with the client-secret credential given
// secret.
func simulatedStack(t *testing.T, secret string) *cache.Cache {
	t.Helper()
	s, err := simulator.New(simulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	vars := map[string]string{"AZURE_TENANT_ID": s.TenantID(), "AZURE_CLIENT_ID": s.ClientID(), "AZURE_CLIENT_SECRET": secret}
	cred, err := defender.NewCredential(defender.CredentialClientSecret, defender.CredentialOptions{
		AuthorityHost: s.AuthorityHost(), DisableInstanceDiscovery: true, HTTPClient: s.Client(),
		Getenv: func(k string) string { return vars[k] },
	})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := defender.ResolveEndpoint(s.URL(), s.Scope(), s.AuthorityHost())
	if err != nil {
		t.Fatal(err)
	}
	limits, _ := budget.ParseLimits("100000/1m")
	w, err := budget.New(limits, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	b, err := breaker.New(breaker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := defender.New(defender.Options{Endpoint: ep, Credential: cred, Budget: w, Breaker: b, HTTPClient: s.Client(), BaseBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cache.New(c, cache.Options{Store: cache.NewLRU(1000, time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

// TestWaitPolicyPublishesRefusedCredential: with Wait, alerts whose token
// Entra ID refuses (a wrong secret) are published failed at once, with a
// short account of Entra's answer, instead of holding the partition for
// ever.
func TestWaitPolicyPublishesRefusedCredential(t *testing.T) {
	r := newRig(t, pipeline.Config{Wait: true, WaitRetry: 10 * time.Millisecond}, simulatedStack(t, "wrong-secret"), 1)
	r.produce(t, 0, idA, idB, idA)
	for _, ev := range r.read(t, 3) {
		e := ev.Enrichment
		if e.Status != "failed" || !strings.Contains(e.Error, "invalid_client") || !strings.Contains(e.Error, "AADSTS7000215") || len(e.Error) > defender.MaxErrorText {
			t.Fatalf("enrichment = %+v", e)
		}
	}
}

// TestWaitPolicyHoldsThrottling: with Wait, a 429 that outlasted the
// client's attempts is held and looked up again, not published failed.
func TestWaitPolicyHoldsThrottling(t *testing.T) {
	var n atomic.Int64
	lk := &fakeLookup{answer: func(context.Context, string) (*defender.User, error) {
		if n.Add(1) < 3 {
			return nil, &defender.APIError{StatusCode: 429, Code: "TooManyRequests", Attempts: 4}
		}
		return testUser(t, "user1"), nil
	}}
	r := newRig(t, pipeline.Config{Wait: true, WaitRetry: 10 * time.Millisecond}, lk, 1)
	r.produce(t, 0, idA)
	if got := r.read(t, 1); got[0].Enrichment.Status != "enriched" {
		t.Fatalf("enrichment = %+v, want enriched after waiting", got[0].Enrichment)
	}
	if n.Load() != 3 {
		t.Fatalf("%d lookups, want 3", n.Load())
	}
}

// TestErrorTextIsBounded: Defender's message is cut for enrichment.error,
// which keeps the status and the correlation id: a 1 MiB message does not
// push the event over the size limit into the dead-letter topic.
func TestErrorTextIsBounded(t *testing.T) {
	lk := &fakeLookup{answer: func(context.Context, string) (*defender.User, error) {
		return nil, &defender.APIError{StatusCode: 403, Code: "Forbidden", Message: strings.Repeat("denied\n", 150_000), Target: "corr-1"}
	}}
	r := newRig(t, pipeline.Config{}, lk, 1)
	r.produce(t, 0, idA)
	e := r.read(t, 1)[0].Enrichment
	if e.Status != "failed" || len(e.Error) > defender.MaxErrorText || strings.Contains(e.Error, "\n") ||
		!strings.Contains(e.Error, "403 Forbidden (correlation id corr-1): Forbidden: denied denied") {
		t.Fatalf("enrichment = %+v", e)
	}
}
