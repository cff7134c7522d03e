package app

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/segmentio/kafka-go"

	"github.com/defender-enricher/defender-enricher/config"
	"github.com/defender-enricher/defender-enricher/consumer"
	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/producer"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// The Kafka clients' TLS and SASL settings against the real broker's
// secured listeners (scripts/kafka.sh): the connector's own producer and
// consumer, built from the configuration as run builds them, write a
// record, read it back in a group and commit it, over mutual TLS, SCRAM
// over TLS, and OAUTHBEARER with a token that the real azidentity
// credential got from the simulated Entra ID.
func TestKafkaSecurityOnTheRealBroker(t *testing.T) {
	c := kafkatest.NewReal(t)
	sec := kafkatest.NewSecurity(t)
	sim, err := simulator.New(simulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	cred, err := sim.Credential()
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		set  func(*config.Config)
	}{
		{"mutual TLS", func(cfg *config.Config) {
			cfg.KafkaBrokers = sec.MTLSBrokers
			cfg.KafkaTLS, cfg.KafkaTLSCAFile = true, sec.CAFile
			cfg.KafkaTLSCertFile, cfg.KafkaTLSKeyFile = sec.CertFile, sec.KeyFile
		}},
		{"SCRAM-SHA-512 over TLS", func(cfg *config.Config) {
			cfg.KafkaBrokers = sec.SCRAMBrokers
			cfg.KafkaTLS, cfg.KafkaTLSCAFile = true, sec.CAFile
			cfg.KafkaSASLMechanism, cfg.KafkaSASLUsername = config.SASLScramSHA512, sec.SCRAMUsername
			cfg.KafkaSASLPassword = config.NewSecret(sec.SCRAMPassword)
		}},
		{"SCRAM-SHA-256 over TLS, server name localhost", func(cfg *config.Config) {
			cfg.KafkaBrokers = sec.SCRAMBrokers
			cfg.KafkaTLS, cfg.KafkaTLSCAFile, cfg.KafkaTLSServerName = true, sec.CAFile, "localhost"
			cfg.KafkaSASLMechanism, cfg.KafkaSASLUsername = config.SASLScramSHA256, sec.SCRAMUsername
			cfg.KafkaSASLPassword = config.NewSecret(sec.SCRAMPassword)
		}},
		{"OAUTHBEARER with an Entra ID token", func(cfg *config.Config) {
			cfg.KafkaBrokers = sec.OAuthBrokers
			cfg.KafkaSASLMechanism = config.SASLOAuthBearer
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			tc.set(&cfg)
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			dialer, transport, err := kafkaClients(cfg, cred)
			if err != nil {
				t.Fatal(err)
			}
			topic := c.Topic(t, "secure", 1) // created over the plaintext listener
			p, err := producer.New(producer.Config{Brokers: cfg.KafkaBrokers, Transport: transport})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close(context.Background())
			acked := make(ackChan, 1)
			p.Send(producer.Record{Topic: topic, Key: []byte("k"), Value: []byte(tc.name), Ack: acked})
			select {
			case <-acked:
			case err := <-p.Err():
				t.Fatalf("write over %s: %v", tc.name, err)
			case <-time.After(60 * time.Second): // guards against a hang only
				t.Fatal("the record was never acknowledged")
			}

			group := "secure-" + strings.ReplaceAll(t.Name(), "/", "-")
			cons, err := consumer.New(consumer.Config{Brokers: cfg.KafkaBrokers, Topic: topic, Group: group, Dialer: dialer})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second) // guards against a hang only
			defer cancel()
			m, err := cons.Fetch(ctx)
			if err != nil {
				t.Fatalf("read over %s: %v", tc.name, err)
			}
			if string(m.Value) != tc.name {
				t.Errorf("read %q, want %q", m.Value, tc.name)
			}
			m.Done()
			if err := cons.Commit(ctx); err != nil {
				t.Fatalf("commit over %s: %v", tc.name, err)
			}
			if err := cons.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if got := c.Committed(t, group, topic); got[0] != 1 {
				t.Errorf("committed %v, want partition 0 at 1", got)
			}
		})
	}
}

// What the secured listeners refuse, the clients report without the
// secret: no client certificate, a wrong SCRAM password, a token the broker
// does not take, a CA that did not sign the broker's certificate.
func TestKafkaSecurityRefusals(t *testing.T) {
	kafkatest.NewReal(t)
	sec := kafkatest.NewSecurity(t)
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	sim, err := simulator.New(simulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	if err := os.WriteFile(otherCA, sim.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	const wrongPassword = "not-the-scram-password-7f3a"
	const badToken = "not-a-jwt-token-9c1e"

	for _, tc := range []struct {
		name    string
		set     func(*config.Config)
		cred    azcore.TokenCredential
		want    string // in the error
		secrets []string
	}{
		{"mTLS without a client certificate", func(cfg *config.Config) {
			cfg.KafkaBrokers = sec.MTLSBrokers
			cfg.KafkaTLS, cfg.KafkaTLSCAFile = true, sec.CAFile
		}, nil, "bad certificate", nil},
		{"a CA that did not sign the broker's certificate", func(cfg *config.Config) {
			cfg.KafkaBrokers = sec.SCRAMBrokers
			cfg.KafkaTLS, cfg.KafkaTLSCAFile = true, otherCA
			cfg.KafkaSASLMechanism, cfg.KafkaSASLUsername = config.SASLScramSHA512, sec.SCRAMUsername
			cfg.KafkaSASLPassword = config.NewSecret(sec.SCRAMPassword)
		}, nil, "certificate", []string{sec.SCRAMPassword}},
		{"a wrong SCRAM password", func(cfg *config.Config) {
			cfg.KafkaBrokers = sec.SCRAMBrokers
			cfg.KafkaTLS, cfg.KafkaTLSCAFile = true, sec.CAFile
			cfg.KafkaSASLMechanism, cfg.KafkaSASLUsername = config.SASLScramSHA512, sec.SCRAMUsername
			cfg.KafkaSASLPassword = config.NewSecret(wrongPassword)
		}, nil, "SASL", []string{wrongPassword}},
		{"a token the broker does not take", func(cfg *config.Config) {
			cfg.KafkaBrokers = sec.OAuthBrokers
			cfg.KafkaSASLMechanism = config.SASLOAuthBearer
		}, staticToken(badToken), "refused the token", []string{badToken}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			tc.set(&cfg)
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			dialer, _, err := kafkaClients(cfg, tc.cred)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second) // guards against a hang only
			defer cancel()
			err = dialAndAsk(ctx, dialer, cfg.KafkaBrokers[0])
			if err == nil {
				t.Fatal("the broker took the connection, want a refusal")
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			for _, s := range tc.secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q holds a secret", err)
				}
			}
		})
	}
}

// dialAndAsk connects and makes one request: with TLS 1.3 a refused client
// certificate only shows at the first read.
func dialAndAsk(ctx context.Context, d *kafka.Dialer, addr string) error {
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.ApiVersions()
	return err
}

type ackChan chan struct{}

func (a ackChan) Acked() { a <- struct{}{} }

// staticToken is a credential that always hands out the same token.
type staticToken string

func (s staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(s), ExpiresOn: time.Now().Add(time.Hour)}, nil
}
