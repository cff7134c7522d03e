package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/kafkatest"
)

// BenchmarkMemory measures the memory of the built binary in the worst case
// for it: a backlog of input messages on the topic while Defender answers
// 503, with ENRICHER_ON_UNAVAILABLE=wait, so that every event fetched is
// held and only the in-flight bounds stop fetching. Once fetching has
// stopped at a bound and held there for a while, the outage ends and the
// backlog drains, every event enriched: then the output records are in
// flight beside the input messages.
//
// Each sub-benchmark is one input size and one set of variables. It
// reports the child process's peak RSS (VmHWM of /proc/PID/status) while
// the events are held and over the whole run, and the peaks of the heap in
// use and of the in-flight bytes sampled from /metrics. Run it once per
// configuration, side by side, on kfake or on the real broker:
//
//	go test -run '^$' -bench Memory -benchtime 1x ./e2e/
//	ENRICHER_TEST_KAFKA_BROKERS=127.0.0.1:19092 go test -run '^$' -bench Memory -benchtime 1x ./e2e/
func BenchmarkMemory(b *testing.B) {
	const (
		large    = 900_000 // bytes of one large alert object
		nLarge   = 400
		small    = 0 // alertObject's own size, about 700 bytes
		nSmall   = 3000
		mib      = 1 << 20
		limitVar = "ENRICHER_MAX_IN_FLIGHT_BYTES"
	)
	cases := []struct {
		name string
		size int
		n    int
		vars map[string]string
	}{
		{"small/32MiB", small, nSmall, nil},
		{"small/32MiB/GOMEMLIMIT=200MiB", small, nSmall, map[string]string{"GOMEMLIMIT": "200MiB"}},
		{"900KB/32MiB", large, nLarge, nil},
		{"900KB/32MiB/GOMEMLIMIT=200MiB", large, nLarge, map[string]string{"GOMEMLIMIT": "200MiB"}},
		{"900KB/128MiB", large, nLarge, map[string]string{limitVar: strconv.Itoa(128 * mib)}},
		{"900KB/128MiB/GOMEMLIMIT=200MiB", large, nLarge, map[string]string{limitVar: strconv.Itoa(128 * mib), "GOMEMLIMIT": "200MiB"}},
		{"900KB/128MiB/GOMEMLIMIT=300MiB", large, nLarge, map[string]string{limitVar: strconv.Itoa(128 * mib), "GOMEMLIMIT": "300MiB"}},
	}
	buildBinary(b)
	var real *kafkatest.Cluster
	if os.Getenv(kafkatest.EnvBrokers) != "" {
		real = kafkatest.NewReal(b)
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			var worst memoryRun
			for range b.N {
				c := real
				if c == nil {
					// A cluster per run: kfake keeps every record in this
					// process, not in the binary measured.
					c = kafkatest.NewFake(b)
				}
				r := runMemory(b, c, tc.size, tc.n, tc.vars)
				worst = worst.max(r)
			}
			b.ReportMetric(worst.heldRSS/mib, "held-RSS-MiB")
			b.ReportMetric(worst.peakRSS/mib, "peak-RSS-MiB")
			b.ReportMetric(worst.heapInuse/mib, "peak-heap-inuse-MiB")
			b.ReportMetric(worst.inflight/mib, "peak-in-flight-MiB")
			b.ReportMetric(0, "ns/op") // one run is not a rate
		})
	}
}

// memoryRun is what one run of the binary measured, in bytes.
type memoryRun struct {
	heldRSS   float64 // VmHWM once fetching stopped at a bound, events held
	peakRSS   float64 // VmHWM at the end, after the backlog drained
	heapInuse float64 // highest go_memstats_heap_inuse_bytes sampled
	inflight  float64 // highest enricher_in_flight_bytes sampled
}

func (m memoryRun) max(o memoryRun) memoryRun {
	return memoryRun{max(m.heldRSS, o.heldRSS), max(m.peakRSS, o.peakRSS), max(m.heapInuse, o.heapInuse), max(m.inflight, o.inflight)}
}

