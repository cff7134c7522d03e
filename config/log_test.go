package config

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// The configuration's log line names every option and shows no secret.
func TestLogValue(t *testing.T) {
	c, err := load(t, map[string]string{
		"ENRICHER_KAFKA_SASL_MECHANISM": "plain", "ENRICHER_KAFKA_SASL_USERNAME": "svc", "ENRICHER_KAFKA_SASL_PASSWORD": "kafka-pw-1",
		"ENRICHER_REDIS_URL": "rediss://:redis-pw-2@cache.example:6380/0",
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("configuration", "config", c)
	out := buf.String()
	for _, o := range c.options() {
		if !strings.Contains(out, `"`+Env(o.name)+`":`) {
			t.Errorf("the line has no %s", Env(o.name))
		}
	}
	for _, secret := range []string{"kafka-pw-1", "redis-pw-2"} {
		if strings.Contains(out, secret) {
			t.Errorf("the line holds %q: %s", secret, out)
		}
	}
	if !strings.Contains(out, `"ENRICHER_KAFKA_SASL_USERNAME":"svc"`) || !strings.Contains(out, `"ENRICHER_REDIS_URL":"[redacted]"`) {
		t.Errorf("the line should show the user name and the Redis URL redacted: %s", out)
	}
}
