package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/segmentio/kafka-go"

	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/config"
	"github.com/defender-enricher/defender-enricher/defender"
)

// checkAlertID is an id of the right shape that no alert has: a 404 for it
// proves the call was authorised without reading anyone's data.
const checkAlertID = "da000000000000000000_0"

// maxVerdict bounds the error text of one verdict line; the whole error
// goes to the debug log.
const maxVerdict = 500

// Check runs the preflight of the check subcommand against the configured
// Kafka and Defender and writes one verdict line per step to w: "ok",
// "FAILED" with a one-line reason, or "skipped" with the failed step it
// needed. Every step is listed, reached or not, and a last line counts the
// failures. The Kafka steps and the Defender steps are two independent
// chains. The full text of each failure is logged at debug level. Check
// reports whether every step passed. It spends one call of the Defender
// budget.
func Check(ctx context.Context, cfg config.Config, deps Deps, w io.Writer) bool {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &verdicts{w: w, log: log}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	checkKafka(ctx, cfg, deps, r)
	checkRedis(ctx, cfg, r)
	checkDefender(ctx, cfg, deps, r)
	if r.failed == 0 {
		fmt.Fprintf(w, "all %d steps passed\n", r.steps)
		return true
	}
	fmt.Fprintf(w, "%d of %d steps failed", r.failed, r.steps)
	if r.skipped > 0 {
		fmt.Fprintf(w, " (%d skipped)", r.skipped)
	}
	fmt.Fprintln(w)
	return false
}

func checkKafka(ctx context.Context, cfg config.Config, deps Deps, r *verdicts) {
	topics := []string{cfg.InputTopic, cfg.OutputTopic, cfg.DLQTopic, cfg.RetryTopic}
	skipRest := func(from int, why string) {
		steps := []string{}
		if from <= 1 {
			for _, b := range cfg.KafkaBrokers {
				steps = append(steps, "broker "+b+" reachable")
			}
		}
		if from <= 2 {
			steps = append(steps, "cluster metadata")
		}
		for _, t := range topics {
			steps = append(steps, "topic "+t+" present")
		}
		for _, s := range steps {
			r.skip(s, why)
		}
	}
	dialer, transport, err := checkKafkaClients(cfg, deps)
	if !r.step("Kafka client settings", err) {
		skipRest(1, "needs the Kafka client settings")
		return
	}
	reachable := false
	for _, b := range cfg.KafkaBrokers {
		conn, err := dialer.DialContext(ctx, "tcp", b)
		if err == nil {
			conn.Close()
			reachable = true
		}
		r.step("broker "+b+" reachable", describeDial(err))
	}
	if !reachable {
		skipRest(2, "no broker reachable")
		return
	}
	client := &kafka.Client{Addr: kafka.TCP(cfg.KafkaBrokers...), Transport: transport, Timeout: 10 * time.Second}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if !r.step("cluster metadata", err) {
		skipRest(3, "needs the cluster metadata")
		return
	}
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
		r.step("topic "+t+" present", terr)
	}
}

// checkRedis, with ENRICHER_REDIS_URL set, runs one script that reads
// Redis's clock: the server answers within ENRICHER_REDIS_TIMEOUT, the
// password is right and scripts are allowed, as the shared budget needs.
func checkRedis(ctx context.Context, cfg config.Config, r *verdicts) {
	if !cfg.RedisURL.IsSet() {
		return
	}
	rdb, err := newRedisClient(cfg, nil)
	if err != nil {
		r.step("Redis of the shared call budget", err)
		return
	}
	defer rdb.Close()
	name := "Redis " + rdb.Options().Addr + " answers a script (the shared call budget)"
	ctx, cancel := context.WithTimeout(ctx, cfg.RedisTimeout)
	defer cancel()
	if err := rdb.Eval(ctx, "return redis.call('TIME')", nil).Err(); err != nil {
		r.step(name, fmt.Errorf("%w: check %s and that Redis answers within %s (%s)", err,
			config.Env("redis-url"), cfg.RedisTimeout, config.Env("redis-timeout")))
		return
	}
	r.step(name, nil)
}

func checkDefender(ctx context.Context, cfg config.Config, deps Deps, r *verdicts) {
	credStep := "credential " + string(cfg.AzureCredential)
	const tokenStep = "access token obtained"
	callStep := "one API call authorised (GET /api/alerts/" + checkAlertID + "/user)"

	ep, err := resolveEndpoint(cfg, deps)
	if err != nil {
		r.step("Defender endpoint "+config.RedactUserinfo(cfg.DefenderAPIURL), err)
		r.skip(credStep, "needs the Defender endpoint")
		r.skip(tokenStep, "needs the Defender endpoint")
		r.skip(callStep, "needs the Defender endpoint")
		return
	}
	r.step("Defender endpoint "+cfg.DefenderAPIURL+" (scope "+ep.Scope+")", nil)
	cred := deps.Credential
	if cred == nil {
		cred, err = newCredential(cfg, deps, ep)
	}
	if !r.step(credStep, err) {
		r.skip(tokenStep, "needs the credential")
		r.skip(callStep, "needs the credential")
		return
	}
	_, err = cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{ep.Scope}})
	if !r.step(tokenStep, err) {
		r.skip(callStep, "needs an access token")
		return
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
	r.step(callStep, err)
}

