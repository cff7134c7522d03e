// Package kafkatest provides Kafka clusters for tests, in the spirit of
// net/http/httptest: an in-process kfake cluster that every test can start on
// its own, or the real Apache Kafka broker named by ENRICHER_TEST_KAFKA_BROKERS
// (started with scripts/kafka.sh start). [Each] runs one test body against
// both, so the end-to-end suite proves the connector against the fake it runs
// on everywhere and, where a broker is available, against real Kafka.
//
// The helpers talk the Kafka protocol through franz-go for both kinds, so a
// helper that works on kfake exercises the same requests on the real broker.
// Every helper reports problems through the testing.TB it is given and never
// returns an error.
package kafkatest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// EnvBrokers names the environment variable holding the real broker's
// comma-separated host:port list.
const EnvBrokers = "ENRICHER_TEST_KAFKA_BROKERS"

// Kinds reported by [Cluster.Kind]; they are also the subtest names of [Each].
const (
	KindFake  = "kfake"
	KindKafka = "kafka"
)

// skipReal is the message a test skips with when no real broker is named.
const skipReal = EnvBrokers + " is not set, so the real-Kafka variant is skipped; " +
	"run it with: scripts/kafka.sh start && " + EnvBrokers + "=127.0.0.1:19092 go test ./... " +
	"(scripts/kafka.sh stop when done)"

// opTimeout bounds every admin and produce helper: long enough for a loaded
// CI machine, short enough that a dead broker fails the test instead of
// hanging it until the go test deadline.
const opTimeout = 30 * time.Second

// Cluster is a Kafka cluster for one test: kfake in-process, or the real
// broker named by ENRICHER_TEST_KAFKA_BROKERS. Its methods are safe for
// concurrent use; each helper call opens and closes its own client, so a
// Cluster holds no connections and can be shared by subtests.
type Cluster struct {
	kind    string
	brokers []string
	fake    *kfake.Cluster
}

// NewFake starts a kfake cluster on 127.0.0.1 (random ports) and stops it at
// t.Cleanup.
//
// To behave like the broker of scripts/kafka.sh, the cluster auto-creates
// topics that clients ask for and gives them one partition; opts are applied
// after those defaults, so kfake.DefaultNumPartitions overrides the count.
// kfake's own default of three brokers is kept so that clients meet partition
// leaders and group coordinators on different connections, as they would on a
// production cluster; pass kfake.NumBrokers(1) for a single broker.
func NewFake(t testing.TB, opts ...kfake.Opt) *Cluster {
	t.Helper()
	all := append([]kfake.Opt{
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(1),
	}, opts...)
	fc, err := kfake.NewCluster(all...)
	if err != nil {
		t.Fatalf("kafkatest: starting kfake: %v", err)
	}
	t.Cleanup(fc.Close)
	return &Cluster{kind: KindFake, brokers: fc.ListenAddrs(), fake: fc}
}

// NewReal returns the broker named by ENRICHER_TEST_KAFKA_BROKERS, or skips
// the test with a message telling how to start one (scripts/kafka.sh start).
// A named broker that does not answer fails the test: asking for the real
// broker and silently not testing against it would hide a broken setup.
func NewReal(t testing.TB) *Cluster {
	t.Helper()
	var brokers []string
	for b := range strings.SplitSeq(os.Getenv(EnvBrokers), ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	if len(brokers) == 0 {
		t.Skip(skipReal)
	}
	c := &Cluster{kind: KindKafka, brokers: brokers}
	cl := c.client(t)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		t.Fatalf("kafkatest: %s=%s does not answer (scripts/kafka.sh status tells whether it runs): %v",
			EnvBrokers, strings.Join(brokers, ","), err)
	}
	ctx, cancel = context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	if err := waitGroupCoordinator(ctx, cl); err != nil {
		t.Fatalf("kafkatest: %s=%s has no group coordinator: %v", EnvBrokers, strings.Join(brokers, ","), err)
	}
	return c
}

// External returns a Cluster of brokers that something else started and
// stops, such as kfake in a process of its own, so that what the helpers do
// is not counted in the process measured. kind is KindFake or KindKafka;
// topics of a KindKafka cluster are deleted at cleanup.
func External(kind string, brokers []string) *Cluster {
	return &Cluster{kind: kind, brokers: brokers}
}

// waitGroupCoordinator returns once the broker can coordinate consumer
// groups. On a fresh broker the first FindCoordinator creates
// __consumer_offsets and fails with COORDINATOR_NOT_AVAILABLE, and kafka-go
// answers that by sleeping 5 s before it retries; waiting here instead keeps
// the first group test of a run as fast as the others.
func waitGroupCoordinator(ctx context.Context, cl *kgo.Client) error {
	for {
		req := kmsg.NewPtrFindCoordinatorRequest()
		req.CoordinatorKey = "kafkatest"
		req.CoordinatorKeys = []string{"kafkatest"}
		resp, err := req.RequestWith(ctx, cl)
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
			for _, co := range resp.Coordinators {
				if e := kerr.ErrorForCode(co.ErrorCode); e != nil {
					err = e
				}
			}
		}
		if err == nil {
			return nil
		}
		if !kerr.IsRetriable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Each runs f once per kind as subtests "kfake" and "kafka", each with a
// cluster of its own. The "kafka" subtest is skipped, with a message telling
// how to start a broker, when ENRICHER_TEST_KAFKA_BROKERS is unset.
func Each(t *testing.T, f func(t *testing.T, c *Cluster)) {
	t.Helper()
	t.Run(KindFake, func(t *testing.T) { f(t, NewFake(t)) })
	t.Run(KindKafka, func(t *testing.T) { f(t, NewReal(t)) })
}

// Brokers returns the cluster's bootstrap addresses as host:port, ready for
// kafka-go's ReaderConfig.Brokers or kgo.SeedBrokers. The slice is a copy.
func (c *Cluster) Brokers() []string {
	return append([]string(nil), c.brokers...)
}

// Kind returns [KindFake] or [KindKafka], for the rare test whose expectation
// differs between the two.
func (c *Cluster) Kind() string { return c.kind }

// Fake returns the underlying kfake cluster, for fault injection (Control,
// MoveTopicPartition, ...), or nil on the real broker: a test that needs it
// should skip when it is nil.
func (c *Cluster) Fake() *kfake.Cluster { return c.fake }

// client opens a franz-go client on the cluster; the caller closes it.
func (c *Cluster) client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.brokers...)}, opts...)...)
	if err != nil {
		t.Fatalf("kafkatest: creating a client for %v: %v", c.brokers, err)
	}
	return cl
}
