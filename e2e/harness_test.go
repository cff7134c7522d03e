package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/defender-enricher/defender-enricher/app"
	"github.com/defender-enricher/defender-enricher/config"
	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/simulator"
)

// env is one test's world: a cluster, an input topic, output and
// dead-letter topics, a consumer group and a simulator. Connectors started
// on it, in-process or as the binary, share the group and the topics, as
// replicas of one deployment would.
type env struct {
	t       testing.TB
	cluster *kafkatest.Cluster
	sim     *simulator.Server

	in, out, dlq, retry string
	group               string
	partitions          int

	// base holds the ENRICHER_ and AZURE_ variables every connector of the
	// env gets; startConnector and startBinary take overrides on top.
	base map[string]string

	caOnce sync.Once
	caFile string
}

// newEnv creates the topics (input with partitions partitions, output and
// dead-letter topics with four), a fresh group name and a simulator, and
// the configuration that wires a connector to them.
//
// The base configuration differs from the defaults only where a test needs
// it to: commits every 100ms so that committed offsets are seen quickly, a
// call budget large enough never to throttle a test stream (tests of the
// budget override it), a 10s shutdown timeout, and the HTTP endpoints on a
// free port of 127.0.0.1.
func newEnv(t testing.TB, c *kafkatest.Cluster, partitions int, opts ...simulator.Options) *env {
	t.Helper()
	var so simulator.Options
	if len(opts) > 0 {
		so = opts[0]
	}
	sim, err := simulator.New(so)
	if err != nil {
		t.Fatalf("starting the simulator: %v", err)
	}
	t.Cleanup(sim.Close)

	name := topicPrefix(t)
	e := &env{
		t: t, cluster: c, sim: sim,
		in:         c.Topic(t, name+".in", partitions),
		out:        c.Topic(t, name+".out", 4),
		dlq:        c.Topic(t, name+".dlq", 4),
		retry:      c.Topic(t, name+".retry", 4),
		group:      name + "-" + randomHex(4),
		partitions: partitions,
	}
	e.base = map[string]string{
		"ENRICHER_KAFKA_BROKERS":                    strings.Join(c.Brokers(), ","),
		"ENRICHER_INPUT_TOPIC":                      e.in,
		"ENRICHER_OUTPUT_TOPIC":                     e.out,
		"ENRICHER_DLQ_TOPIC":                        e.dlq,
		"ENRICHER_RETRY_TOPIC":                      e.retry,
		"ENRICHER_CONSUMER_GROUP":                   e.group,
		"ENRICHER_COMMIT_INTERVAL":                  "100ms",
		"ENRICHER_SHUTDOWN_TIMEOUT":                 "10s",
		"ENRICHER_DEFENDER_RATE_LIMITS":             "100000/1m",
		"ENRICHER_DEFENDER_API_URL":                 sim.URL(),
		"ENRICHER_DEFENDER_SCOPE":                   sim.Scope(),
		"ENRICHER_AZURE_CREDENTIAL":                 "client-secret",
		"ENRICHER_AZURE_DISABLE_INSTANCE_DISCOVERY": "true",
		"ENRICHER_HTTP_ADDR":                        "127.0.0.1:0",
		"ENRICHER_LOG_FORMAT":                       "text",
		"AZURE_TENANT_ID":                           sim.TenantID(),
		"AZURE_CLIENT_ID":                           sim.ClientID(),
		"AZURE_CLIENT_SECRET":                       sim.ClientSecret(),
		"AZURE_AUTHORITY_HOST":                      sim.AuthorityHost(),
	}
	return e
}

// topicPrefix turns the test's name into a short topic-safe prefix.
func topicPrefix(t testing.TB) string {
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, t.Name())
	if len(name) > 60 {
		name = name[:60]
	}
	return "e2e-" + strings.Trim(name, "-")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// vars returns the env's base variables with overrides applied; an
// override with an empty value removes the variable.
func (e *env) vars(overrides map[string]string) map[string]string {
	v := maps.Clone(e.base)
	for k, val := range overrides {
		if val == "" {
			delete(v, k)
		} else {
			v[k] = val
		}
	}
	return v
}

// caCertFile writes the simulator's CA certificate once and returns its
// path, for SSL_CERT_FILE.
func (e *env) caCertFile() string {
	e.caOnce.Do(func() {
		e.caFile = filepath.Join(e.t.TempDir(), "simulator-ca.pem")
		if err := os.WriteFile(e.caFile, e.sim.CACertPEM(), 0o600); err != nil {
			e.t.Fatalf("writing the simulator's CA: %v", err)
		}
	})
	return e.caFile
}

// startConnector starts a connector in-process with the env's
// configuration and overrides (ENRICHER_ variables, read by config.Load as
// the binary reads them). Its calls to Entra ID and Defender go through the
// simulator's client, which trusts the simulator's CA and nothing else.
//
// The returned stop func cancels the connector's context and waits for Run
// to return, bounded by the shutdown timeout (the connector's own bound,
// from the signal) plus a margin, and returns Run's error; later
// calls return the first call's result. It also runs at cleanup, where an
// error fails the test.
func startConnector(t *testing.T, e *env, overrides map[string]string) (*app.App, func() error) {
	t.Helper()
	return startConnectorWith(t, e, e.sim.Client(), overrides)
}

// startConnectorWith is startConnector with the connector's Defender and
// Entra calls going through hc, for a test that records them.
func startConnectorWith(t *testing.T, e *env, hc *http.Client, overrides map[string]string) (*app.App, func() error) {
	t.Helper()
	vars := e.vars(overrides)
	getenv := func(k string) string { return vars[k] }
	cfg, err := config.Load(flag.NewFlagSet("e2e", flag.ContinueOnError), nil, getenv, io.Discard)
	if err != nil {
		t.Fatalf("configuration: %v", err)
	}
	a, err := app.New(cfg, app.Deps{Logger: testLogger(t, vars["ENRICHER_LOG_LEVEL"]), HTTPClient: hc, Getenv: getenv})
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	var (
		once   sync.Once
		result error
	)
	stop := func() error {
		once.Do(func() {
			cancel()
			limit := cfg.ShutdownTimeout + 5*time.Second
			select {
			case result = <-done:
			case <-time.After(limit):
				result = fmt.Errorf("connector still running %v after its context was cancelled", limit)
			}
		})
		return result
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stopping the connector: %v", err)
		}
	})
	return a, stop
}

// testLogger writes the connector's logs to the test's output, at level
// (info when empty), until the test ends: kafka-go goroutines may log after
// that, and writing to a finished test's output fails it.
func testLogger(t *testing.T, level string) *slog.Logger {
	tw := &testWriter{w: t.Output()}
	t.Cleanup(tw.close)
	var l slog.Level
	if level != "" {
		_ = l.UnmarshalText([]byte(level))
	}
	return slog.New(slog.NewTextHandler(tw, &slog.HandlerOptions{Level: l}))
}

type testWriter struct {
	mu   sync.Mutex
	w    io.Writer
	done bool
}

func (tw *testWriter) Write(p []byte) (int, error) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.done {
		return len(p), nil
	}
	return tw.w.Write(p)
}

func (tw *testWriter) close() {
	tw.mu.Lock()
	tw.done = true
	tw.mu.Unlock()
}

// waitUntil polls cond every 20ms until it holds, failing the test with
// what after timeout. It is for state that announces no event of its own
// (a counter, a metric); records on a topic are awaited with a tail.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricValue returns the sum of the samples of a counter or gauge family
// whose labels include every pair of labels.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// httpGet fetches url with a bounded client and returns status and body.
func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}
