// Package app wires the connector from its configuration and runs it: the
// one place where start-up order and the reverse teardown order are visible.
//
// Start-up: metrics registry and HTTP endpoints; the Defender lookup stack
// (credential, call budget, circuit breaker, client, cache, the budget and
// the cache sharing one Redis client with ENRICHER_REDIS_URL); the producer;
// the consumer; the pipeline. Teardown, bounded by ShutdownTimeout: stop
// fetching and drain the pipeline; flush the producer; commit and leave the
// group; close the budget and its Redis client; stop the HTTP server.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/defender-enricher/defender-enricher/breaker"
	"github.com/defender-enricher/defender-enricher/cache"
	"github.com/defender-enricher/defender-enricher/config"
	"github.com/defender-enricher/defender-enricher/consumer"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/health"
	"github.com/defender-enricher/defender-enricher/pipeline"
	"github.com/defender-enricher/defender-enricher/producer"
	"github.com/defender-enricher/defender-enricher/schemas"
)

// Deps are what the caller may supply instead of the configuration's
// defaults: the demo and the tests pass the simulator's credential and
// HTTP client.
type Deps struct {
	Logger     *slog.Logger
	Credential azcore.TokenCredential // nil: built from AZURE_* per ENRICHER_AZURE_CREDENTIAL
	HTTPClient *http.Client           // Defender and Entra calls; nil: TLS-verified default
	Getenv     func(string) string    // AZURE_* variables; nil: os.Getenv
	// AllowTopicCreation lets the producer create missing topics (the
	// demo's embedded broker only).
	AllowTopicCreation bool
}

// App is one wired connector.
type App struct {
	cfg      config.Config
	log      *slog.Logger
	registry *prometheus.Registry

	budget   callBudget
	redis    *redis.Client // the shared budget's, nil without ENRICHER_REDIS_URL
	breaker  *breaker.Breaker
	cache    *cache.Cache
	store    *cache.LRU
	producer *producer.Producer
	consumer *consumer.Consumer
	retries  *consumer.Consumer // the retry topic, in a group of its own
	pipeline *pipeline.Pipeline
	http     *http.Server
	httpLn   net.Listener

	cred      azcore.TokenCredential // the Defender API's, asked for a token at start-up
	scope     string
	watchdog  *health.Watchdog
	startedAt time.Time
	running   atomic.Bool // Run has started
	tokenOK   atomic.Bool // a token was obtained
	ready     atomic.Bool // every start-up step done: /readyz answers 200 from then on
	stopping  atomic.Bool // shutdown began: /readyz answers 503 again
}

