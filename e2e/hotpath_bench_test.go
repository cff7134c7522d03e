package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/defender-enricher/defender-enricher/kafkatest"
)

// BenchmarkHotPath compares the built connector with a raw kafka-go relay,
// each a process of its own against a broker in another process, on the
// same input: 100,000 alerts of about 1.3 KB over 200 alert ids, produced
// before either starts. The relay (hotPathRelay) is what a few lines of
// kafka-go do with the same delivery guarantee: a group reader, a writer
// with acks=all, a commit after each batch is written. Each process is timed
// from its start to its 100,000th output record, read from the output
// topic's end offsets.
//
// The broker is kfake in a child process and, when
// ENRICHER_TEST_KAFKA_BROKERS names one, the real broker too. Two mixes: every
// lookup a cache hit after the first call for each of the 200 ids ("hits"),
// and one event in a hundred a new alert id whose call takes 10 ms
// ("misses"). It reports each side's events/s and the ratio
// connector/relay. Run it once, side by side:
//
//	go test -run '^$' -bench HotPath -benchtime 1x ./e2e/
//	ENRICHER_TEST_KAFKA_BROKERS=127.0.0.1:19092 go test -run '^$' -bench HotPath -benchtime 1x ./e2e/
//
// With ENRICHER_BENCH_PROFILE_DIR set, the connector runs with ENRICHER_PPROF
// and its CPU profile (for as long as the relay took) and allocation profile
// are written there, and the relay's CPU profile beside them.
// ENRICHER_BENCH_SET sets options of the connector for a comparison, comma
// separated: ENRICHER_BENCH_SET=ENRICHER_KAFKA_COMPRESSION=lz4 shows what a
// codec costs.
func BenchmarkHotPath(b *testing.B) {
	type broker struct {
		kind string
		c    *kafkatest.Cluster
	}
	brokers := []broker{{"kfake", childKfake(b)}}
	if os.Getenv(kafkatest.EnvBrokers) != "" {
		brokers = append(brokers, broker{"kafka", kafkatest.NewReal(b)})
	}
	buildBinary(b)
	relay, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	for _, br := range brokers {
		for _, mix := range []struct {
			name   string
			misses int // one event in misses a new alert id; 0: none
		}{{"hits", 0}, {"misses", 100}} {
			b.Run(br.kind+"/"+mix.name, func(b *testing.B) {
				for range b.N {
					r := runHotPath(b, br.c, relay, mix.misses, br.kind+"-"+mix.name)
					b.ReportMetric(r.connector, "connector-events/s")
					b.ReportMetric(r.relay, "relay-events/s")
					b.ReportMetric(r.connector/r.relay, "ratio")
					b.ReportMetric(0, "ns/op") // one run is not a rate
					b.ReportMetric(float64(r.connectorCPU.Microseconds())/hotPathEvents, "connector-CPU-µs/event")
					b.ReportMetric(float64(r.relayCPU.Microseconds())/hotPathEvents, "relay-CPU-µs/event")
					b.Logf("connector %.0f events/s, relay %.0f events/s: ratio %.2f; CPU %.1f µs/event against %.1f; peak RSS %.0f MiB against %.0f MiB",
						r.connector, r.relay, r.connector/r.relay, float64(r.connectorCPU.Microseconds())/hotPathEvents, float64(r.relayCPU.Microseconds())/hotPathEvents,
						r.connectorRSS/(1<<20), r.relayRSS/(1<<20))
				}
			})
		}
	}
}

const (
	hotPathEvents = 100_000
	hotPathIDs    = 200
	childVar      = "ENRICHER_BENCH_CHILD" // kfake or relay: the test binary runs as that process
	profileDirVar = "ENRICHER_BENCH_PROFILE_DIR"
)

type hotPathRun struct {
	connector, relay       float64       // events/s
	connectorRSS, relayRSS float64       // bytes
	connectorCPU, relayCPU time.Duration // user and system, the whole life of the process
}