// checkKafkaClients is kafkaClients with the Azure credential that
// OAUTHBEARER needs, built only for that mechanism.
func checkKafkaClients(cfg config.Config, deps Deps) (*kafka.Dialer, *kafka.Transport, error) {
	cred := deps.Credential
	if cfg.KafkaSASLMechanism == config.SASLOAuthBearer && cred == nil {
		ep, err := resolveEndpoint(cfg, deps)
		if err != nil {
			return nil, nil, err
		}
		if cred, err = newCredential(cfg, deps, ep); err != nil {
			return nil, nil, err
		}
	}
	return kafkaClients(cfg, cred)
}

// newCredential builds the configured credential.
func newCredential(cfg config.Config, deps Deps, ep defender.Endpoint) (azcore.TokenCredential, error) {
	return defender.NewCredential(cfg.AzureCredential, defender.CredentialOptions{
		AuthorityHost: ep.AuthorityHost, DisableInstanceDiscovery: cfg.AzureDisableDiscovery,
		HTTPClient: deps.HTTPClient, Getenv: deps.Getenv,
	})
}

// verdicts writes the verdict lines and counts them.
type verdicts struct {
	w                      io.Writer
	log                    *slog.Logger
	steps, failed, skipped int
}

// step writes "ok" or "FAILED" with err's one-line summary, and reports
// whether the step passed.
func (r *verdicts) step(name string, err error) bool {
	r.steps++
	if err == nil {
		fmt.Fprintf(r.w, "ok       %s\n", name)
		return true
	}
	r.failed++
	fmt.Fprintf(r.w, "FAILED   %s: %s\n", name, oneLine(err))
	r.log.Debug("check step failed", "step", name, "error", err.Error())
	return false
}

// skip writes a step that was not reached and why.
func (r *verdicts) skip(name, why string) {
	r.steps++
	r.skipped++
	fmt.Fprintf(r.w, "skipped  %s: %s\n", name, why)
}

// oneLine renders err as one line of at most maxVerdict bytes. An Entra ID
// refusal becomes the credential, the status and Entra's own error and
// description; any other multi-line error has its lines joined.
func oneLine(err error) string {
	var s string
	var afe *azidentity.AuthenticationFailedError
	if errors.As(err, &afe) && afe.RawResponse != nil {
		s = describeAuthFailure(err, afe)
	} else {
		s = joinLines(err.Error())
	}
	if len(s) > maxVerdict {
		cut := maxVerdict
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "… (the whole error at ENRICHER_LOG_LEVEL=debug)"
	}
	return s
}

func describeAuthFailure(err error, afe *azidentity.AuthenticationFailedError) string {
	first, _, _ := strings.Cut(afe.Error(), "\n")
	first = strings.TrimRight(strings.TrimSpace(first), ".")
	s := fmt.Sprintf("%s: %s", first, afe.RawResponse.Status)
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if payload, perr := runtime.Payload(afe.RawResponse); perr == nil && json.Unmarshal(payload, &body) == nil {
		// Entra appends "\r\nTrace ID: ..." lines to the description.
		desc, _, _ := strings.Cut(body.Description, "\n")
		if body.Error != "" {
			s += ": " + body.Error
		}
		if desc = strings.TrimSpace(desc); desc != "" {
			s += ": " + desc
		}
	}
	// What wraps the azidentity error (a defender.TokenError's advice).
	if outer := err.Error(); outer != afe.Error() {
		if i := strings.LastIndex(outer, afe.Error()); i >= 0 {
			if before := strings.TrimSpace(outer[:i]); before != "" {
				s = before + " " + s
			}
			if after := strings.TrimSpace(outer[i+len(afe.Error()):]); after != "" {
				s += " " + after
			}
		}
	}
	return s
}

// joinLines joins the non-empty lines of s with "; ", leaving out rule
// lines such as azidentity's "-----".
func joinLines(s string) string {
	var parts []string
	for _, line := range strings.Split(s, "\n") {
		line = strings.Join(strings.Fields(line), " ")
		if line == "" || strings.Trim(line, "-=") == "" {
			continue
		}
		parts = append(parts, line)
	}
	return strings.Join(parts, "; ")
}

func describeDial(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: check ENRICHER_KAFKA_BROKERS, the network path, and ENRICHER_KAFKA_TLS / SASL settings", err)
}
