package config

import (
	"strings"
	"testing"
)

// The Kafka security options: each combination that cannot work stops
// start-up with one line naming the option to change; Event Hubs' brokers
// bring Event Hubs' own demands.
func TestKafkaSecurityOptions(t *testing.T) {
	const hubs = "ns1.servicebus.windows.net:9093"
	tests := []struct {
		env  map[string]string
		name string // the option the error names; "" for a valid configuration
	}{
		{env: map[string]string{"ENRICHER_KAFKA_TLS": "true", "ENRICHER_KAFKA_TLS_CA_FILE": "ca.pem", "ENRICHER_KAFKA_TLS_CERT_FILE": "c.pem", "ENRICHER_KAFKA_TLS_KEY_FILE": "c.key", "ENRICHER_KAFKA_TLS_SERVER_NAME": "kafka.internal"}},
		{env: map[string]string{"ENRICHER_KAFKA_TLS_CA_FILE": "ca.pem"}, name: "ENRICHER_KAFKA_TLS_CA_FILE"},
		{env: map[string]string{"ENRICHER_KAFKA_TLS_SERVER_NAME": "kafka.internal"}, name: "ENRICHER_KAFKA_TLS_SERVER_NAME"},
		{env: map[string]string{"ENRICHER_KAFKA_TLS": "true", "ENRICHER_KAFKA_TLS_CERT_FILE": "c.pem"}, name: "ENRICHER_KAFKA_TLS_CERT_FILE"},
		{env: map[string]string{"ENRICHER_KAFKA_TLS": "true", "ENRICHER_KAFKA_TLS_KEY_FILE": "c.key"}, name: "ENRICHER_KAFKA_TLS_CERT_FILE"},
		{env: map[string]string{"ENRICHER_KAFKA_SASL_USERNAME": "svc", "ENRICHER_KAFKA_SASL_PASSWORD": "pw"}, name: "ENRICHER_KAFKA_SASL_MECHANISM"},
		{env: map[string]string{"ENRICHER_KAFKA_SASL_MECHANISM": "scram-sha-256", "ENRICHER_KAFKA_SASL_USERNAME": "svc", "ENRICHER_KAFKA_SASL_PASSWORD": "pw"}},
		{env: map[string]string{"ENRICHER_KAFKA_SASL_MECHANISM": "oauthbearer", "ENRICHER_KAFKA_BROKERS": "kafka:9092"}},
		{env: map[string]string{"ENRICHER_KAFKA_SASL_MECHANISM": "oauthbearer", "ENRICHER_KAFKA_SASL_USERNAME": "svc", "ENRICHER_KAFKA_SASL_PASSWORD": "pw"}, name: "ENRICHER_KAFKA_SASL_MECHANISM"},
		{env: map[string]string{"ENRICHER_KAFKA_SASL_MECHANISM": "oauthbearer", "ENRICHER_KAFKA_OAUTH_SCOPE": "not a scope"}, name: "ENRICHER_KAFKA_OAUTH_SCOPE"},
		{env: map[string]string{"ENRICHER_KAFKA_SASL_MECHANISM": "oauthbearer"}, name: "ENRICHER_KAFKA_OAUTH_SCOPE"}, // no broker to derive it from
		{env: map[string]string{"ENRICHER_KAFKA_OAUTH_SCOPE": "https://ns1.servicebus.windows.net/.default"}, name: "ENRICHER_KAFKA_OAUTH_SCOPE"},
		{env: map[string]string{"ENRICHER_KAFKA_BROKERS": hubs, "ENRICHER_KAFKA_SASL_MECHANISM": "oauthbearer"}, name: "ENRICHER_KAFKA_TLS"},
		{env: map[string]string{"ENRICHER_KAFKA_BROKERS": hubs, "ENRICHER_KAFKA_TLS": "true"}, name: "ENRICHER_KAFKA_SASL_MECHANISM"},
		{env: map[string]string{"ENRICHER_KAFKA_BROKERS": hubs, "ENRICHER_KAFKA_TLS": "true", "ENRICHER_KAFKA_SASL_MECHANISM": "oauthbearer",
			"ENRICHER_MAX_MESSAGE_BYTES": "1048576", "ENRICHER_MAX_IN_FLIGHT_BYTES": "33554432"}, name: "ENRICHER_MAX_MESSAGE_BYTES"},
		{env: map[string]string{"ENRICHER_KAFKA_BROKERS": hubs, "ENRICHER_KAFKA_TLS": "true", "ENRICHER_KAFKA_SASL_MECHANISM": "oauthbearer"}},
		{env: map[string]string{"ENRICHER_KAFKA_BROKERS": "NS1.ServiceBus.Windows.NET:9093", "ENRICHER_KAFKA_TLS": "true", "ENRICHER_KAFKA_SASL_MECHANISM": "plain",
			"ENRICHER_KAFKA_SASL_USERNAME": "$ConnectionString", "ENRICHER_KAFKA_SASL_PASSWORD": "Endpoint=sb://ns1.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=s"}},
	}
	for _, tt := range tests {
		_, err := load(t, tt.env)
		if tt.name == "" {
			if err != nil {
				t.Errorf("%v: unexpected error %v", tt.env, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%v: no error, want one naming %s", tt.env, tt.name)
			continue
		}
		if !strings.HasPrefix(err.Error(), tt.name+" ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %q should be one line naming %s first", tt.env, err, tt.name)
		}
		if strings.Contains(err.Error(), "SharedAccessKey=s") || strings.Contains(err.Error(), `"pw"`) {
			t.Errorf("%v: error %q holds a secret", tt.env, err)
		}
	}
}

func TestKafkaTokenScope(t *testing.T) {
	for _, tt := range []struct {
		brokers []string
		scope   string
		want    string
	}{
		{[]string{"ns1.servicebus.windows.net:9093"}, "", "https://ns1.servicebus.windows.net/.default"},
		{[]string{"ns1.servicebus.windows.net:9093", "ns2.servicebus.windows.net:9093"}, "", "https://ns1.servicebus.windows.net/.default"},
		{[]string{"kafka:9092"}, "api://kafka-app/.default", "api://kafka-app/.default"},
		{nil, "", ""},
	} {
		c := Config{KafkaBrokers: tt.brokers, KafkaOAuthScope: tt.scope}
		if got := c.KafkaTokenScope(); got != tt.want {
			t.Errorf("brokers %v, scope %q: %q, want %q", tt.brokers, tt.scope, got, tt.want)
		}
	}
}
