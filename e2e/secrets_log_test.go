package e2e

import (
	"encoding/json"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/defender-enricher/defender-enricher/kafkatest"
)

// No secret and no token reaches a log, in either format, at debug level:
// the built binary logs its whole configuration, an Entra ID refusal of
// its client secret, a Kafka SASL refusal of its password and a Redis that
// does not answer at a URL holding a password; none of the three secrets,
// nor anything shaped like a token, is in what it wrote.
func TestLogsHoldNoSecret(t *testing.T) {
	const (
		kafkaPassword = "kafka-password-5e1f0c"
		redisPassword = "redis-password-9a2b7d"
		clientSecret  = "client-secret-3c8e41"
	)
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			e := newEnv(t, kafkatest.NewFake(t, kfake.NumBrokers(1)), 1)
			secured := kafkatest.NewFake(t, kfake.NumBrokers(1), kfake.EnableSASL(),
				kfake.Superuser("SCRAM-SHA-512", "enricher", "the-right-password"))
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			redisAddr := ln.Addr().String()
			ln.Close() // nothing answers there

			p := startBinary(t, binaryVars(e, map[string]string{
				"ENRICHER_LOG_FORMAT":           format,
				"ENRICHER_LOG_LEVEL":            "debug",
				"ENRICHER_KAFKA_BROKERS":        strings.Join(secured.Brokers(), ","),
				"ENRICHER_KAFKA_SASL_MECHANISM": "scram-sha-512",
				"ENRICHER_KAFKA_SASL_USERNAME":  "enricher",
				"ENRICHER_KAFKA_SASL_PASSWORD":  kafkaPassword,
				"ENRICHER_REDIS_URL":            "redis://enricher:" + redisPassword + "@" + redisAddr + "/0",
				"ENRICHER_REDIS_TIMEOUT":        "100ms",
				"AZURE_CLIENT_SECRET":           clientSecret,
			}), "run")
			waitUntil(t, 90*time.Second, "the configuration, the three refusals and a Redis error in the log", func() bool {
				out := p.Stderr()
				return strings.Contains(out, "ENRICHER_KAFKA_SASL_PASSWORD") && // the configuration
					strings.Contains(out, "no token for the Defender API yet") && strings.Contains(out, "invalid_client") &&
					strings.Contains(out, "SASL Authentication failed") &&
					strings.Contains(out, "Redis did not answer") && strings.Contains(out, redisAddr+": connect: connection refused")
			})
			p.Stop(30 * time.Second)
			out := p.Stderr()
			if format == "json" {
				for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
					if !json.Valid([]byte(line)) {
						t.Errorf("line %d of the json log is not JSON: %q", i+1, line)
					}
				}
			}
			for _, s := range []string{kafkaPassword, redisPassword, clientSecret, url.QueryEscape(redisPassword)} {
				if strings.Contains(out, s) {
					t.Errorf("the %s log holds the secret %q", format, s)
				}
			}
			for _, tokenShape := range []string{"eyJ", "Bearer "} {
				if strings.Contains(out, tokenShape) {
					t.Errorf("the %s log holds something shaped like a token (%q)", format, tokenShape)
				}
			}
			// The configuration is there, its secrets redacted, not absent.
			for _, want := range []string{"ENRICHER_KAFKA_SASL_PASSWORD", "ENRICHER_REDIS_URL", "[redacted]", "ENRICHER_KAFKA_SASL_USERNAME"} {
				if !strings.Contains(out, want) {
					t.Errorf("the %s log's configuration has no %q", format, want)
				}
			}
		})
	}
}
