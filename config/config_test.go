package config

import (
	"flag"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

func load(t *testing.T, env map[string]string, args ...string) (Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	return Load(fs, args, func(k string) string { return env[k] }, io.Discard)
}

func TestDefaultsAreValid(t *testing.T) {
	c, err := load(t, nil)
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if c.InputTopic != "defender.alerts" || c.OutputTopic != "defender.alerts.enriched" || c.DLQTopic != "defender.alerts.dlq" ||
		c.ConsumerGroup != "defender-enricher" || c.StartOffset != Earliest || c.OnUnavailable != Passthrough ||
		c.DefenderRateLimits.String() != "100/1m,1500/1h" || c.HTTPAddr != ":8080" || c.AzureCredential != "default" ||
		c.MaxRecords != 1000 || c.MaxInFlightBytes != 32<<20 || c.RetryTopic != "defender.alerts.retry" || c.RetryMaxAge != 24*time.Hour ||
		c.DefenderReserve != 0.2 {
		t.Errorf("defaults differ from the contract: %+v", c)
	}
	if err := c.RequireBrokers(); err == nil || !strings.Contains(err.Error(), "ENRICHER_KAFKA_BROKERS") {
		t.Errorf("RequireBrokers without brokers = %v", err)
	}
}

func TestFlagWinsOverVariable(t *testing.T) {
	c, err := load(t, map[string]string{"ENRICHER_INPUT_TOPIC": "from-env", "ENRICHER_CACHE_TTL": "2h"}, "--input-topic", "from-flag")
	if err != nil {
		t.Fatal(err)
	}
	if c.InputTopic != "from-flag" {
		t.Errorf("InputTopic = %q, want the flag's value", c.InputTopic)
	}
	if c.CacheTTL != 2*time.Hour {
		t.Errorf("CacheTTL = %v, want the variable's value", c.CacheTTL)
	}
}

func TestParsesEveryKind(t *testing.T) {
	c, err := load(t, map[string]string{
		"ENRICHER_KAFKA_BROKERS":                    "k1:9092, k2:9093,",
		"ENRICHER_KAFKA_TLS":                        "true",
		"ENRICHER_KAFKA_SASL_MECHANISM":             "SCRAM-SHA-512",
		"ENRICHER_KAFKA_SASL_USERNAME":              "svc",
		"ENRICHER_KAFKA_SASL_PASSWORD":              "hunter2",
		"ENRICHER_DEFENDER_RATE_LIMITS":             "5/1s,20/10s",
		"ENRICHER_START_OFFSET":                     "latest",
		"ENRICHER_KAFKA_COMPRESSION":                "ZSTD",
		"ENRICHER_PPROF":                            "true",
		"ENRICHER_ON_UNAVAILABLE":                   "wait",
		"ENRICHER_CACHE_SIZE":                       "50_000",
		"ENRICHER_AZURE_DISABLE_INSTANCE_DISCOVERY": "true",
		"ENRICHER_DEFENDER_API_URL":                 "https://api-gov.securitycenter.microsoft.us",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.KafkaBrokers, "|"); got != "k1:9092|k2:9093" {
		t.Errorf("KafkaBrokers = %q", got)
	}
	if !c.KafkaTLS || c.KafkaSASLMechanism != SASLScramSHA512 || c.KafkaSASLUsername != "svc" || c.KafkaSASLPassword.Reveal() != "hunter2" {
		t.Errorf("Kafka security options: %+v", c)
	}
	if c.DefenderRateLimits.String() != "5/1s,20/10s" || c.StartOffset != Latest || c.OnUnavailable != Wait || c.CacheSize != 50000 || !c.AzureDisableDiscovery || c.KafkaCompression != "zstd" || !c.Pprof {
		t.Errorf("options: %+v", c)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	c := Default()
	c.KafkaSASLPassword = NewSecret("hunter2")
	for _, s := range []string{c.KafkaSASLPassword.String(), c.KafkaSASLPassword.GoString()} {
		if strings.Contains(s, "hunter2") {
			t.Fatalf("secret printed: %q", s)
		}
	}
	if got := strings.Join(func() []string {
		var out []string
		for _, r := range Describe() {
			out = append(out, r[1])
		}
		return out
	}(), " "); strings.Contains(got, "hunter2") {
		t.Fatal("secret in Describe")
	}
}

// TestBadOptions: every bad value stops start-up with one line that names
// the option.
func TestBadOptions(t *testing.T) {
	tests := []struct {
		env  map[string]string
		args []string
		name string // the variable the error must name
	}{
		{env: map[string]string{"ENRICHER_CACHE_TTL": "banana"}, name: "ENRICHER_CACHE_TTL"},
		{env: map[string]string{"ENRICHER_CACHE_TTL": "0s"}, name: "ENRICHER_CACHE_TTL"},
		{env: map[string]string{"ENRICHER_NEGATIVE_CACHE_TTL": "-1m"}, name: "ENRICHER_NEGATIVE_CACHE_TTL"},
		{env: map[string]string{"ENRICHER_CACHE_SIZE": "0"}, name: "ENRICHER_CACHE_SIZE"},
		{env: map[string]string{"ENRICHER_CACHE_SIZE": "many"}, name: "ENRICHER_CACHE_SIZE"},
		{env: map[string]string{"ENRICHER_KAFKA_BROKERS": "no-port"}, name: "ENRICHER_KAFKA_BROKERS"},
		{env: map[string]string{"ENRICHER_INPUT_TOPIC": "bad topic"}, name: "ENRICHER_INPUT_TOPIC"},
		{env: map[string]string{"ENRICHER_OUTPUT_TOPIC": ""}, name: ""}, // empty variable means unset: default kept
		{env: map[string]string{"ENRICHER_OUTPUT_TOPIC": "defender.alerts"}, name: "ENRICHER_INPUT_TOPIC"},
		{env: map[string]string{"ENRICHER_START_OFFSET": "middle"}, name: "ENRICHER_START_OFFSET"},
		{env: map[string]string{"ENRICHER_KAFKA_COMPRESSION": "brotli"}, name: "ENRICHER_KAFKA_COMPRESSION"},
		{env: map[string]string{"ENRICHER_ON_UNAVAILABLE": "drop"}, name: "ENRICHER_ON_UNAVAILABLE"},
		{env: map[string]string{"ENRICHER_AZURE_CREDENTIAL": "password"}, name: "ENRICHER_AZURE_CREDENTIAL"},
		{env: map[string]string{"ENRICHER_DEFENDER_RATE_LIMITS": "100"}, name: "ENRICHER_DEFENDER_RATE_LIMITS"},
		{env: map[string]string{"ENRICHER_DEFENDER_RATE_LIMITS": "0/1m"}, name: "ENRICHER_DEFENDER_RATE_LIMITS"},
		{env: map[string]string{"ENRICHER_DEFENDER_RESERVE": "a fifth"}, name: "ENRICHER_DEFENDER_RESERVE"},
		{env: map[string]string{"ENRICHER_DEFENDER_RESERVE": "95%"}, name: "ENRICHER_DEFENDER_RESERVE"},
		{args: []string{"--defender-reserve", "lots"}, name: "defender-reserve"},
		{env: map[string]string{"ENRICHER_DEFENDER_API_URL": "http://api.securitycenter.microsoft.com"}, name: "ENRICHER_DEFENDER_API_URL"},
		{env: map[string]string{"ENRICHER_DEFENDER_API_URL": "https://evil.example"}, name: "ENRICHER_DEFENDER_SCOPE"},
		{env: map[string]string{"ENRICHER_DEFENDER_SCOPE": "not-a-scope"}, name: "ENRICHER_DEFENDER_SCOPE"},
		{env: map[string]string{"ENRICHER_MAX_ENRICH_WAIT": "1ms"}, name: "ENRICHER_MAX_ENRICH_WAIT"},
		{env: map[string]string{"ENRICHER_MAX_IN_FLIGHT": "0"}, name: "ENRICHER_MAX_IN_FLIGHT"},
		{env: map[string]string{"ENRICHER_MAX_IN_FLIGHT_BYTES": "500000"}, name: "ENRICHER_MAX_IN_FLIGHT_BYTES"},
		{env: map[string]string{"ENRICHER_MAX_IN_FLIGHT_BYTES": "2000000", "ENRICHER_MAX_MESSAGE_BYTES": "3000000"}, name: "ENRICHER_MAX_IN_FLIGHT_BYTES"},
		{env: map[string]string{"ENRICHER_MAX_RECORDS": "0"}, name: "ENRICHER_MAX_RECORDS"},
		{env: map[string]string{"ENRICHER_RETRY_TOPIC": "defender.alerts"}, name: "ENRICHER_RETRY_TOPIC"},
		{env: map[string]string{"ENRICHER_RETRY_TOPIC": "defender.alerts.enriched"}, name: "ENRICHER_RETRY_TOPIC"},
		{env: map[string]string{"ENRICHER_RETRY_TOPIC": "bad topic"}, name: "ENRICHER_RETRY_TOPIC"},
		{env: map[string]string{"ENRICHER_RETRY_MAX_AGE": "30s"}, name: "ENRICHER_RETRY_MAX_AGE"},
		{env: map[string]string{"ENRICHER_MAX_RECORDS": "1000001"}, name: "ENRICHER_MAX_RECORDS"},
		{env: map[string]string{"ENRICHER_KAFKA_SESSION_TIMEOUT": "100ms"}, name: "ENRICHER_KAFKA_SESSION_TIMEOUT"},
		{env: map[string]string{"ENRICHER_MAX_MESSAGE_BYTES": "10"}, name: "ENRICHER_MAX_MESSAGE_BYTES"},
		{env: map[string]string{"ENRICHER_ALERT_ID_POINTER": "id"}, name: "ENRICHER_ALERT_ID_POINTER"},
		{env: map[string]string{"ENRICHER_KAFKA_SASL_MECHANISM": "plain"}, name: "ENRICHER_KAFKA_SASL_MECHANISM"},
		{env: map[string]string{"ENRICHER_KAFKA_SASL_MECHANISM": "plain", "ENRICHER_KAFKA_SASL_USERNAME": "svc"}, name: "ENRICHER_KAFKA_SASL_MECHANISM"},
		{env: map[string]string{"ENRICHER_KAFKA_TLS": "maybe"}, name: "ENRICHER_KAFKA_TLS"},
		{env: map[string]string{"ENRICHER_HTTP_ADDR": "8080"}, name: "ENRICHER_HTTP_ADDR"},
		{env: map[string]string{"ENRICHER_LOG_LEVEL": "loud"}, name: "ENRICHER_LOG_LEVEL"},
		{args: []string{"--cache-ttl", "banana"}, name: "cache-ttl"},
	}
	for _, tt := range tests {
		_, err := load(t, tt.env, tt.args...)
		if tt.name == "" {
			if err != nil {
				t.Errorf("%v %v: unexpected error %v", tt.env, tt.args, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%v %v: no error", tt.env, tt.args)
			continue
		}
		if !strings.Contains(err.Error(), tt.name) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v %v: error %q should be one line naming %s", tt.env, tt.args, err, tt.name)
		}
	}
}

// TestDefenderReserve: the reserve is N% from 0% to 90%, or a fraction from
// 0 to 0.9; anything else stops start-up with one line naming the option.
func TestDefenderReserve(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{in: "20%", want: 0.2},
		{in: "0%", want: 0},
		{in: "90%", want: 0.9},
		{in: "12.5%", want: 0.125},
		{in: " 25 % ", want: 0.25},
		{in: "0.2", want: 0.2},
		{in: "0", want: 0},
		{in: "0.9", want: 0.9},
		{in: "91%", wantErr: true},
		{in: "100%", wantErr: true},
		{in: "-1%", wantErr: true},
		{in: "-0.1", wantErr: true},
		{in: "20", wantErr: true}, // a fraction of 20, not 20%
		{in: "0.95", wantErr: true},
		{in: "%", wantErr: true},
		{in: "20%%", wantErr: true},
		{in: "twenty%", wantErr: true},
		{in: "NaN", wantErr: true},
		{in: "Inf%", wantErr: true},
		{in: "1e400%", wantErr: true},
	}
	for _, tt := range tests {
		for _, from := range []struct {
			env  map[string]string
			args []string
			name string
		}{
			{env: map[string]string{"ENRICHER_DEFENDER_RESERVE": tt.in}, name: "ENRICHER_DEFENDER_RESERVE"},
			{args: []string{"--defender-reserve=" + tt.in}, name: "--defender-reserve"},
		} {
			c, err := load(t, from.env, from.args...)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), from.name) || strings.Contains(err.Error(), "\n") {
					t.Errorf("%v %v: err = %v, want one line naming %s", from.env, from.args, err, from.name)
				}
				continue
			}
			if err != nil {
				t.Errorf("%v %v: %v", from.env, from.args, err)
				continue
			}
			if c.DefenderReserve != tt.want {
				t.Errorf("%v %v: reserve %v, want %v", from.env, from.args, c.DefenderReserve, tt.want)
			}
		}
	}
}

