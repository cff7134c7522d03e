package kafkatest

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ByKey as [Record.Partition] picks the partition from the record's key.
const ByKey int32 = -1

// Record is a record to produce.
type Record struct {
	Key, Value []byte
	Headers    []Header
	// Partition is the partition to write to. [ByKey] (any negative value)
	// picks it as Kafka's Java producer does, murmur2 of the key modulo the
	// partition count, and round-robin for a nil key. The zero value means
	// partition 0, not "by key".
	Partition int32
}

// Header is a record header.
type Header struct {
	Key   string
	Value []byte
}

// Produced is where [Cluster.Produce] wrote one record.
type Produced struct {
	Partition int32
	Offset    int64
}

// Consumed is a record read by [Cluster.ReadN].
type Consumed struct {
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	// Compression is the codec of the record's batch as Kafka numbers it:
	// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
	Compression uint8
}

// Topic creates a uniquely named topic (prefix, a dash and a random suffix)
// with the given number of partitions and returns its name once every
// partition has a leader, so clients can use it at once. On the real broker
// the topic is deleted at t.Cleanup, keeping a long-lived broker from piling
// up topics across runs; kfake topics go away with the cluster.
func (c *Cluster) Topic(t testing.TB, prefix string, partitions int) string {
	t.Helper()
	if partitions < 1 {
		t.Fatalf("kafkatest: topic %q needs at least one partition, not %d", prefix, partitions)
	}
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix) // crypto/rand.Read never fails
	name := prefix + "-" + hex.EncodeToString(suffix)

	cl := c.client(t)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()

	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic = name
	rt.NumPartitions = int32(partitions)
	rt.ReplicationFactor = -1 // the broker's default, 1 on a single node
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = int32(opTimeout / time.Millisecond)
	var err error
	for {
		var resp *kmsg.CreateTopicsResponse
		resp, err = req.RequestWith(ctx, cl)
		if err == nil && len(resp.Topics) != 1 {
			err = fmt.Errorf("%d topics in the response", len(resp.Topics))
		}
		if err == nil {
			err = kerr.ErrorForCode(resp.Topics[0].ErrorCode)
		}
		// A single KRaft node fences its own broker when a heartbeat is
		// late, as on a loaded machine, and unfences it a moment later;
		// until then no topic can be placed.
		if !errors.Is(err, kerr.InvalidReplicationFactor) || ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	if err != nil {
		t.Fatalf("kafkatest: creating topic %s with %d partitions: %v", name, partitions, err)
	}
	if c.kind == KindKafka {
		t.Cleanup(func() { c.deleteTopic(t, name) })
	}
	if got := c.partitions(ctx, t, cl, name); len(got) != partitions {
		t.Fatalf("kafkatest: topic %s has %d partitions, want %d", name, len(got), partitions)
	}
	return name
}

// deleteTopic runs at cleanup, when t.Context is already cancelled; a failure
// is only logged because a leftover topic does not make the test wrong.
func (c *Cluster) deleteTopic(t testing.TB, name string) {
	cl := c.client(t)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	req := kmsg.NewPtrDeleteTopicsRequest()
	req.TopicNames = []string{name}
	rt := kmsg.NewDeleteTopicsRequestTopic()
	rt.Topic = kmsg.StringPtr(name)
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = int32(opTimeout / time.Millisecond)
	resp, err := req.RequestWith(ctx, cl)
	if err == nil {
		for _, rt := range resp.Topics {
			if e := kerr.ErrorForCode(rt.ErrorCode); e != nil && !errors.Is(e, kerr.UnknownTopicOrPartition) {
				err = e
			}
		}
	}
	if err != nil {
		t.Logf("kafkatest: deleting topic %s: %v", name, err)
	}
}

