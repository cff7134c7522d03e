// Package demo runs the whole connector on one machine with nothing to set
// up: an embedded Kafka-protocol broker (kfake), the Entra ID and Defender
// simulator with the real azidentity flow against it, and a generator of
// realistic alerts feeding the real run path. It prints enriched events as
// they arrive on the output topic and a summary at the end.
//
// Everything listens on 127.0.0.1. The connector runs with its production
// defaults, the 100/1m,1500/1h call budget included.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/defender-enricher/defender-enricher/app"
	"github.com/defender-enricher/defender-enricher/config"
	"github.com/defender-enricher/defender-enricher/schemas"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// Options configure Run.
type Options struct {
	Events int       // stop after exactly this many events were published (output and dead letters); default 300
	Rate   int       // input messages per second; default 100
	Out    io.Writer // the event stream and the summary
	Log    io.Writer // the connector's own logs; nil discards them
	Seed   uint64    // generator seed; 0 means a fixed default
	JSON   bool      // print each output record as it is on the topic
}

const (
	inputTopic  = "defender.alerts"
	outputTopic = "defender.alerts.enriched"
	dlqTopic    = "defender.alerts.dlq"
	retryTopic  = "defender.alerts.retry"
)

// Run starts the broker, the simulator and the connector, generates alerts
// that make exactly Events events, waits until all of them were published
// (or ctx ends), then stops everything and prints the summary, which
// counts those events.
func Run(ctx context.Context, o Options) error {
	if o.Events <= 0 {
		o.Events = 300
	}
	if o.Rate <= 0 {
		o.Rate = 100
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Seed == 0 {
		o.Seed = 20261127
	}
	out := o.Out

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, inputTopic, outputTopic, dlqTopic, retryTopic))
	if err != nil {
		return fmt.Errorf("starting the embedded broker: %w", err)
	}
	defer cluster.Close()

	gen := newGenerator(o.Seed)
	sim, err := simulator.New(simulator.Options{Latency: 40 * time.Millisecond})
	if err != nil {
		return fmt.Errorf("starting the simulator: %w", err)
	}
	defer sim.Close()
	for _, id := range gen.unknown {
		sim.SetNotFound(id)
	}

	cfg := config.Default()
	cfg.KafkaBrokers = cluster.ListenAddrs()
	cfg.DefenderAPIURL = sim.URL()
	cfg.DefenderScope = sim.Scope()
	cfg.AzureCredential = "client-secret"
	cfg.AzureDisableDiscovery = true
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.MaxEnrichWait = 3 * time.Second
	cfg.ShutdownTimeout = 10 * time.Second
	if err := cfg.Validate(); err != nil {
		return err
	}
	env := map[string]string{
		"AZURE_TENANT_ID":      sim.TenantID(),
		"AZURE_CLIENT_ID":      sim.ClientID(),
		"AZURE_CLIENT_SECRET":  sim.ClientSecret(),
		"AZURE_AUTHORITY_HOST": sim.AuthorityHost(),
	}
	connector, err := app.New(cfg, app.Deps{
		Logger:     slog.New(slog.NewTextHandler(o.Log, &slog.HandlerOptions{Level: slog.LevelInfo})),
		HTTPClient: sim.Client(),
		Getenv:     func(k string) string { return env[k] },
	})
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "defender-enricher demo: embedded Kafka at %s, Entra ID at %s, Defender at %s\n",
		strings.Join(cfg.KafkaBrokers, ","), sim.AuthorityHost(), sim.URL())
	fmt.Fprintf(out, "call budget %s, metrics at http://%s/metrics; stopping after %d events\n\n",
		cfg.DefenderRateLimits, connector.HTTPAddr(), o.Events)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- connector.Run(runCtx) }()

	producer, err := kgo.NewClient(kgo.SeedBrokers(cfg.KafkaBrokers...), kgo.DefaultProduceTopic(inputTopic))
	if err != nil {
		return err
	}
	defer producer.Close()
	// The generator splits messages into events as the connector does, so
	// that it can stop at exactly o.Events.
	parser, err := schemas.NewParser(schemas.ParserConfig{IDPointer: cfg.AlertIDPointer, MaxBytes: cfg.MaxMessageBytes})
	if err != nil {
		return err
	}
	genDone := make(chan struct{})
	go func() {
		defer close(genDone)
		gen.run(runCtx, producer, o.Rate, o.Events, parser)
	}()

	start := time.Now()
	var printed atomic.Int64
	readErr := watch(runCtx, cfg.KafkaBrokers, out, o.Events, o.JSON, &printed)
	elapsed := time.Since(start)
	stop()
	<-genDone
	if err := <-runErr; err != nil {
		return fmt.Errorf("connector: %w", err)
	}
	if readErr != nil && !errors.Is(readErr, context.Canceled) {
		return readErr
	}

	st := connector.Stats()
	looked := st.Enriched + st.NotFound
	ratio := 0.0
	if looked > 0 {
		ratio = float64(st.FromCache) / float64(looked)
	}
	fmt.Fprintf(out, "\nsummary after %.1fs\n", elapsed.Seconds())
	fmt.Fprintf(out, "  input messages   %d (%d malformed on purpose)\n", gen.sent.Load(), gen.malformed.Load())
	fmt.Fprintf(out, "  events           %d\n", st.Total())
	fmt.Fprintf(out, "  enriched         %d\n", st.Enriched)
	fmt.Fprintf(out, "  not found        %d\n", st.NotFound)
	fmt.Fprintf(out, "  unavailable      %d\n", st.Unavailable)
	fmt.Fprintf(out, "  failed           %d\n", st.Failed)
	fmt.Fprintf(out, "  skipped          %d (other Defender services)\n", st.Skipped)
	fmt.Fprintf(out, "  dead letters     %d\n", st.DeadLetters)
	fmt.Fprintf(out, "  API calls        %d (token requests %d)\n", sim.CallCount(), sim.TokenRequests())
	fmt.Fprintf(out, "  cache hit ratio  %.0f%% of lookups answered without a call\n", 100*ratio)
	fmt.Fprintf(out, "  events/s         %.1f\n", float64(st.Total())/elapsed.Seconds())
	return nil
}

