package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/defender-enricher/defender-enricher/config"
)

// kafkaClientID names the connector to the brokers (their request logs and
// quotas).
const kafkaClientID = "defender-enricher"

// kafkaIdleTimeout closes the writer's idle connections well before Azure
// Event Hubs closes them (240 s) and before most brokers'
// connections.max.idle.ms (10 min): a connection the server closed is only
// found out by the next write, which then fails and is retried. The
// reader's connections are never idle: a fetch is always waiting.
const kafkaIdleTimeout = 30 * time.Second

// kafkaClients builds the reader's dialer and the writer's transport with
// the same TLS and SASL settings. It reads the TLS files; its errors name
// the option and the file.
func kafkaClients(cfg config.Config, cred azcore.TokenCredential) (*kafka.Dialer, *kafka.Transport, error) {
	tlsConfig, err := kafkaTLS(cfg)
	if err != nil {
		return nil, nil, err
	}
	var mech sasl.Mechanism
	switch cfg.KafkaSASLMechanism {
	case config.SASLPlain:
		mech = plain.Mechanism{Username: cfg.KafkaSASLUsername, Password: cfg.KafkaSASLPassword.Reveal()}
	case config.SASLScramSHA256, config.SASLScramSHA512:
		algo := scram.SHA256
		if cfg.KafkaSASLMechanism == config.SASLScramSHA512 {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, cfg.KafkaSASLUsername, cfg.KafkaSASLPassword.Reveal())
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", config.Env("kafka-sasl-mechanism"), err)
		}
		mech = m
	case config.SASLOAuthBearer:
		mech = &OAuthBearer{Credential: cred, Scope: cfg.KafkaTokenScope()}
	}
	dialer := &kafka.Dialer{ClientID: kafkaClientID, Timeout: 10 * time.Second, DualStack: true, TLS: tlsConfig, SASLMechanism: mech}
	transport := &kafka.Transport{
		ClientID: kafkaClientID, DialTimeout: 10 * time.Second, IdleTimeout: kafkaIdleTimeout,
		TLS: tlsConfig, SASL: mech,
	}
	return dialer, transport, nil
}

// kafkaTLS is the TLS configuration of the Kafka clients, nil without
// ENRICHER_KAFKA_TLS: the brokers verified against the system roots or
// ENRICHER_KAFKA_TLS_CA_FILE, a client certificate for mutual TLS, and the
// server name to verify.
func kafkaTLS(cfg config.Config) (*tls.Config, error) {
	if !cfg.KafkaTLS {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.KafkaTLSServerName}
	if cfg.KafkaTLSCAFile != "" {
		pem, err := os.ReadFile(cfg.KafkaTLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", config.Env("kafka-tls-ca-file"), err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: %s holds no PEM certificate", config.Env("kafka-tls-ca-file"), cfg.KafkaTLSCAFile)
		}
	}
	if cfg.KafkaTLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.KafkaTLSCertFile, cfg.KafkaTLSKeyFile)
		if err != nil {
			// The error of LoadX509KeyPair names what is wrong (a missing
			// file, a key that does not match), never the key itself.
			return nil, fmt.Errorf("%s and %s: %w", config.Env("kafka-tls-cert-file"), config.Env("kafka-tls-key-file"), err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// OAuthBearer is the SASL OAUTHBEARER mechanism (RFC 7628) with an Entra
// ID access token, which is how Azure Event Hubs' Kafka endpoint takes an
// identity: Credential is asked for a token of Scope
// (https://NAMESPACE.servicebus.windows.net/.default) each time a
// connection authenticates. azidentity keeps the token and gets a new one
// before it expires (five minutes before, or at the refresh time Entra ID
// gives), so a new connection never presents a token about to expire;
// Event Hubs closes a connection whose token expired, and kafka-go then
// connects again with a fresh one.
type OAuthBearer struct {
	Credential azcore.TokenCredential
	Scope      string
	// Timeout bounds one token request; 0 means 30 s.
	Timeout time.Duration
}

// Name is the mechanism's SASL name.
func (m *OAuthBearer) Name() string { return "OAUTHBEARER" }

// Start gets a token and returns the client's initial response. The error
// names the scope and wraps the credential's, which carries Entra ID's
// answer and never the token or a secret.
func (m *OAuthBearer) Start(ctx context.Context) (sasl.StateMachine, []byte, error) {
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tok, err := m.Credential.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{m.Scope}})
	if err != nil {
		return nil, nil, fmt.Errorf("kafka SASL OAUTHBEARER: no token for scope %q (%s): %w", m.Scope, config.Env("kafka-oauth-scope"), err)
	}
	// gs2-header "n,," (no channel binding, no authorization identity),
	// then the auth key-value pair, each pair and the message ended by ^A.
	return oauthBearerSession{}, []byte("n,,\x01auth=Bearer " + tok.Token + "\x01\x01"), nil
}

type oauthBearerSession struct{}

// Next ends the exchange: a server that accepts the token answers with
// nothing; one that refuses it sends a JSON error (its status and scope,
// RFC 7628 section 3.2.2), which becomes the error.
func (oauthBearerSession) Next(_ context.Context, challenge []byte) (bool, []byte, error) {
	if len(challenge) == 0 {
		return true, nil, nil
	}
	const most = 512 // the server's error is short; never log a whole buffer
	if len(challenge) > most {
		challenge = challenge[:most]
	}
	return false, nil, fmt.Errorf("kafka SASL OAUTHBEARER: the broker refused the token: %s", challenge)
}