// usage is the peak RSS and the CPU time of a process that ended.
func usage(ps *os.ProcessState) (rss float64, cpu time.Duration) {
	ru := ps.SysUsage().(*syscall.Rusage)
	return float64(ru.Maxrss) * 1024, ps.UserTime() + ps.SystemTime()
}

func runHotPath(b *testing.B, c *kafkatest.Cluster, relay string, misses int, name string) hotPathRun {
	b.Helper()
	e := newEnv(b, c, 4)
	e.sim.SetLatency(10 * time.Millisecond)
	ids := newAlertIDs(hotPathIDs)
	var recs []kafkatest.Record
	for i := range hotPathEvents {
		id := ids[i%len(ids)]
		if misses > 0 && i%misses == misses-1 {
			id = newAlertIDs(1)[0]
		}
		recs = append(recs, kafkatest.Record{Key: []byte(id), Value: hotAlert(id, i), Partition: kafkatest.ByKey})
		if len(recs) == 5000 {
			c.Produce(b, e.in, recs...)
			recs = recs[:0]
		}
	}
	c.Produce(b, e.in, recs...)
	profiles := os.Getenv(profileDirVar)

	// The relay first, on a group and an output topic of its own.
	relayOut := c.Topic(b, e.out+"-relay", 4)
	vars := map[string]string{
		"RELAY_BROKERS": strings.Join(c.Brokers(), ","),
		"RELAY_IN":      e.in,
		"RELAY_OUT":     relayOut,
		"RELAY_GROUP":   e.group + "-relay",
		"RELAY_N":       strconv.Itoa(hotPathEvents),
		childVar:        "relay",
	}
	if profiles != "" {
		vars["RELAY_CPU_PROFILE"] = filepath.Join(profiles, name+"-relay.cpu.pprof")
	}
	cmd := exec.Command(relay, "-test.run=^$")
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	relayDone := make(chan error, 1)
	go func() { relayDone <- cmd.Wait() }()
	relayFirst, relayTook := awaitOutputs(b, c, relayOut, start, hotPathEvents, func() error {
		select {
		case err := <-relayDone:
			return fmt.Errorf("the relay exited: %v", err)
		default:
			return nil
		}
	})
	var r hotPathRun
	r.relay = hotPathEvents / relayTook.Seconds()
	if err := <-relayDone; err != nil {
		b.Fatalf("relay: %v", err)
	}
	r.relayRSS, r.relayCPU = usage(cmd.ProcessState)

	// Then the connector, defaults but for the budget.
	addr := freeAddr(b)
	cv := binaryVars(e, map[string]string{
		"ENRICHER_COMMIT_INTERVAL":      "",
		"ENRICHER_DEFENDER_RATE_LIMITS": "1000/1s",
		"ENRICHER_LOG_LEVEL":            "warn",
		"ENRICHER_HTTP_ADDR":            addr,
	})
	if profiles != "" {
		cv["ENRICHER_PPROF"] = "true"
	}
	for kv := range strings.SplitSeq(os.Getenv("ENRICHER_BENCH_SET"), ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok {
			cv[k] = v
		}
	}
	start = time.Now()
	p := startBinary(b, cv, "run")
	cpu := make(chan []byte, 1)
	if profiles != "" {
		go func() {
			secs := max(1, int(2*relayTook.Seconds()+0.5))
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
					resp.Body.Close()
					break
				}
			}
			cpu <- httpBytes(b, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs))
		}()
	}
	first, took := awaitOutputs(b, c, e.out, start, hotPathEvents, func() error {
		select {
		case <-p.done:
			return fmt.Errorf("the connector exited: %v\n%s", p.err, tailLines(p.Stderr(), 30))
		default:
			return nil
		}
	})
	r.connector = hotPathEvents / took.Seconds()
	b.Logf("first output after %v (relay %v), last after %v (relay %v)", first.Round(time.Millisecond), relayFirst.Round(time.Millisecond), took.Round(time.Millisecond), relayTook.Round(time.Millisecond))
	if profiles != "" {
		writeFile(b, filepath.Join(profiles, name+"-connector.cpu.pprof"), <-cpu)
		writeFile(b, filepath.Join(profiles, name+"-connector.allocs.pprof"), httpBytes(b, "http://"+addr+"/debug/pprof/allocs"))
	}
	m := scrape(b, "http://"+addr+"/metrics")
	p.Stop(30 * time.Second)
	r.connectorRSS, r.connectorCPU = usage(p.cmd.ProcessState)
	wantCalls := float64(hotPathIDs)
	if misses > 0 {
		wantCalls += hotPathEvents / float64(misses)
	}
	if got := m[`enricher_events_total{status="enriched"}`]; got != hotPathEvents {
		b.Fatalf("%v of %d events enriched: the figures would not be of the hot path", got, hotPathEvents)
	}
	if calls := float64(len(e.sim.Calls())); calls > wantCalls {
		b.Fatalf("%v calls to Defender, want at most %v: lookups that should hit the cache missed", calls, wantCalls)
	}
	return r
}

