package app

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
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
	cfg.RetryTopic = c.Topic(t, "retry", 1)
	cfg.DefenderAPIURL, cfg.DefenderScope = sim.URL(), sim.Scope()
	cfg.AzureCredential, cfg.AzureDisableDiscovery = "client-secret", true
	env := map[string]string{
		"AZURE_TENANT_ID": sim.TenantID(), "AZURE_CLIENT_ID": sim.ClientID(),
		"AZURE_CLIENT_SECRET": sim.ClientSecret(), "AZURE_AUTHORITY_HOST": sim.AuthorityHost(),
	}
	return cfg, Deps{HTTPClient: sim.Client(), Getenv: func(k string) string { return env[k] }}, sim, c
}

// stepNames are the steps Check lists for cfg, in order.
func stepNames(cfg config.Config) []string {
	names := []string{"Kafka client settings"}
	for _, b := range cfg.KafkaBrokers {
		names = append(names, "broker "+b+" reachable")
	}
	names = append(names, "cluster metadata")
	for _, t := range []string{cfg.InputTopic, cfg.OutputTopic, cfg.DLQTopic, cfg.RetryTopic} {
		names = append(names, "topic "+t+" present")
	}
	return append(names, "Defender endpoint", "credential", "access token obtained", "one API call authorised")
}

func TestCheckPasses(t *testing.T) {
	cfg, deps, sim, _ := checkConfig(t)
	var out bytes.Buffer
	if !Check(context.Background(), cfg, deps, &out) {
		t.Fatalf("check failed:\n%s", out.String())
	}
	for _, want := range []string{"ok       broker", "ok       topic " + cfg.InputTopic, "ok       access token obtained", "ok       one API call authorised", "all 11 steps passed\n"} {
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
	for _, want := range []string{"FAILED   topic no-such-output present", "FAILED   one API call authorised", "User.Read.All", "\n2 of 11 steps failed\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestCheckListsEveryStep: whatever fails, every step has exactly one
// verdict line, ok, FAILED or skipped with why, each one line, and the last
// line counts the failures.
func TestCheckListsEveryStep(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().String()
	ln.Close()
	certFile := filepath.Join(t.TempDir(), "cert.pfx")
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	const secret = "wr0ng-s3cret-value"
	tests := []struct {
		name    string
		change  func(*config.Config, map[string]string)
		want    []string // lines or parts of lines, in this order
		summary string
		debug   string // in the debug log
	}{
		{
			name:   "no broker reachable",
			change: func(c *config.Config, _ map[string]string) { c.KafkaBrokers = []string{closedPort} },
			want: []string{"FAILED   broker " + closedPort + " reachable: ", "skipped  cluster metadata: no broker reachable",
				"skipped  topic ", "ok       one API call authorised"},
			summary: "1 of 11 steps failed (5 skipped)",
		},
		{
			name:   "client secret refused",
			change: func(_ *config.Config, env map[string]string) { env["AZURE_CLIENT_SECRET"] = secret },
			want: []string{"ok       topic ", "ok       credential client-secret",
				"FAILED   access token obtained: ClientSecretCredential authentication failed: 401 Unauthorized: invalid_client: AADSTS7000215: Invalid client secret provided.",
				"skipped  one API call authorised (GET /api/alerts/da000000000000000000_0/user): needs an access token"},
			summary: "1 of 11 steps failed (1 skipped)",
			debug:   "RESPONSE 401",
		},
		{
			name:   "credential incomplete",
			change: func(_ *config.Config, env map[string]string) { delete(env, "AZURE_TENANT_ID") },
			want: []string{"FAILED   credential client-secret: ENRICHER_AZURE_CREDENTIAL=client-secret needs AZURE_TENANT_ID",
				"skipped  access token obtained: needs the credential", "skipped  one API call authorised"},
			summary: "1 of 11 steps failed (2 skipped)",
		},
		{
			name: "certificate unreadable",
			change: func(c *config.Config, env map[string]string) {
				c.AzureCredential = "client-certificate"
				env["AZURE_CLIENT_CERTIFICATE_PATH"], env["AZURE_CLIENT_CERTIFICATE_PASSWORD"] = certFile, secret
			},
			want:    []string{"FAILED   credential client-certificate: AZURE_CLIENT_CERTIFICATE_PATH", "skipped  access token obtained"},
			summary: "1 of 11 steps failed (2 skipped)",
		},
		{
			name: "authority with user info",
			change: func(_ *config.Config, env map[string]string) {
				env["AZURE_AUTHORITY_HOST"] = strings.Replace(env["AZURE_AUTHORITY_HOST"], "https://", "https://app:"+secret+"@", 1)
			},
			want: []string{"FAILED   Defender endpoint ", "AZURE_AUTHORITY_HOST \"https://[redacted]@127.0.0.1:",
				"skipped  credential client-secret: needs the Defender endpoint", "skipped  access token obtained", "skipped  one API call"},
			summary: "1 of 11 steps failed (3 skipped)",
		},
		{
			name: "Kafka and Defender both down",
			change: func(c *config.Config, env map[string]string) {
				c.KafkaBrokers = []string{closedPort}
				env["AZURE_CLIENT_SECRET"] = secret
			},
			want:    []string{"FAILED   broker", "skipped  topic", "FAILED   access token obtained", "skipped  one API call"},
			summary: "2 of 11 steps failed (6 skipped)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, deps, _, _ := checkConfig(t)
			env := map[string]string{}
			for _, k := range []string{"AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_AUTHORITY_HOST"} {
				env[k] = deps.Getenv(k)
			}
			deps.Getenv = func(k string) string { return env[k] }
			tt.change(&cfg, env)
			var out, debug bytes.Buffer
			deps.Logger = slog.New(slog.NewTextHandler(&debug, &slog.HandlerOptions{Level: slog.LevelDebug}))
			if Check(context.Background(), cfg, deps, &out) {
				t.Fatalf("check passed:\n%s", out.String())
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			steps := stepNames(cfg)
			if len(lines) != len(steps)+1 {
				t.Fatalf("%d lines, want one per step (%d) and the count:\n%s", len(lines), len(steps), out.String())
			}
			for i, name := range steps {
				l := lines[i]
				if !(strings.HasPrefix(l, "ok       ") || strings.HasPrefix(l, "FAILED   ") || strings.HasPrefix(l, "skipped  ")) ||
					!strings.Contains(l, name) {
					t.Errorf("line %d is %q, want the verdict of %q", i+1, l, name)
				}
				if len(l) > 700 {
					t.Errorf("line %d is %d bytes long", i+1, len(l))
				}
			}
			if last := lines[len(lines)-1]; last != tt.summary {
				t.Errorf("last line %q, want %q", last, tt.summary)
			}
			at := 0
			for _, w := range tt.want {
				i := strings.Index(out.String()[at:], w)
				if i < 0 {
					t.Errorf("output lacks %q (after byte %d):\n%s", w, at, out.String())
					continue
				}
				at += i + len(w)
			}
			if tt.debug != "" && !strings.Contains(debug.String(), tt.debug) {
				t.Errorf("debug log lacks %q:\n%s", tt.debug, debug.String())
			}
			if strings.Contains(out.String()+debug.String(), secret) {
				t.Errorf("the secret is in the output or the log:\n%s\n%s", out.String(), debug.String())
			}
		})
	}
}