func TestDefenderReserveDefaultReads20Percent(t *testing.T) {
	for _, r := range Describe() {
		if r[0] == "ENRICHER_DEFENDER_RESERVE" {
			if r[1] != "20%" {
				t.Errorf("default shown as %q, want 20%%", r[1])
			}
			return
		}
	}
	t.Error("ENRICHER_DEFENDER_RESERVE is not an option")
}

// TestREADMEListsEveryOption keeps the configuration table honest.
func TestREADMEListsEveryOption(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range Names() {
		if !strings.Contains(string(readme), "`"+Env(name)+"`") {
			t.Errorf("README.md does not document %s", Env(name))
		}
	}
}

// TestReuseUser: ENRICHER_REUSE_USER is a switch that is on by default.
func TestReuseUser(t *testing.T) {
	tests := []struct {
		env  string
		args []string
		want bool
	}{
		{"", nil, true},
		{"false", nil, false},
		{"0", nil, false},
		{"true", nil, true},
		{" FALSE ", nil, false},
		{"", []string{"--reuse-user=false"}, false},
		{"false", []string{"--reuse-user"}, true},
		{"true", []string{"--reuse-user=false"}, false},
	}
	for _, tt := range tests {
		env := map[string]string{}
		if tt.env != "" {
			env["ENRICHER_REUSE_USER"] = tt.env
		}
		c, err := load(t, env, tt.args...)
		if err != nil {
			t.Errorf("%q %v: %v", tt.env, tt.args, err)
			continue
		}
		if c.ReuseUser != tt.want {
			t.Errorf("%q %v: ReuseUser = %v, want %v", tt.env, tt.args, c.ReuseUser, tt.want)
		}
	}
	for _, bad := range []map[string]string{{"ENRICHER_REUSE_USER": "maybe"}, {"ENRICHER_REUSE_USER": "off"}} {
		if _, err := load(t, bad); err == nil || !strings.Contains(err.Error(), "ENRICHER_REUSE_USER") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line naming ENRICHER_REUSE_USER", bad, err)
		}
	}
	if _, err := load(t, nil, "--reuse-user=maybe"); err == nil || !strings.Contains(err.Error(), "reuse-user") {
		t.Errorf("--reuse-user=maybe: error %v, want one naming the flag", err)
	}
}
