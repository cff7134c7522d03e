package app

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/defender-enricher/defender-enricher/config"
	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/simulator"
)

func checkConfig(t *testing.T) (config.Config, Deps, *simulator.Server, *kafkatest.Cluster) {
	t.Helper()
	c := kafkatest.NewFake(t, kfake.NumBrokers(1))
	sim, err := simulator.New(simulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	cfg := config.Default()
	cfg.KafkaBrokers = c.Brokers()
	cfg.InputTopic = c.Topic(t, "in", 1)
	cfg.OutputTopic = c.Topic(t, "out", 1)
	cfg.DLQTopic = c.Topic(t, "dlq", 1)
	cfg.DefenderAPIURL, cfg.DefenderScope = sim.URL(), sim.Scope()
	cfg.AzureCredential, cfg.AzureDisableDiscovery = "client-secret", true
	env := map[string]string{
		"AZURE_TENANT_ID": sim.TenantID(), "AZURE_CLIENT_ID": sim.ClientID(),
		"AZURE_CLIENT_SECRET": sim.ClientSecret(), "AZURE_AUTHORITY_HOST": sim.AuthorityHost(),
	}
	return cfg, Deps{HTTPClient: sim.Client(), Getenv: func(k string) string { return env[k] }}, sim, c
}

func TestCheckPasses(t *testing.T) {
	cfg, deps, sim, _ := checkConfig(t)
	var out bytes.Buffer
	if !Check(context.Background(), cfg, deps, &out) {
		t.Fatalf("check failed:\n%s", out.String())
	}
	for _, want := range []string{"ok    broker", "ok    topic " + cfg.InputTopic, "ok    access token obtained", "ok    one API call authorised", "all checks passed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if n := sim.CallCount(); n != 1 {
		t.Errorf("check made %d API calls, want exactly 1", n)
	}
}

func TestCheckReportsEachFailure(t *testing.T) {
	cfg, deps, sim, _ := checkConfig(t)
	cfg.OutputTopic = "no-such-output"
	sim.SetForbidden(true)
	var out bytes.Buffer
	if Check(context.Background(), cfg, deps, &out) {
		t.Fatalf("check passed with a missing topic and a 403:\n%s", out.String())
	}
	for _, want := range []string{"FAIL  topic no-such-output present", "FAIL  one API call authorised", "User.Read.All"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	cfg, deps, _, _ = checkConfig(t)
	env := map[string]string{}
	deps.Getenv = func(k string) string { return env[k] }
	out.Reset()
	if Check(context.Background(), cfg, deps, &out) || !strings.Contains(out.String(), "AZURE_TENANT_ID") {
		t.Fatalf("check without credentials should fail naming AZURE_TENANT_ID:\n%s", out.String())
	}
}
