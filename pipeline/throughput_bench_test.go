package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/defender-enricher/defender-enricher/cache"
	"github.com/defender-enricher/defender-enricher/consumer"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/pipeline"
	"github.com/defender-enricher/defender-enricher/producer"
	"github.com/defender-enricher/defender-enricher/schemas"
)

// BenchmarkThroughput compares the connector, with every lookup a cache hit,
// to a raw kafka-go passthrough (group reader → writer, batched, commit after
// write) on the same broker in the same run. Each op is one alert moved from
// the input topic to the output topic. Run it with a fixed count, on the real
// broker when there is one:
//
//	ENRICHER_TEST_KAFKA_BROKERS=127.0.0.1:19092 go test -run '^$' -bench Throughput -benchtime 50000x ./pipeline/
//
// It reports events/s and the process's peak RSS during each run.
func BenchmarkThroughput(b *testing.B) {
	var c *kafkatest.Cluster
	if os.Getenv(kafkatest.EnvBrokers) != "" {
		c = kafkatest.NewReal(b)
	} else {
		c = kafkatest.NewFake(b)
	}
	const ids = 1000
	user, err := defender.ParseUser([]byte(`{"id":"contoso\\user1","accountName":"user1","accountDomain":"contoso","accountSid":"S-1-5-21-72051607-1745760036-109187956-93922","firstSeen":"2019-12-08T06:33:39Z","lastSeen":"2020-01-05T06:58:34Z","mostPrevalentMachineId":"0111b647235c26159bec3e5eb6c8c3a0cc3ab766","leastPrevalentMachineId":"0111b647235c26159bec3e5eb6c8c3a0cc3ab766","logonTypes":"Network","logOnMachinesCount":1,"isDomainAdmin":false,"isOnlyNetworkUser":false}`))
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"passthrough", "connector"} {
		b.Run(name, func(b *testing.B) {
			in := c.Topic(b, "bench-in", 4)
			out := c.Topic(b, "bench-out", 4)
			dlq := c.Topic(b, "bench-dlq", 4)
			produceAlerts(b, c, in, b.N, ids)
			group := "bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			resetPeakRSS()
			b.ResetTimer()
			var elapsed time.Duration
			switch name {
			case "passthrough":
				elapsed = runPassthrough(b, c.Brokers(), in, out, group, b.N)
			case "connector":
				elapsed = runConnector(b, c.Brokers(), in, out, dlq, group, b.N, ids, user)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			if rss := peakRSS(); rss > 0 {
				b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
			}
		})
	}
}

func alertID(i int) string { return fmt.Sprintf("da6373083922889%05d_-880718168", i) }

func produceAlerts(b *testing.B, c *kafkatest.Cluster, topic string, n, ids int) {
	b.Helper()
	const chunk = 5000
	for done := 0; done < n; done += chunk {
		var recs []kafkatest.Record
		for i := done; i < min(done+chunk, n); i++ {
			id := alertID(i % ids)
			v := fmt.Sprintf(`{"id":%q,"incidentId":%d,"severity":"Medium","status":"New","category":"Execution","title":"Suspicious PowerShell command line","description":"A process was observed running an encoded PowerShell command.","machineId":"0111b647235c26159bec3e5eb6c8c3a0cc3ab766","computerDnsName":"ws-0001.contoso.local","alertCreationTime":"2026-11-27T10:00:00.1234567Z","mitreTechniques":["T1059.001"],"seq":%d}`, id, 100000+i, i)
			recs = append(recs, kafkatest.Record{Key: []byte(id), Value: []byte(v), Partition: kafkatest.ByKey})
		}
		c.Produce(b, topic, recs...)
	}
}

// runPassthrough is the baseline: what a hand-written kafka-go relay does
// with the same delivery guarantee (write with acks=all, then commit).
func runPassthrough(b *testing.B, brokers []string, in, out, group string, n int) time.Duration {
	start := time.Now()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: in, GroupID: group, StartOffset: kafka.FirstOffset,
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 250 * time.Millisecond})
	defer r.Close()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Transport: &kafka.Transport{}, RequiredAcks: kafka.RequireAll,
		Balancer: &kafka.Murmur2Balancer{}, BatchTimeout: 5 * time.Millisecond, BatchSize: 500}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	msgs := make(chan kafka.Message, 4096)
	go func() {
		defer close(msgs)
		for {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				return
			}
			msgs <- m
		}
	}()
	moved := 0
	batch := make([]kafka.Message, 0, 2000)
	for moved < n {
		batch = batch[:0]
		m, ok := <-msgs
		if !ok {
			b.Fatalf("passthrough: reader stopped after %d", moved)
		}
		batch = append(batch, m)
	fill:
		for len(batch) < cap(batch) {
			select {
			case m := <-msgs:
				batch = append(batch, m)
			default:
				break fill
			}
		}
		outMsgs := make([]kafka.Message, len(batch))
		for i, m := range batch {
			outMsgs[i] = kafka.Message{Topic: out, Key: m.Key, Value: m.Value, Headers: m.Headers}
		}
		if err := w.WriteMessages(ctx, outMsgs...); err != nil {
			b.Fatalf("passthrough write: %v", err)
		}
		if err := r.CommitMessages(ctx, batch...); err != nil {
			b.Fatalf("passthrough commit: %v", err)
		}
		moved += len(batch)
	}
	b.StopTimer()
	return time.Since(start)
}

type noCalls struct{ b *testing.B }

func (n noCalls) User(context.Context, string) (*defender.User, error) {
	n.b.Error("a lookup missed the cache")
	return nil, errors.New("unexpected call")
}

func runConnector(b *testing.B, brokers []string, in, out, dlq, group string, n, ids int, user *defender.User) time.Duration {
	start := time.Now()
	store := cache.NewLRU(ids*2, time.Hour)
	for i := 0; i < ids; i++ {
		store.Add(alertID(i), cache.Entry{User: user, Expires: time.Now().Add(time.Hour)})
	}
	lookups, err := cache.New(noCalls{b}, cache.Options{Store: store})
	if err != nil {
		b.Fatal(err)
	}
	cons, err := consumer.New(consumer.Config{Brokers: brokers, Topic: in, Group: group})
	if err != nil {
		b.Fatal(err)
	}
	prod, err := producer.New(producer.Config{Brokers: brokers})
	if err != nil {
		b.Fatal(err)
	}
	parser, _ := schemas.NewParser(schemas.ParserConfig{})
	p, err := pipeline.New(pipeline.Config{InputTopic: in, OutputTopic: out, DLQTopic: dlq, Parser: parser}, cons, lookups, prod)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	commitCtx, stopCommits := context.WithCancel(context.Background())
	go func() { _ = cons.Run(commitCtx) }()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Minute)
	for p.Stats().Total() < int64(n) {
		if time.Now().After(deadline) {
			b.Fatalf("connector moved %d of %d", p.Stats().Total(), n)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	elapsed := time.Since(start)
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if st := p.Stats(); st.Enriched != int64(n) || st.FromCache != int64(n) {
		b.Fatalf("not every event was an enriched cache hit: %+v", st)
	}
	_ = prod.Close(context.Background())
	stopCommits()
	_ = cons.Close(context.Background())
	return elapsed
}

// resetPeakRSS asks Linux to restart the process's peak RSS count, so that
// each sub-benchmark reports its own peak.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS returns VmHWM in bytes, or 0 where /proc is not there.
func peakRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
