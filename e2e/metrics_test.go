package e2e

import (
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/kafkatest"
)

// The HTTP endpoints of a running connector: /metrics in the Prometheus
// text format with the event and call counters, /healthz and /readyz.
func TestHTTPEndpoints(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		e := newEnv(t, c, 1)
		tl := newTail(t, e)
		a, stop := startConnector(t, e, nil)
		base := "http://" + a.HTTPAddr()
		if a.HTTPAddr() == "" {
			t.Fatal("no HTTP address with ENRICHER_HTTP_ADDR set")
		}

		missing := newAlertIDs(1)[0]
		e.sim.SetNotFound(missing)
		inputs := produceAlerts(t, c, e.in, 3)
		inputs = append(inputs, produceAlerts(t, c, e.in, 1, withIDs(missing))...)
		tl.waitCovered(30*time.Second, inputs)
		// The output is read once acknowledged; the counters follow the
		// acknowledgement on the producer's goroutine.
		waitUntil(t, 60*time.Second, "the pipeline's counts", func() bool { return a.Stats().Total() == int64(len(inputs)) })

		code, body := httpGet(t, base+"/metrics")
		if code != http.StatusOK {
			t.Fatalf("/metrics: %d", code)
		}
		for _, want := range []struct {
			name  string
			value int
		}{
			{`enricher_events_total{status="enriched"}`, 3},
			{`enricher_events_total{status="not_found"}`, 1},
			{`enricher_defender_calls_total{code="200"}`, 3},
			{`enricher_defender_calls_total{code="404"}`, 1},
		} {
			re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want.name) + ` (\S+)$`)
			m := re.FindStringSubmatch(body)
			if m == nil {
				t.Errorf("/metrics has no %s", want.name)
				continue
			}
			if v, err := strconv.ParseFloat(m[1], 64); err != nil || v != float64(want.value) {
				t.Errorf("/metrics: %s %s, want %d", want.name, m[1], want.value)
			}
		}
		for _, want := range []string{"# TYPE enricher_events_total counter", "# TYPE enricher_defender_calls_total counter", "go_goroutines"} {
			if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want)).MatchString(body) {
				t.Errorf("/metrics has no %q", want)
			}
		}
		if code, body := httpGet(t, base+"/healthz"); code != http.StatusOK {
			t.Errorf("/healthz: %d %s", code, body)
		}
		if code, body := httpGet(t, base+"/readyz"); code != http.StatusOK {
			t.Errorf("/readyz while running: %d %s", code, body)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		// Stopped: the endpoints are gone with the connector.
		if resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Error("/readyz answers 200 after the connector stopped")
			}
		}
	})
}
