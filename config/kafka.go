package config

import (
	"net"
	"net/url"
	"strings"
)

// eventHubsSuffixes are the host suffixes of Azure Event Hubs' Kafka
// endpoints in the public and the sovereign clouds.
var eventHubsSuffixes = []string{
	".servicebus.windows.net",
	".servicebus.chinacloudapi.cn",
	".servicebus.usgovcloudapi.net",
}

// EventHubsMaxMessageBytes is the largest ENRICHER_MAX_MESSAGE_BYTES with
// Azure Event Hubs brokers, whose Kafka endpoint takes requests of at most
// 1 MiB (1,048,576 bytes): the producer's batches hold at most
// ENRICHER_MAX_MESSAGE_BYTES of records, and this leaves room for the
// batch's and the request's headers.
const EventHubsMaxMessageBytes = 1_000_000

// EventHubs reports whether the brokers are an Azure Event Hubs namespace's
// Kafka endpoint.
func (c *Config) EventHubs() bool {
	for _, b := range c.KafkaBrokers {
		host, _, err := net.SplitHostPort(b)
		if err != nil {
			continue
		}
		host = strings.ToLower(host)
		for _, s := range eventHubsSuffixes {
			if strings.HasSuffix(host, s) {
				return true
			}
		}
	}
	return false
}

// KafkaTokenScope is the scope of the OAUTHBEARER token: KafkaOAuthScope,
// or https://HOST/.default of the first broker, which for Event Hubs is the
// namespace's scope (https://NAMESPACE.servicebus.windows.net/.default).
func (c *Config) KafkaTokenScope() string {
	if c.KafkaOAuthScope != "" {
		return c.KafkaOAuthScope
	}
	if len(c.KafkaBrokers) == 0 {
		return ""
	}
	host, _, err := net.SplitHostPort(c.KafkaBrokers[0])
	if err != nil {
		return ""
	}
	return "https://" + host + "/.default"
}

// validateKafkaSecurity checks the TLS and SASL options of the Kafka
// clients: files are only named here (they are read when the clients are
// built), and each combination that cannot work is refused with the option
// that is missing.
func (c *Config) validateKafkaSecurity(bad func(name, format string, a ...any) error) error {
	tlsFiles := []struct{ name, value string }{
		{"kafka-tls-ca-file", c.KafkaTLSCAFile}, {"kafka-tls-cert-file", c.KafkaTLSCertFile},
		{"kafka-tls-key-file", c.KafkaTLSKeyFile}, {"kafka-tls-server-name", c.KafkaTLSServerName},
	}
	for _, f := range tlsFiles {
		if f.value != "" && !c.KafkaTLS {
			return bad(f.name, "is set but ENRICHER_KAFKA_TLS is not: set ENRICHER_KAFKA_TLS=true to connect over TLS")
		}
	}
	if (c.KafkaTLSCertFile == "") != (c.KafkaTLSKeyFile == "") {
		return bad("kafka-tls-cert-file", "set it together with ENRICHER_KAFKA_TLS_KEY_FILE: a client certificate needs its key")
	}
	switch c.KafkaSASLMechanism {
	case SASLNone:
		if c.KafkaSASLUsername != "" || c.KafkaSASLPassword.IsSet() {
			return bad("kafka-sasl-mechanism", "is empty but ENRICHER_KAFKA_SASL_USERNAME or ENRICHER_KAFKA_SASL_PASSWORD is set: name the mechanism (plain, scram-sha-256, scram-sha-512)")
		}
	case SASLOAuthBearer:
		if c.KafkaSASLUsername != "" || c.KafkaSASLPassword.IsSet() {
			return bad("kafka-sasl-mechanism", "oauthbearer takes its token from ENRICHER_AZURE_CREDENTIAL: unset ENRICHER_KAFKA_SASL_USERNAME and ENRICHER_KAFKA_SASL_PASSWORD")
		}
		scope := c.KafkaTokenScope()
		if u, err := url.Parse(scope); err != nil || u.Scheme != "https" && u.Scheme != "api" || u.Host == "" {
			return bad("kafka-oauth-scope", "%q is not a scope such as https://NAMESPACE.servicebus.windows.net/.default", scope)
		}
	default:
		if c.KafkaSASLUsername == "" || !c.KafkaSASLPassword.IsSet() {
			return bad("kafka-sasl-mechanism", "%s needs ENRICHER_KAFKA_SASL_USERNAME and ENRICHER_KAFKA_SASL_PASSWORD", c.KafkaSASLMechanism)
		}
	}
	if c.KafkaOAuthScope != "" && c.KafkaSASLMechanism != SASLOAuthBearer {
		return bad("kafka-oauth-scope", "is set but ENRICHER_KAFKA_SASL_MECHANISM is not oauthbearer")
	}
	if c.EventHubs() {
		if !c.KafkaTLS {
			return bad("kafka-tls", "Azure Event Hubs takes Kafka clients over TLS only (port 9093): set ENRICHER_KAFKA_TLS=true")
		}
		if c.KafkaSASLMechanism == SASLNone {
			return bad("kafka-sasl-mechanism", "Azure Event Hubs needs SASL: oauthbearer with an Entra ID identity, or plain with the user $ConnectionString and the connection string as password")
		}
		if c.MaxMessageBytes > EventHubsMaxMessageBytes {
			return bad("max-message-bytes", "%d is too large for Azure Event Hubs, which takes requests of at most 1 MiB: at most %d leaves room for the batch and request headers",
				c.MaxMessageBytes, EventHubsMaxMessageBytes)
		}
	}
	return nil
}