// awaitOutputs polls topic's end offsets until they add up to n and
// returns how long after start that was; alive reports a process that
// ended early.
func awaitOutputs(b *testing.B, c *kafkatest.Cluster, topic string, start time.Time, n int64, alive func() error) (first, last time.Duration) {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers()...))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		got := topicEnd(b, cl, topic)
		if got > 0 && first == 0 {
			first = time.Since(start)
		}
		if got >= n {
			return first, time.Since(start)
		}
		if err := alive(); err != nil {
			b.Fatalf("%d of %d records on %s: %v", got, n, topic, err)
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d records on %s after 10m", got, n, topic)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func topicEnd(b *testing.B, cl *kgo.Client, topic string) int64 {
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for p := range int32(4) {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p
		rp.Timestamp = -1
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		b.Fatalf("end offsets of %s: %v", topic, err)
	}
	var sum int64
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				b.Fatalf("end offset of %s/%d: %v", topic, p.Partition, err)
			}
			sum += p.Offset
		}
	}
	return sum
}

// hotAlert is an alerts API object of about 1.3 KB that names no user, so
// that a new alert id is a call.
func hotAlert(id string, seq int) []byte {
	return fmt.Appendf(nil, `{"id":%q,"incidentId":%d,"investigationId":%d,"assignedTo":"secop@contoso.com","severity":"Medium","status":"New","classification":null,"determination":null,"investigationState":"Running","detectionSource":"WindowsDefenderAtp","detectorId":"17e10bbc-3a68-474a-8aad-faef14d43952","category":"Execution","threatFamilyName":null,"title":"Suspicious PowerShell command line","description":"A suspicious PowerShell activity was observed on the machine. This behavior may indicate that PowerShell was used during installation, exploration, or in some cases in lateral movement activities which are used by attackers to invoke modules, download external payloads, or get more information about the system.","alertCreationTime":"2026-11-27T10:00:00.1234567Z","firstEventTime":"2026-11-27T09:59:51.5213891Z","lastEventTime":"2026-11-27T09:59:51.5213891Z","lastUpdateTime":"2026-11-27T10:00:02.1266667Z","resolvedTime":null,"machineId":"111e6dd8c833c8a052ea231ec1b19adaf497b625","computerDnsName":"ws-0001.contoso.local","rbacGroupName":"A","aadTenantId":"a839b112-1253-6432-9bf6-94542403f21c","threatName":null,"mitreTechniques":["T1059.001"],"relatedUser":null,"loggedOnUsers":[],"comments":[],"evidence":[{"entityType":"Process","evidenceCreationTime":"2026-11-27T10:00:00.1533333Z","sha1":"2cbf6a6c6ea0b8b1e1b1d44d4d9c7b1a4a3e2f10","fileName":"powershell.exe","filePath":"C:\\Windows\\System32\\WindowsPowerShell\\v1.0","processId":%d}]}`,
		id, 100000+seq%900000, 200000+seq%800000, 1000+seq%60000)
}