// New builds the connector; it does no network I/O except listening on
// HTTPAddr.
func New(cfg config.Config, deps Deps) (_ *App, err error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &App{cfg: cfg, log: log, registry: prometheus.NewRegistry(), watchdog: health.New(cfg.HealthStallTimeout, nil)}
	// A step that fails releases what the steps before it started: the
	// consumer joins its group in the background from the moment it exists.
	defer func() {
		if err == nil {
			return
		}
		if a.consumer != nil {
			_ = a.consumer.Close(context.Background())
		}
		if a.retries != nil {
			_ = a.retries.Close(context.Background())
		}
		if a.producer != nil {
			_ = a.producer.Close(context.Background())
		}
		if a.budget != nil {
			a.budget.Close()
		}
		a.closeRedis()
	}()
	reg := a.registry
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// The Defender lookup stack.
	ep, err := resolveEndpoint(cfg, deps)
	if err != nil {
		return nil, err
	}
	cred := deps.Credential
	if cred == nil {
		if cred, err = newCredential(cfg, deps, ep); err != nil {
			return nil, err
		}
	}
	a.cred, a.scope = cred, ep.Scope
	if a.budget, err = a.newBudget(cfg, deps, ep, reg); err != nil {
		return nil, err
	}
	// The breaker is asked before every call, retries included; its open
	// time starts at a second and doubles up to BreakerTimeout.
	if a.breaker, err = breaker.New(breaker.Options{
		Failures: uint32(cfg.BreakerFailures), Timeout: cfg.BreakerTimeout, Logger: log, Registerer: reg,
	}); err != nil {
		return nil, err
	}
	client, err := defender.New(defender.Options{
		Endpoint: ep, Credential: cred, Budget: a.budget, Breaker: a.breaker, HTTPClient: deps.HTTPClient,
		AttemptTimeout: cfg.DefenderTimeout, Logger: log, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	a.store = cache.NewLRU(cfg.CacheSize, max(cfg.CacheTTL, cfg.NegativeCacheTTL))
	var users cache.Store // found users by SID and id, to answer alerts that name them
	if cfg.ReuseUser {
		users = cache.NewLRU(cfg.CacheSize, cfg.CacheTTL)
	}
	shared, err := a.newSharedCache(cfg, deps, ep, reg) // nil without ENRICHER_REDIS_URL
	if err != nil {
		return nil, err
	}
	if a.cache, err = cache.New(client, cache.Options{
		Store: a.store, TTL: cfg.CacheTTL, NegativeTTL: cfg.NegativeCacheTTL, Registerer: reg,
		ReuseUser: cfg.ReuseUser, Users: users, Shared: shared,
	}); err != nil {
		return nil, err
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "enricher_cache_entries", Help: "Alert ids whose answer is kept.",
	}, func() float64 { return float64(a.store.Len()) }))

	// Kafka.
	dialer, transport, err := kafkaClients(cfg, cred)
	if err != nil {
		return nil, err
	}
	if a.producer, err = producer.New(producer.Config{
		Brokers: cfg.KafkaBrokers, Transport: transport,
		MaxMessageBytes:    cfg.MaxMessageBytes,
		Compression:        compression[cfg.KafkaCompression],
		AllowTopicCreation: deps.AllowTopicCreation,
		Logger:             log,
	}); err != nil {
		return nil, err
	}
	consumerMetrics := consumer.NewMetrics(reg)
	reg.MustRegister(a.readyGauge())
	start := kafka.FirstOffset
	if cfg.StartOffset == config.Latest {
		start = kafka.LastOffset
	}
	if a.consumer, err = consumer.New(consumer.Config{
		Brokers: cfg.KafkaBrokers, Topic: cfg.InputTopic, Group: cfg.ConsumerGroup,
		StartOffset: start, Dialer: dialer, CommitInterval: cfg.CommitInterval, SessionTimeout: cfg.SessionTimeout,
		MaxBytes: max(consumer.DefaultMaxBytes, 2*cfg.MaxMessageBytes), Logger: log,
		Metrics: consumerMetrics, Transport: transport, Beat: a.watchdog.Beat("committer"),
	}); err != nil {
		return nil, err
	}
	// Deferred events are read from the first one kept, whatever
	// ENRICHER_START_OFFSET says: each is an alert still owed its user.
	if a.retries, err = consumer.New(consumer.Config{
		Brokers: cfg.KafkaBrokers, Topic: cfg.RetryTopic, Group: RetryGroup(cfg.ConsumerGroup),
		StartOffset: kafka.FirstOffset, Dialer: dialer, CommitInterval: cfg.CommitInterval, SessionTimeout: cfg.SessionTimeout,
		MaxBytes: max(consumer.DefaultMaxBytes, 2*cfg.MaxMessageBytes), Logger: log.With("topic", cfg.RetryTopic),
		Metrics: consumerMetrics, Transport: transport, Beat: a.watchdog.Beat("retry committer"),
	}); err != nil {
		return nil, err
	}
	parser, err := schemas.NewParser(schemas.ParserConfig{IDPointer: cfg.AlertIDPointer, MaxBytes: cfg.MaxMessageBytes, MaxRecords: cfg.MaxRecords})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", config.Env("alert-id-pointer"), err)
	}
	if a.pipeline, err = pipeline.New(pipeline.Config{
		InputTopic: cfg.InputTopic, OutputTopic: cfg.OutputTopic, DLQTopic: cfg.DLQTopic,
		RetryTopic: cfg.RetryTopic, RetryMaxAge: cfg.RetryMaxAge,
		Parser: parser, Format: cfg.OutputFormat, Beat: a.watchdog.Beat("fetch loop"), Wait: cfg.OnUnavailable == config.Wait, MaxEnrichWait: cfg.MaxEnrichWait,
		MaxInFlight: cfg.MaxInFlight, MaxInFlightBytes: int64(cfg.MaxInFlightBytes), MaxMessageBytes: cfg.MaxMessageBytes,
		DrainTimeout: cfg.ShutdownTimeout / 2, Logger: log, Registerer: reg,
	}, a.consumer, a.cache, a.producer); err != nil {
		return nil, err
	}

	if cfg.HTTPAddr != "" {
		if a.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("%s: %w", config.Env("http-addr"), err)
		}
		a.http = &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
	}
	return a, nil
}

// compression maps the kafka-compression option, whose values config
// checks, to kafka-go's codecs; none is the zero value.
var compression = map[string]kafka.Compression{
	"gzip":   kafka.Gzip,
	"snappy": kafka.Snappy,
	"lz4":    kafka.Lz4,
	"zstd":   kafka.Zstd,
}

// RetryGroup is the consumer group of the retry topic: the connector's
// group with ".retry" appended, so that its offsets never mix with the
// input's.
func RetryGroup(group string) string { return group + ".retry" }

// resolveEndpoint is defender.ResolveEndpoint of the configuration and
// AZURE_AUTHORITY_HOST, which must carry no user info (ResolveEndpoint's
// messages quote it whole).
func resolveEndpoint(cfg config.Config, deps Deps) (defender.Endpoint, error) {
	authority := getenv(deps)("AZURE_AUTHORITY_HOST")
	if redacted := config.RedactUserinfo(authority); redacted != authority {
		return defender.Endpoint{}, fmt.Errorf("AZURE_AUTHORITY_HOST %q must have no user info", redacted)
	}
	return defender.ResolveEndpoint(cfg.DefenderAPIURL, cfg.DefenderScope, authority)
}