// watch prints what the connector publishes until n records were seen.
func watch(ctx context.Context, brokers []string, out io.Writer, n int, raw bool, seen *atomic.Int64) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(outputTopic, dlqTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer cl.Close()
	for seen.Load() < int64(n) {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if seen.Load() >= int64(n) {
				return
			}
			seen.Add(1)
			if raw && r.Topic == outputTopic {
				fmt.Fprintln(out, string(r.Value))
				return
			}
			fmt.Fprintln(out, describe(r))
		})
	}
	return nil
}

// describe renders one output or dead-letter record as a line.
func describe(r *kgo.Record) string {
	if r.Topic == dlqTopic {
		var reason, msg string
		for _, h := range r.Headers {
			switch h.Key {
			case schemas.HeaderReason:
				reason = string(h.Value)
			case schemas.HeaderMessage:
				msg = string(h.Value)
			}
		}
		return fmt.Sprintf("%-12s %-34s %s", "dead letter", reason, msg)
	}
	var v struct {
		AlertID string `json:"alertId"`
		Alert   struct {
			Title      string `json:"title"`
			Severity   string `json:"severity"`
			Properties struct {
				Title         string `json:"Title"`
				Severity      string `json:"Severity"`
				ServiceSource string `json:"ServiceSource"`
			} `json:"properties"`
		} `json:"alert"`
		User *struct {
			ID string `json:"id"`
		} `json:"user"`
		Enrichment struct {
			Status string `json:"status"`
			Source string `json:"source"`
			Error  string `json:"error"`
		} `json:"enrichment"`
		Origin struct {
			Partition int   `json:"partition"`
			Offset    int64 `json:"offset"`
		} `json:"origin"`
	}
	if err := json.Unmarshal(r.Value, &v); err != nil {
		return "unreadable output: " + err.Error()
	}
	title, severity := v.Alert.Title, v.Alert.Severity
	if title == "" {
		title, severity = v.Alert.Properties.Title, v.Alert.Properties.Severity
	}
	who := "-"
	switch v.Enrichment.Status {
	case "enriched":
		who = fmt.Sprintf("%s (%s)", v.User.ID, v.Enrichment.Source)
	case "skipped":
		who = "(" + v.Alert.Properties.ServiceSource + ")"
	case "unavailable", "failed":
		who = "(" + firstLine(v.Enrichment.Error, 40) + ")"
	}
	return fmt.Sprintf("%-12s %-34s %-28s %-7s %s", v.Enrichment.Status, v.AlertID, who, severity, firstLine(title, 48))
}

func firstLine(s string, n int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > n {
		s = s[:n-1] + "…"
	}
	return s
}
