package app

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/config"
)

// runApp starts the connector of cfg and deps and returns the base URL of
// its HTTP endpoints; it stops at cleanup.
func runApp(t *testing.T, cfg config.Config, deps Deps) (*App, string) {
	t.Helper()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.ShutdownTimeout = 5 * time.Second
	a, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(60 * time.Second): // guards against a hang only
			t.Error("the connector did not stop")
		}
	})
	return a, "http://" + a.HTTPAddr()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitCond polls cond until it holds; the deadline only guards against a
// hang.
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// closedAddr is a 127.0.0.1 address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A rollout that cannot work never turns ready: brokers that cannot be
// reached, or an Azure identity that Entra ID refuses. /healthz stays up in
// both: nothing in the process is stuck, and a restart would not help.
func TestNotReadyUntilItCanWork(t *testing.T) {
	t.Run("brokers unreachable", func(t *testing.T) {
		cfg, deps, _, _ := checkConfig(t)
		cfg.KafkaBrokers = []string{closedAddr(t)}
		a, base := runApp(t, cfg, deps)
		// The token comes; the group never does.
		waitCond(t, "the start-up token", a.tokenOK.Load)
		code, body := get(t, base+"/readyz")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "joining the consumer group") {
			t.Errorf("/readyz with no broker: %d %q, want 503 naming the consumer group", code, body)
		}
		if code, body := get(t, base+"/healthz"); code != http.StatusOK {
			t.Errorf("/healthz with no broker: %d %q, want 200", code, body)
		}
		if _, body := get(t, base+"/metrics"); !strings.Contains(body, "\nenricher_ready 0\n") {
			t.Error("/metrics does not say enricher_ready 0")
		}
	})

	t.Run("credential refused", func(t *testing.T) {
		cfg, deps, sim, _ := checkConfig(t)
		env := map[string]string{
			"AZURE_TENANT_ID": sim.TenantID(), "AZURE_CLIENT_ID": sim.ClientID(),
			"AZURE_CLIENT_SECRET": "not-the-secret", "AZURE_AUTHORITY_HOST": sim.AuthorityHost(),
		}
		deps.Getenv = func(k string) string { return env[k] }
		a, base := runApp(t, cfg, deps)
		// The group is joined; the token is refused, and asked again.
		waitCond(t, "the group joined and two token requests", func() bool { return a.consumer.Ready() && sim.TokenRequests() >= 2 })
		code, body := get(t, base+"/readyz")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "a token for the Defender API") {
			t.Errorf("/readyz with a refused credential: %d %q, want 503 naming the token", code, body)
		}
		if strings.Contains(body, "joining the consumer group") {
			t.Errorf("/readyz %q names the group, which was joined", body)
		}
		if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
			t.Errorf("/healthz with a refused credential: %d, want 200", code)
		}
	})
}

// Once ready, readiness and liveness stay through a broker and a Defender
// that go away: that is what metrics and alerts are for.
func TestReadyStaysThroughTrouble(t *testing.T) {
	cfg, deps, sim, c := checkConfig(t)
	a, base := runApp(t, cfg, deps)
	waitCond(t, "/readyz 200", func() bool { code, _ := get(t, base+"/readyz"); return code == http.StatusOK })
	if _, body := get(t, base+"/metrics"); !strings.Contains(body, "\nenricher_ready 1\n") {
		t.Error("/metrics does not say enricher_ready 1 once ready")
	}

	sim.SetOutage(http.StatusServiceUnavailable)
	sim.RevokeTokens()
	c.Fake().Close()
	waitCond(t, "the broker to be gone for the consumer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := a.consumer.Lag(ctx)
		return err != nil
	})
	for range 3 {
		if code, body := get(t, base+"/readyz"); code != http.StatusOK {
			t.Fatalf("/readyz with the broker and Defender gone: %d %q, want 200", code, body)
		}
		if code, body := get(t, base+"/healthz"); code != http.StatusOK {
			t.Fatalf("/healthz with the broker and Defender gone: %d %q, want 200", code, body)
		}
	}
}

// /healthz fails, naming the loop, when a watched loop is stuck in its own
// work past the bound, and mends once it moves again.
func TestHealthzNamesAStalledLoop(t *testing.T) {
	cfg, deps, _, _ := checkConfig(t)
	cfg.HealthStallTimeout = time.Second // below what Validate allows, to keep the test short
	a, base := runApp(t, cfg, deps)
	waitCond(t, "/readyz 200", func() bool { code, _ := get(t, base+"/readyz"); return code == http.StatusOK })
	if code, body := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz of a working connector: %d %q", code, body)
	}
	stuck := a.watchdog.Beat("stuck loop")
	stuck.Busy() // and never again
	var body string
	waitCond(t, "/healthz 503", func() bool {
		var code int
		code, body = get(t, base+"/healthz")
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "stuck loop") || !strings.Contains(body, "ENRICHER_HEALTH_STALL_TIMEOUT") {
		t.Errorf("/healthz %q should name the loop and the option", body)
	}
	if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz while a loop is stuck: %d, want 200 (liveness restarts the process)", code)
	}
	stuck.Idle()
	waitCond(t, "/healthz 200 again", func() bool { code, _ := get(t, base+"/healthz"); return code == http.StatusOK })
}
