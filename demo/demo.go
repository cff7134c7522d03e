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
	"maps"
	"net/http"
	"slices"
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
	Events int       // stop after exactly this many events were published (output and dead letters); default 600
	Rate   int       // input messages per second; default 100
	Out    io.Writer // the event stream and the summary
	Log    io.Writer // the connector's own logs; nil discards them
	Seed   uint64    // seed of the generator and the user pool; 0 means a fixed default
	JSON   bool      // print each output record as it is on the topic
	// Outage makes Defender answer 503 for this long, starting a sixth of
	// the way through the run: the breaker opens, alerts go out
	// unavailable and come again as updates once it is back. 0: none.
	Outage time.Duration
	// Format is the output topic's format (ENRICHER_OUTPUT_FORMAT);
	// default the envelope. The stream and the summary read any of them.
	Format schemas.Format
}

const (
	defaultSeed = 20261127
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
		o.Events = 600
	}
	if o.Rate <= 0 {
		o.Rate = 100
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Seed == 0 {
		o.Seed = defaultSeed
	}
	out := o.Out

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, inputTopic, outputTopic, dlqTopic, retryTopic))
	if err != nil {
		return fmt.Errorf("starting the embedded broker: %w", err)
	}
	defer cluster.Close()

	// One pool for the simulator and the generator: the user an alert
	// names is the user Defender answers for it.
	pool := simulator.NewUserPool(poolSize, o.Seed)
	gen := newGenerator(o.Seed, pool)
	sim, err := newSimulator(pool)
	if err != nil {
		return err
	}
	defer sim.Close()

	cfg := config.Default()
	cfg.KafkaBrokers = cluster.ListenAddrs()
	cfg.DefenderAPIURL = sim.URL()
	cfg.DefenderScope = sim.Scope()
	cfg.AzureCredential = "client-secret"
	cfg.AzureDisableDiscovery = true
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.MaxEnrichWait = 3 * time.Second
	cfg.ShutdownTimeout = 10 * time.Second
	if o.Format != "" {
		cfg.OutputFormat = o.Format
	}
	read, err := readerFor(cfg.OutputFormat)
	if err != nil {
		return err
	}
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
	notes := make(chan string, 2)
	if o.Outage > 0 {
		go outage(runCtx, sim, time.Duration(o.Events)*time.Second/time.Duration(6*o.Rate), o.Outage, notes)
	}
	var printed atomic.Int64
	seen := newTally()
	readErr := watch(runCtx, cfg.KafkaBrokers, out, o.Events, o.JSON, read, &printed, seen, notes)
	elapsed := time.Since(start)
	stop()
	<-genDone
	if err := <-runErr; err != nil {
		return fmt.Errorf("connector: %w", err)
	}
	if readErr != nil && !errors.Is(readErr, context.Canceled) {
		return readErr
	}

	fmt.Fprintf(out, "\nsummary after %.1fs\n", elapsed.Seconds())
	fmt.Fprintf(out, "  input messages   %d (%d malformed on purpose)\n", gen.sent.Load(), gen.malformed.Load())
	seen.print(out)
	fmt.Fprintf(out, "  API calls        %d (token requests %d)\n", sim.CallCount(), sim.TokenRequests())
	fmt.Fprintf(out, "  cache hit ratio  %.0f%% of lookups answered without a call\n", 100*seen.withoutCall())
	fmt.Fprintf(out, "  events/s         %.1f\n", float64(seen.events)/elapsed.Seconds())
	return nil
}

// newSimulator starts the Entra ID and Defender simulator of the demo,
// answering the pool's users.
func newSimulator(pool *simulator.UserPool) (*simulator.Server, error) {
	sim, err := simulator.New(simulator.Options{Latency: 40 * time.Millisecond, Users: pool.Users()})
	if err != nil {
		return nil, fmt.Errorf("starting the simulator: %w", err)
	}
	return sim, nil
}

// outage makes Defender answer 503 from after until after+length, and
// says so on notes.
func outage(ctx context.Context, sim *simulator.Server, after, length time.Duration, notes chan<- string) {
	select {
	case <-time.After(after):
	case <-ctx.Done():
		return
	}
	sim.SetOutage(http.StatusServiceUnavailable)
	notes <- fmt.Sprintf("-- Defender answers 503 for %v: the breaker opens, alerts go out unavailable and are deferred --", length)
	select {
	case <-time.After(length):
	case <-ctx.Done():
	}
	sim.SetOutage(0)
	notes <- "-- Defender is back: deferred alerts come again as updates --"
}

