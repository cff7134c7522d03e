package app

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/prometheus/client_golang/prometheus"
)

// Probes.
//
// /readyz turns ready once the connector can do its work: the consumer has
// joined its group and fetched (or was given no partition), and a token for
// the Defender API was obtained, tried at start-up rather than at the first
// lookup. A rollout whose brokers cannot be reached, whose SASL or TLS
// settings are wrong or whose Azure identity is refused never turns ready,
// and so never replaces the pods that work. Once ready, readiness stays
// until shutdown: a broker or Defender that goes away later is what the
// metrics and alert rules are for; taking every replica out of service at
// once would mend nothing.
//
// /healthz fails when the fetch loop or a committer has been stuck in the
// process's own work for longer than ENRICHER_HEALTH_STALL_TIMEOUT (see
// package health), and never because the broker or Defender is away.

// tokenRetryMax bounds the pause between two start-up token attempts.
const tokenRetryMax = 30 * time.Second

// notReadyLogEvery is how often a connector that is not ready yet says
// what it waits for.
const notReadyLogEvery = 30 * time.Second

// readiness is what /readyz waits for, each a step of start-up.
type readiness struct {
	group bool // joined the group and fetched, or holds no partition
	token bool // a token for the Defender API was obtained
}

func (r readiness) ok() bool { return r.group && r.token }

// missing says what a connector that is not ready waits for, and what the
// operator may check.
func (r readiness) missing() string {
	var m []string
	if !r.group {
		m = append(m, "joining the consumer group and fetching (check ENRICHER_KAFKA_BROKERS, the network path, and the TLS and SASL options)")
	}
	if !r.token {
		m = append(m, "a token for the Defender API (check ENRICHER_AZURE_CREDENTIAL and the AZURE_* variables; the last error is logged)")
	}
	return strings.Join(m, "; ")
}

func (a *App) readiness() readiness {
	return readiness{group: a.consumer.Ready(), token: a.tokenOK.Load()}
}

// isReady is /readyz's answer: ready once every start-up step is done,
// and then until shutdown begins.
func (a *App) isReady() bool {
	if a.stopping.Load() {
		return false
	}
	if a.ready.Load() {
		return true
	}
	if !a.running.Load() || !a.readiness().ok() {
		return false
	}
	if a.ready.CompareAndSwap(false, true) {
		a.log.Info("connector ready", "group", a.cfg.ConsumerGroup, "input", a.cfg.InputTopic, "took", time.Since(a.startedAt).Round(time.Millisecond).String())
	}
	return true
}

// watchReadiness logs when the connector turns ready, and what it still
// waits for while it is not, until ctx ends.
func (a *App) watchReadiness(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	lastLog := time.Now()
	for !a.isReady() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(lastLog) >= notReadyLogEvery {
			lastLog = time.Now()
			a.log.Warn("connector not ready yet", "waiting_for", a.readiness().missing(),
				"since", time.Since(a.startedAt).Round(time.Second).String())
		}
	}
}

// getToken asks the credential for a token of the Defender API's scope
// until one comes or ctx ends, with a pause that doubles from one second
// up to 30 seconds. azidentity keeps the token, so the first lookup uses
// it instead of asking again. Each failure is logged: azidentity's errors
// carry Entra ID's answer (AADSTS code and description), never a secret.
func (a *App) getToken(ctx context.Context) {
	pause := time.Second
	for attempt := 1; ; attempt++ {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := a.cred.GetToken(tctx, policy.TokenRequestOptions{Scopes: []string{a.scope}})
		cancel()
		if err == nil {
			a.tokenOK.Store(true)
			return
		}
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("no token for the Defender API yet; trying again", "scope", a.scope, "attempt", attempt,
			"retry_in", pause.String(), "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, tokenRetryMax)
	}
}

func (a *App) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	if stalled := a.watchdog.Stalled(); len(stalled) > 0 {
		msg := fmt.Sprintf("stalled: %s made no progress for more than %s (ENRICHER_HEALTH_STALL_TIMEOUT)",
			strings.Join(stalled, ", "), a.watchdog.Bound())
		a.log.Error("liveness failing: "+msg, "stalled", stalled)
		http.Error(w, msg, http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (a *App) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	if !a.isReady() {
		why := "shutting down"
		if !a.stopping.Load() {
			why = "waiting for " + a.readiness().missing()
		}
		http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "ready (breaker %s)\n", a.breaker.State())
}

// readyGauge is enricher_ready: 1 while /readyz answers 200.
func (a *App) readyGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "enricher_ready", Help: "1 while /readyz answers 200: joined the group, fetched, and obtained a token; 0 before and during shutdown.",
	}, func() float64 {
		if a.isReady() {
			return 1
		}
		return 0
	})
}