// childKfake starts kfake in a child process (this test binary, run as
// it) with one broker on 127.0.0.1, so that the broker's work is not
// counted in the process that measures.
func childKfake(b *testing.B) *kafkatest.Cluster {
	b.Helper()
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = []string{childVar + "=kfake"}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // the child stops when its stdin closes
		_ = cmd.Wait()
	})
	line := make([]byte, 0, 64)
	buf := make([]byte, 1)
	for {
		if _, err := stdout.Read(buf); err != nil {
			b.Fatalf("kfake child: %v", err)
		}
		if buf[0] == '\n' {
			break
		}
		line = append(line, buf[0])
	}
	addr, ok := strings.CutPrefix(string(line), "BROKERS=")
	if !ok {
		b.Fatalf("kfake child said %q", line)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return kafkatest.External(kafkatest.KindFake, strings.Split(addr, ","))
}

// runChild runs the test binary as the process childVar names and
// returns its exit code, or -1 when it names none.
func runChild() int {
	switch os.Getenv(childVar) {
	case "":
		return -1
	case "kfake":
		fc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(1))
		if err != nil {
			fmt.Fprintln(os.Stderr, "kfake:", err)
			return 1
		}
		fmt.Printf("BROKERS=%s\n", strings.Join(fc.ListenAddrs(), ","))
		_, _ = io.Copy(io.Discard, os.Stdin)
		fc.Close()
		return 0
	case "relay":
		if err := hotPathRelay(); err != nil {
			fmt.Fprintln(os.Stderr, "relay:", err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(os.Stderr, "%s=%q: want kfake or relay\n", childVar, os.Getenv(childVar))
	return 2
}

// hotPathRelay is the baseline: a raw kafka-go relay with the connector's
// delivery guarantee (write with acks=all, then commit), tuned as kafka-go
// allows: 10 MB fetches, a queue of 10,000 messages, 50 ms fetch wait,
// batches of 1,000 with a 2 ms timeout. It exits once it moved RELAY_N
// messages.
func hotPathRelay() error {
	brokers := strings.Split(os.Getenv("RELAY_BROKERS"), ",")
	n, err := strconv.Atoi(os.Getenv("RELAY_N"))
	if err != nil {
		return err
	}
	if path := os.Getenv("RELAY_CPU_PROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: os.Getenv("RELAY_IN"), GroupID: os.Getenv("RELAY_GROUP"),
		StartOffset: kafka.FirstOffset, MaxBytes: 10 << 20, QueueCapacity: 10_000, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: os.Getenv("RELAY_OUT"), RequiredAcks: kafka.RequireAll,
		Balancer: &kafka.Murmur2Balancer{}, BatchSize: 1000, BatchTimeout: 2 * time.Millisecond}
	defer w.Close()
	ctx := context.Background()
	msgs := make(chan kafka.Message, 10_000)
	fetchErr := make(chan error, 1)
	go func() {
		for {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				fetchErr <- err
				close(msgs)
				return
			}
			msgs <- m
		}
	}()
	batch := make([]kafka.Message, 0, 1000)
	out := make([]kafka.Message, 0, 1000)
	for moved := 0; moved < n; moved += len(batch) {
		m, ok := <-msgs
		if !ok {
			return fmt.Errorf("fetch after %d: %w", moved, <-fetchErr)
		}
		batch = append(batch[:0], m)
	fill:
		for len(batch) < cap(batch) {
			select {
			case m := <-msgs:
				batch = append(batch, m)
			default:
				break fill
			}
		}
		out = out[:0]
		for _, m := range batch {
			out = append(out, kafka.Message{Key: m.Key, Value: m.Value, Headers: m.Headers})
		}
		if err := w.WriteMessages(ctx, out...); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if err := r.CommitMessages(ctx, batch...); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
	return nil
}

func httpBytes(b *testing.B, url string) []byte {
	resp, err := http.Get(url)
	if err != nil {
		b.Errorf("GET %s: %v", url, err)
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Errorf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return body
}

func writeFile(b *testing.B, path string, data []byte) {
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Error(err)
	}
}