// partitions waits until topic exists with a leader for every partition and
// returns the partition ids. Kafka acknowledges CreateTopics once the
// controller has recorded the topic, which can be before the broker serves
// it; clients that use the topic in that gap see UNKNOWN_TOPIC_OR_PARTITION.
func (c *Cluster) partitions(ctx context.Context, t testing.TB, cl *kgo.Client, topic string) []int32 {
	t.Helper()
	var last error
	for {
		req := kmsg.NewPtrMetadataRequest()
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
		req.AllowAutoTopicCreation = false // a typo must not create a topic
		resp, err := req.RequestWith(ctx, cl)
		if err == nil {
			var ids []int32
			ids, err = readyPartitions(resp, topic)
			if err == nil {
				return ids
			}
		}
		if !retriable(err) {
			t.Fatalf("kafkatest: metadata of topic %s: %v", topic, err)
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("kafkatest: topic %s not ready: %v (last error: %v)", topic, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func readyPartitions(resp *kmsg.MetadataResponse, topic string) ([]int32, error) {
	for _, rt := range resp.Topics {
		if rt.Topic == nil || *rt.Topic != topic {
			continue
		}
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil {
			return nil, err
		}
		if len(rt.Partitions) == 0 {
			return nil, kerr.LeaderNotAvailable
		}
		ids := make([]int32, 0, len(rt.Partitions))
		for _, p := range rt.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return nil, err
			}
			if p.Leader < 0 {
				return nil, kerr.LeaderNotAvailable
			}
			ids = append(ids, p.Partition)
		}
		slices.Sort(ids)
		return ids, nil
	}
	return nil, kerr.UnknownTopicOrPartition
}

// retriable reports whether err may go away by asking again: Kafka's
// retriable error codes, plus the gap after topic creation in which the
// broker does not know the topic yet.
func retriable(err error) bool {
	return kerr.IsRetriable(err) || errors.Is(err, kerr.UnknownTopicOrPartition)
}

// Produce writes recs to topic with acks=all and returns where each record
// landed, in the order of recs. Records for one partition keep their order.
// Producing to a topic that does not exist creates it with the broker's
// default partition count, as the connector's own producer would. The test
// fails if any record is not acknowledged within 30 s.
func (c *Cluster) Produce(t testing.TB, topic string, recs ...Record) []Produced {
	t.Helper()
	if len(recs) == 0 {
		return nil
	}
	cl := c.client(t,
		kgo.RecordPartitioner(explicitOrKeyPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.AllowAutoTopicCreation(),
		kgo.ProducerLinger(0),
	)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()

	krs := make([]*kgo.Record, len(recs))
	index := make(map[*kgo.Record]int, len(recs))
	for i, r := range recs {
		kr := &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Partition: r.Partition}
		for _, h := range r.Headers {
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		krs[i] = kr
		index[kr] = i
	}
	out := make([]Produced, len(recs))
	// ProduceSync returns results in completion order, which across
	// partitions is not the order of recs; the record pointer maps back.
	for _, res := range cl.ProduceSync(ctx, krs...) {
		i := index[res.Record]
		if res.Err != nil {
			t.Fatalf("kafkatest: producing record %d (partition %d) to %s: %v", i, recs[i].Partition, topic, res.Err)
		}
		out[i] = Produced{Partition: res.Record.Partition, Offset: res.Record.Offset}
	}
	return out
}

// explicitOrKeyPartitioner honours Record.Partition when it is set and falls
// back to Kafka's murmur2 key hash otherwise. kgo.StickyKeyPartitioner(nil) is
// exactly the Java client's hash for keyed records; nil keys go round-robin
// rather than sticky so that a handful of test records still spread over the
// partitions.
func explicitOrKeyPartitioner() kgo.Partitioner {
	byKey := kgo.StickyKeyPartitioner(nil)
	return kgo.BasicConsistentPartitioner(func(topic string) func(*kgo.Record, int) int {
		hashed := byKey.ForTopic(topic)
		next := 0 // kgo calls a topic's partitioner for one record at a time
		return func(r *kgo.Record, n int) int {
			switch {
			case r.Partition >= 0:
				// kgo fails the record if this is out of range.
				return int(r.Partition)
			case r.Key != nil:
				return hashed.Partition(r, n)
			default:
				next++
				return (next - 1) % n
			}
		}
	})
}

// ReadN reads topic from the start of every partition, without a consumer
// group, until it has at least n records or timeout passes; on timeout the
// test fails with how many records it got. It returns every record fetched
// by then, which may be more than n, sorted by partition and offset, so a
// caller can check len for duplicates or strays. A topic that does not exist
// yet is waited for, not created.
func (c *Cluster) ReadN(t testing.TB, topic string, n int, timeout time.Duration) []Consumed {
	t.Helper()
	if n <= 0 {
		return nil
	}
	cl := c.client(t,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(250*time.Millisecond),
		// A topic the code under test creates later must be noticed within
		// the timeout, not at the default five-minute metadata refresh.
		kgo.MetadataMinAge(100*time.Millisecond),
		kgo.MetadataMaxAge(time.Second),
	)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()

	var (
		got  []Consumed
		last error
	)
	for len(got) < n {
		fetches := cl.PollFetches(ctx)
		fetches.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				last = err
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			cr := Consumed{Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Compression: r.Attrs.CompressionType()}
			for _, h := range r.Headers {
				cr.Headers = append(cr.Headers, Header{Key: h.Key, Value: h.Value})
			}
			got = append(got, cr)
		})
		if len(got) < n && ctx.Err() != nil {
			msg := fmt.Sprintf("kafkatest: read %d of %d records from %s in %v", len(got), n, topic, timeout)
			if last != nil {
				msg += fmt.Sprintf(" (last fetch error: %v)", last)
			}
			t.Fatal(msg)
		}
	}
	slices.SortFunc(got, func(a, b Consumed) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	return got
}

// Committed returns the consumer group's committed offsets for topic,
// partition → offset, as Kafka stores them: the offset of the next record to
// consume. Partitions without a commit are absent, so an unknown group gives
// an empty map. The topic must exist.
func (c *Cluster) Committed(t testing.TB, group, topic string) map[int32]int64 {
	t.Helper()
	cl := c.client(t)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	parts := c.partitions(ctx, t, cl, topic)

	var last error
	for {
		got, err := fetchOffsets(ctx, cl, group, topic, parts)
		if err == nil {
			return got
		}
		// A group coordinator that is just loading or moving answers
		// with a retriable error.
		if !retriable(err) {
			t.Fatalf("kafkatest: committed offsets of group %s on %s: %v", group, topic, err)
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("kafkatest: committed offsets of group %s on %s: %v (last error: %v)", group, topic, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func fetchOffsets(ctx context.Context, cl *kgo.Client, group, topic string, parts []int32) (map[int32]int64, error) {
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = group
	rt := kmsg.NewOffsetFetchRequestTopic()
	rt.Topic = topic
	rt.Partitions = parts
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	got := make(map[int32]int64)
	// Kafka answers for an unknown group with offsets of -1, kfake with
	// GROUP_ID_NOT_FOUND; both mean "nothing committed".
	if err := kerr.ErrorForCode(resp.ErrorCode); errors.Is(err, kerr.GroupIDNotFound) {
		return got, nil
	} else if err != nil {
		return nil, err
	}
	for _, rt := range resp.Topics {
		if rt.Topic != topic {
			continue
		}
		for _, p := range rt.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); errors.Is(err, kerr.GroupIDNotFound) {
				continue
			} else if err != nil {
				return nil, fmt.Errorf("partition %d: %w", p.Partition, err)
			}
			if p.Offset >= 0 {
				got[p.Partition] = p.Offset
			}
		}
	}
	return got, nil
}

// HighWatermarks returns, per partition of topic, the offset after its
// newest record.
func (c *Cluster) HighWatermarks(t testing.TB, topic string) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers()...))
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	meta.Topics = append(meta.Topics, mt)
	mresp, err := meta.RequestWith(ctx, cl)
	if err != nil || len(mresp.Topics) != 1 {
		t.Fatalf("metadata of %s: %v", topic, err)
	}
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for _, p := range mresp.Topics[0].Partitions {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p.Partition
		rp.Timestamp = -1 // the latest offset
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	hw := map[int32]int64{}
	for _, rt := range resp.Topics {
		for _, p := range rt.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				t.Fatalf("end offset of %s/%d: %v", topic, p.Partition, err)
			}
			hw[p.Partition] = p.Offset
		}
	}
	return hw
}
