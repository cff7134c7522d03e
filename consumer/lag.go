package consumer

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
)

// DefaultLagInterval is Config.LagInterval when not set.
const DefaultLagInterval = 15 * time.Second

// Metrics are the consumers' figures on one registry:
//
//   - enricher_consumer_lag_messages{topic,partition}: the partition's
//     end offset (high-water mark) minus the group's committed offset, read
//     from the brokers every LagInterval. kafka-go's Reader.Lag is -1 in a
//     group, so the consumer asks the brokers itself. Every member reports
//     every partition of the topic, the ones other members read included:
//     aggregate with max by (topic, partition), not sum. A partition the
//     group never committed counts from its first offset kept.
//   - enricher_consumer_commit_duration_seconds{topic}: commits that
//     reached the broker, successful or not.
//   - enricher_consumer_commit_failures_total{topic}: commits that failed
//     (retried at the next interval).
type Metrics struct {
	lag      *prometheus.GaugeVec
	commits  *prometheus.HistogramVec
	failures *prometheus.CounterVec
}

// NewMetrics registers the consumers' metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "enricher_consumer_lag_messages",
			Help: "Messages of the partition not yet committed by the group: end offset minus committed offset. Every member reports every partition: take the max.",
		}, []string{"topic", "partition"}),
		commits: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "enricher_consumer_commit_duration_seconds",
			Help:    "Time the commits of acknowledged offsets took, failed ones included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"topic"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enricher_consumer_commit_failures_total",
			Help: "Commits that failed; each is retried at the next commit interval.",
		}, []string{"topic"}),
	}
	reg.MustRegister(m.lag, m.commits, m.failures)
	return m
}

// init makes the topic's commit series exist at zero from the start, so
// that a rate over them has a value before the first commit.
func (m *Metrics) init(topic string) {
	if m == nil {
		return
	}
	m.commits.WithLabelValues(topic)
	m.failures.WithLabelValues(topic)
}

func (m *Metrics) commit(topic string, took time.Duration, err error) {
	if m == nil {
		return
	}
	m.commits.WithLabelValues(topic).Observe(took.Seconds())
	if err != nil {
		m.failures.WithLabelValues(topic).Inc()
	}
}

// runLag reads the lag every LagInterval until ctx ends. A failed read is
// logged at debug level and tried again at the next interval: lag is
// reported, not needed.
func (c *Consumer) runLag(ctx context.Context) {
	t := time.NewTicker(c.cfg.LagInterval)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(ctx, min(c.cfg.LagInterval, 10*time.Second))
		lag, err := c.Lag(ctx)
		cancel()
		if err != nil {
			c.log.Debug("reading the group's lag failed; trying again later", "error", err)
		} else {
			for p, n := range lag {
				c.cfg.Metrics.lag.WithLabelValues(c.cfg.Topic, strconv.Itoa(p)).Set(float64(n))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Lag returns, per partition of the topic, the end offset minus the
// group's committed offset (or minus the first offset kept, for a partition
// the group never committed), from three requests to the brokers: the
// topic's metadata, its partitions' first and end offsets, and the group's
// committed offsets.
func (c *Consumer) Lag(ctx context.Context) (map[int]int64, error) {
	client := &kafka.Client{Addr: kafka.TCP(c.cfg.Brokers...), Transport: c.cfg.Transport}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{c.cfg.Topic}})
	if err != nil {
		return nil, fmt.Errorf("consumer: lag of topic %q: metadata: %w", c.cfg.Topic, err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		var terr error = errors.New("not in the metadata")
		if len(md.Topics) == 1 {
			terr = md.Topics[0].Error
		}
		return nil, fmt.Errorf("consumer: lag of topic %q: %w", c.cfg.Topic, terr)
	}
	var parts []int
	var reqs []kafka.OffsetRequest
	for _, p := range md.Topics[0].Partitions {
		parts = append(parts, p.ID)
		reqs = append(reqs, kafka.FirstOffsetOf(p.ID), kafka.LastOffsetOf(p.ID))
	}
	offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{c.cfg.Topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("consumer: lag of topic %q: end offsets: %w", c.cfg.Topic, err)
	}
	committed, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: c.cfg.Group, Topics: map[string][]int{c.cfg.Topic: parts}})
	if err == nil {
		err = committed.Error
	}
	if err != nil {
		return nil, fmt.Errorf("consumer: lag of topic %q for group %q: committed offsets: %w", c.cfg.Topic, c.cfg.Group, err)
	}
	done := map[int]int64{}
	for _, p := range committed.Topics[c.cfg.Topic] {
		if p.Error == nil && p.CommittedOffset >= 0 {
			done[p.Partition] = p.CommittedOffset
		}
	}
	lag := map[int]int64{}
	for _, po := range offs.Topics[c.cfg.Topic] {
		if po.Error != nil {
			continue
		}
		from, ok := done[po.Partition]
		if !ok {
			from = po.FirstOffset
		}
		lag[po.Partition] = max(po.LastOffset-from, 0)
	}
	return lag, nil
}

// subscribedPrefix begins the line kafka-go logs when a generation of the
// group starts, with the partitions assigned to this member: the only
// place kafka-go tells its caller of an assignment.
const subscribedPrefix = "subscribed to topics and partitions"

// observeKafkaLog notes a group's assignment from kafka-go's log line.
func (c *Consumer) observeKafkaLog(format string, args []any) {
	if !strings.HasPrefix(format, subscribedPrefix) || len(args) != 1 {
		return
	}
	assigned := 0
	if v := reflect.ValueOf(args[0]); v.Kind() == reflect.Map {
		assigned = v.Len()
	}
	c.assigned.Store(int64(assigned))
	c.joined.Store(true)
}

// Ready reports whether the consumer has joined its group and, if the
// group gave it partitions, sent a fetch for one of them: a member that
// can read. A member given no partition (more members than partitions)
// is ready once it joined: it is part of the group and takes partitions
// over when another member leaves.
func (c *Consumer) Ready() bool {
	if !c.joined.Load() {
		return false
	}
	if c.assigned.Load() == 0 {
		return true
	}
	c.Stats() // folds kafka-go's fetch count in
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	return c.fetches > 0
}
