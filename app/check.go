package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/segmentio/kafka-go"

	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/config"
	"github.com/defender-enricher/defender-enricher/defender"
)

// checkAlertID is an id of the right shape that no alert has: a 404 for it
// proves the call was authorised without reading anyone's data.
const checkAlertID = "da000000000000000000_0"

// Check runs the preflight of the check subcommand against the configured
// Kafka and Defender and writes one verdict line per step to w. It reports
// whether every step passed. It spends one call of the Defender budget.
func Check(ctx context.Context, cfg config.Config, deps Deps, w io.Writer) bool {
	ok := true
	step := func(name string, err error) bool {
		if err != nil {
			fmt.Fprintf(w, "FAIL  %s: %v\n", name, err)
			ok = false
			return false
		}
		fmt.Fprintf(w, "ok    %s\n", name)
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	dialer, transport, err := kafkaClients(cfg)
	if !step("Kafka client settings", err) {
		return false
	}
	reachable := false
	for _, b := range cfg.KafkaBrokers {
		conn, err := dialer.DialContext(ctx, "tcp", b)
		if err == nil {
			conn.Close()
			reachable = true
		}
		step("broker "+b+" reachable", describeDial(err))
	}
	if reachable {
		client := &kafka.Client{Addr: kafka.TCP(cfg.KafkaBrokers...), Transport: transport, Timeout: 10 * time.Second}
		topics := []string{cfg.InputTopic, cfg.OutputTopic, cfg.DLQTopic}
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
		if step("cluster metadata", err) {
			found := map[string]error{}
			for _, t := range md.Topics {
				found[t.Name] = t.Error
			}
			for _, t := range topics {
				terr, present := found[t]
				if !present {
					terr = errors.New("not in the cluster's metadata")
				}
				if terr != nil {
					terr = fmt.Errorf("%w: create it (or fix the topic option)", terr)
				}
				step("topic "+t+" present", terr)
			}
		}
	}

	ep, err := defender.ResolveEndpoint(cfg.DefenderAPIURL, cfg.DefenderScope, getenv(deps)("AZURE_AUTHORITY_HOST"))
	if !step("Defender endpoint "+cfg.DefenderAPIURL+" (scope "+ep.Scope+")", err) {
		return false
	}
	cred := deps.Credential
	if cred == nil {
		cred, err = defender.NewCredential(cfg.AzureCredential, defender.CredentialOptions{
			AuthorityHost: ep.AuthorityHost, DisableInstanceDiscovery: cfg.AzureDisableDiscovery,
			HTTPClient: deps.HTTPClient, Getenv: deps.Getenv,
		})
		if !step("credential "+string(cfg.AzureCredential), err) {
			return false
		}
	}
	_, err = cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{ep.Scope}})
	if !step("access token obtained", err) {
		return false
	}
	limits := budget.Limits{{Calls: 1, Per: time.Minute}}
	b, _ := budget.New(limits, nil)
	defer b.Close()
	client, err := defender.New(defender.Options{Endpoint: ep, Credential: cred, Budget: b, HTTPClient: deps.HTTPClient, MaxAttempts: 1})
	if err == nil {
		_, err = client.User(ctx, checkAlertID)
		if errors.Is(err, defender.ErrNotFound) {
			err = nil
		}
	}
	step("one API call authorised (GET /api/alerts/"+checkAlertID+"/user)", err)
	if ok {
		fmt.Fprintln(w, "all checks passed")
	}
	return ok
}

func describeDial(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: check ENRICHER_KAFKA_BROKERS, the network path, and ENRICHER_KAFKA_TLS / SASL settings", err)
}