func getenv(d Deps) func(string) string {
	if d.Getenv != nil {
		return d.Getenv
	}
	return os.Getenv
}

func (a *App) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", a.serveHealthz)
	mux.HandleFunc("GET /readyz", a.serveReadyz)
	if a.cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// HTTPAddr returns the address the HTTP endpoints listen on, or "".
func (a *App) HTTPAddr() string {
	if a.httpLn == nil {
		return ""
	}
	return a.httpLn.Addr().String()
}

// Run runs the connector until ctx ends (then it drains, flushes, commits
// and returns nil) or a write fails for good (then it commits only what was
// acknowledged and returns the error).
func (a *App) Run(ctx context.Context) error {
	a.startedAt = time.Now()
	a.running.Store(true)
	// Readiness: a token tried now, not at the first lookup; the group
	// joined and fetched. Both are watched until ready.
	readyCtx, stopReadiness := context.WithCancel(ctx)
	defer stopReadiness()
	go a.getToken(readyCtx)
	go a.watchReadiness(readyCtx)
	if a.http != nil {
		go func() {
			if err := a.http.Serve(a.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("http endpoints stopped", "error", err)
			}
		}()
	}
	// The shutdown bound runs from the signal, not from the end of the drain.
	stoppedAt := make(chan time.Time, 1)
	stopWatch := context.AfterFunc(ctx, func() { stoppedAt <- time.Now() })
	defer stopWatch()
	commitCtx, stopCommits := context.WithCancel(context.WithoutCancel(ctx))
	commitsDone := make(chan struct{})
	go func() {
		defer close(commitsDone)
		_ = a.consumer.Run(commitCtx)
	}()
	retryCommitsDone := make(chan struct{})
	go func() {
		defer close(retryCommitsDone)
		_ = a.retries.Run(commitCtx)
	}()
	// Deferred events are looked up again beside the fresh ones, and stop
	// with them: nothing may be written once the producer closes.
	retryCtx, stopRetries := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRetries()
	retriesDone := make(chan struct{})
	go func() {
		defer close(retriesDone)
		if err := a.pipeline.RunRetries(retryCtx, a.retries); err != nil {
			a.log.Error("deferred events are no longer looked up again", "topic", a.cfg.RetryTopic, "error", err)
		}
	}()
	a.log.Info("connector started", "http_addr", a.HTTPAddr(), "input", a.cfg.InputTopic, "output", a.cfg.OutputTopic, "dlq", a.cfg.DLQTopic,
		"group", a.cfg.ConsumerGroup, "retry", a.cfg.RetryTopic, "rate_limits", a.cfg.DefenderRateLimits.String(), "on_unavailable", string(a.cfg.OnUnavailable))

	runErr := a.pipeline.Run(ctx)
	a.stopping.Store(true)
	stopReadiness()
	stopRetries()
	<-retriesDone

	// Teardown, in reverse, bounded by ShutdownTimeout from the signal (or
	// from now, after a write failure).
	deadline := time.Now().Add(a.cfg.ShutdownTimeout)
	select {
	case at := <-stoppedAt:
		deadline = at.Add(a.cfg.ShutdownTimeout)
	default:
	}
	shutdownCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	if err := a.producer.Close(shutdownCtx); err != nil && runErr == nil {
		runErr = err
	}
	stopCommits()
	<-commitsDone
	<-retryCommitsDone
	// What was acknowledged is committed even after a write failure: the
	// tracker only ever commits below the first unacknowledged message.
	if err := a.consumer.Close(shutdownCtx); err != nil {
		a.log.Warn("last commit failed; the uncommitted events will be consumed again", "topic", a.cfg.InputTopic, "error", err)
	}
	if err := a.retries.Close(shutdownCtx); err != nil {
		a.log.Warn("last commit failed; the uncommitted deferred events will be consumed again", "topic", a.cfg.RetryTopic, "error", err)
	}
	a.budget.Close()
	a.closeRedis()
	if a.http != nil {
		_ = a.http.Shutdown(shutdownCtx)
	}
	st := a.pipeline.Stats()
	a.log.Info("connector stopped", "events", st.Total(), "enriched", st.Enriched, "not_found", st.NotFound,
		"unavailable", st.Unavailable, "failed", st.Failed, "skipped", st.Skipped, "dead_letters", st.DeadLetters,
		"deferred", st.Deferred, "updates", st.Updates, "given_up", st.GivenUp)
	return runErr
}

// Stats returns the pipeline's counts.
func (a *App) Stats() pipeline.Stats { return a.pipeline.Stats() }

// Registry returns the metrics registry, for the demo's summary.
func (a *App) Registry() *prometheus.Registry { return a.registry }