func runMemory(b *testing.B, c *kafkatest.Cluster, size, n int, overrides map[string]string) memoryRun {
	b.Helper()
	e := newEnv(b, c, 4)
	e.sim.SetOutage(http.StatusServiceUnavailable)
	recs := make([]kafkatest.Record, 0, 50)
	var produced int
	for i, id := range newAlertIDs(n) {
		v := alertObject(id, newMarker())
		if size > 0 {
			v = largeAlert(id, i, size)
		}
		recs = append(recs, kafkatest.Record{Key: []byte(id), Value: v, Partition: kafkatest.ByKey})
		if len(recs) == cap(recs) || i == n-1 {
			c.Produce(b, e.in, recs...)
			for _, r := range recs {
				produced += len(r.Key) + len(r.Value)
			}
			recs = recs[:0]
		}
	}
	vars := binaryVars(e, map[string]string{
		"ENRICHER_ON_UNAVAILABLE":  "wait",
		"ENRICHER_BREAKER_TIMEOUT": "1s",
		"ENRICHER_LOG_LEVEL":       "warn",
	})
	for k, v := range overrides {
		vars[k] = v
	}
	limit, _ := strconv.ParseFloat(vars["ENRICHER_MAX_IN_FLIGHT_BYTES"], 64)
	if limit == 0 {
		limit = 32 << 20
	}
	addr := freeAddr(b)
	vars["ENRICHER_HTTP_ADDR"] = addr
	b.ResetTimer()
	p := startBinary(b, vars, "run")
	pid := p.cmd.Process.Pid
	base := "http://" + addr
	waitUntil(b, 30*time.Second, "the connector's /metrics", func() bool {
		resp, err := http.Get(base + "/metrics")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})

	var r memoryRun
	sample := func() map[string]float64 {
		m := scrape(b, base+"/metrics")
		r.heapInuse = max(r.heapInuse, m["go_memstats_heap_inuse_bytes"])
		r.inflight = max(r.inflight, m["enricher_in_flight_bytes"])
		return m
	}

	// Held: fetching stops at the byte bound or at ENRICHER_MAX_IN_FLIGHT
	// (1000 events) and nothing is published. Keep it there for 5s.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		m := sample()
		if m["enricher_events_total"] != 0 {
			b.Fatalf("%v events published during the outage", m["enricher_events_total"])
		}
		if m["enricher_in_flight_bytes"] >= limit || m["enricher_events_in_flight"] >= 1000 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("fetching did not reach a bound in 2m: in flight %v events, %v bytes", m["enricher_events_in_flight"], m["enricher_in_flight_bytes"])
		}
		time.Sleep(100 * time.Millisecond)
	}
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		sample()
	}
	r.heldRSS = vmHWM(b, pid)

	// The outage ends; the backlog drains, every event enriched.
	e.sim.SetOutage(0)
	deadline = time.Now().Add(5 * time.Minute)
	for {
		m := sample()
		if m["enricher_events_total"]+m["enricher_dead_letters_total"] >= float64(n) {
			if got := m[`enricher_events_total{status="enriched"}`]; got != float64(n) {
				b.Fatalf("%v of %d events enriched; dead letters %v", got, n, m["enricher_dead_letters_total"])
			}
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%v of %d events out after the outage ended", m["enricher_events_total"], n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.peakRSS = vmHWM(b, pid)
	b.StopTimer()
	p.Stop(30 * time.Second)
	b.Logf("%d messages, %.1f MiB on the topic; in-flight limit %.0f MiB, GOMEMLIMIT %q: RSS %.1f MiB held, %.1f MiB peak; heap in use %.1f MiB; in flight %.1f MiB",
		n, float64(produced)/(1<<20), limit/(1<<20), vars["GOMEMLIMIT"], r.heldRSS/(1<<20), r.peakRSS/(1<<20), r.heapInuse/(1<<20), r.inflight/(1<<20))
	return r
}

// largeAlert returns an alerts API object for id of exactly size bytes: an
// alert with a long evidence list of file hashes, as a detection on many
// machines or files has. Hashes differ from alert to alert, so that neither
// compression nor sharing makes the messages smaller than they are.
func largeAlert(id string, seq, size int) []byte {
	var sb strings.Builder
	sb.Grow(size)
	fmt.Fprintf(&sb, `{"id":%q,"incidentId":%d,"severity":"High","status":"New","category":"Malware","title":"Malware detected on many files","machineId":"111e6dd8c833c8a052ea231ec1b19adaf497b625","evidence":[`, id, 100000+seq)
	for i := 0; ; i++ {
		h := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", id, i)))
		sha := hex.EncodeToString(h[:])
		ev := fmt.Sprintf(`{"entityType":"File","sha1":%q,"sha256":%q,"fileName":"payload-%d.dll","filePath":"C:\\Users\\Public\\AppData\\%s","evidenceCreationTime":"2026-11-27T10:00:00.1234567Z"}`,
			sha[:40], sha, i, sha[:12])
		if sb.Len()+len(ev)+200 > size {
			break
		}
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(ev)
	}
	sb.WriteString(`],"comment":"`)
	for sb.Len() < size-2 {
		sb.WriteByte('x')
	}
	sb.WriteString(`"}`)
	return []byte(sb.String())
}

// freeAddr returns an address of 127.0.0.1 with a port free a moment ago,
// for the binary's HTTP endpoints (its log at level warn does not say
// which port it took).
func freeAddr(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// scrape reads the Prometheus text at url into a map from series (name and
// labels as printed) to value; each family's name alone holds the sum of its
// series.
func scrape(b *testing.B, url string) map[string]float64 {
	b.Helper()
	resp, err := http.Get(url)
	if err != nil {
		b.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		series := line[:i]
		m[series] = v
		if j := strings.IndexByte(series, '{'); j >= 0 {
			m[series[:j]] += v
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatalf("reading %s: %v", url, err)
	}
	return m
}

// vmHWM returns the peak resident set size of process pid, in bytes.
func vmHWM(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Skipf("no peak RSS to read: %v", err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			if err != nil {
				b.Fatalf("VmHWM %q: %v", rest, err)
			}
			return kb * 1024
		}
	}
	b.Fatal("no VmHWM in /proc/PID/status")
	return 0
}