// watch prints what the connector publishes until n records were seen, and
// counts them in t. Lines on notes are printed between records.
func watch(ctx context.Context, brokers []string, out io.Writer, n int, raw bool, read reader, seen *atomic.Int64, t *tally, notes <-chan string) error {
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
			select {
			case note := <-notes:
				if !raw {
					fmt.Fprintln(out, note)
				}
			default:
			}
			seen.Add(1)
			t.add(r, read)
			if raw && r.Topic == outputTopic {
				fmt.Fprintln(out, string(r.Value))
				return
			}
			fmt.Fprintln(out, describe(r, read))
		})
	}
	return nil
}

// output is what the demo reads of an output record.
type output struct {
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
}

// isUpdate reports whether an output record is an update: an event
// published again, enriched after it went out unavailable. Any value but
// null or false at the top-level "update" marks one.
func isUpdate(value []byte) bool {
	var v struct {
		Update json.RawMessage `json:"update"`
	}
	if json.Unmarshal(value, &v) != nil {
		return false
	}
	s := string(v.Update)
	return s != "" && s != "null" && s != "false"
}

// describe renders one output or dead-letter record as a line. The user
// column names the source of the answer unless it is "api", and an update.
func describe(r *kgo.Record, read reader) string {
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
	v, update, err := read(r.Value)
	if err != nil {
		return "unreadable output: " + err.Error()
	}
	title, severity := v.Alert.Title, v.Alert.Severity
	if title == "" {
		title, severity = v.Alert.Properties.Title, v.Alert.Properties.Severity
	}
	var notes []string
	if src := v.Enrichment.Source; src != "" && src != "api" {
		notes = append(notes, src)
	}
	if update {
		notes = append(notes, "update")
	}
	who := "-"
	switch v.Enrichment.Status {
	case "enriched":
		if v.User != nil {
			who = v.User.ID
		}
	case "skipped":
		notes = append(notes, v.Alert.Properties.ServiceSource)
		who = ""
	case "unavailable", "failed":
		notes = append(notes, firstLine(v.Enrichment.Error, 40))
		who = ""
	}
	if len(notes) > 0 {
		who = strings.TrimSpace(who + " (" + strings.Join(notes, ", ") + ")")
	}
	return fmt.Sprintf("%-12s %-34s %-32s %-13s %s", v.Enrichment.Status, v.AlertID, who, severity, firstLine(title, 48))
}

// tally counts the records the demo saw, for the summary.
type tally struct {
	events      int
	deadLetters int
	updates     int
	statuses    map[string]int            // output records by enrichment.status
	sources     map[string]map[string]int // by status, then by enrichment.source when not ""
}

func newTally() *tally {
	return &tally{statuses: map[string]int{}, sources: map[string]map[string]int{}}
}

func (t *tally) add(r *kgo.Record, read reader) {
	t.events++
	if r.Topic == dlqTopic {
		t.deadLetters++
		return
	}
	v, update, err := read(r.Value)
	if err != nil || v.Enrichment.Status == "" {
		t.statuses["unreadable"]++
		return
	}
	status := v.Enrichment.Status
	t.statuses[status]++
	if src := v.Enrichment.Source; src != "" {
		if t.sources[status] == nil {
			t.sources[status] = map[string]int{}
		}
		t.sources[status][src]++
	}
	if update {
		t.updates++
	}
}

// withoutCall is the share of lookups (events enriched or not found)
// answered from a cache.
func (t *tally) withoutCall() float64 {
	looked, fromAPI := 0, 0
	for _, status := range []string{"enriched", "not_found"} {
		for src, n := range t.sources[status] {
			looked += n
			if src == "api" {
				fromAPI += n
			}
		}
	}
	if looked == 0 {
		return 0
	}
	return float64(looked-fromAPI) / float64(looked)
}

// print writes the counts by status, each with its counts by source, in
// the summary's layout: a status the demo does not know is shown too.
func (t *tally) print(out io.Writer) {
	line := func(label string, n int, note string) {
		if note != "" {
			note = " (" + note + ")"
		}
		fmt.Fprintf(out, "  %-16s %d%s\n", label, n, note)
	}
	bySource := func(status string) string {
		var parts []string
		for _, src := range slices.Sorted(maps.Keys(t.sources[status])) {
			parts = append(parts, fmt.Sprintf("%s %d", src, t.sources[status][src]))
		}
		return strings.Join(parts, ", ")
	}
	line("events", t.events, "")
	known := []string{"enriched", "not_found", "unavailable", "failed", "skipped"}
	for _, status := range known {
		note := bySource(status)
		if status == "skipped" {
			note = "other Defender services"
		}
		line(strings.ReplaceAll(status, "_", " "), t.statuses[status], note)
	}
	for _, status := range slices.Sorted(maps.Keys(t.statuses)) {
		if !slices.Contains(known, status) {
			line(strings.ReplaceAll(status, "_", " "), t.statuses[status], bySource(status))
		}
	}
	line("dead letters", t.deadLetters, "")
	line("updates", t.updates, "published again once enriched, counted in their status too")
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
