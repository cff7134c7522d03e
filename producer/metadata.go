package producer

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
)

// metadataTTL is how long metadataCache keeps an answer. kafka.Transport's
// own metadata is up to 6 s old (its MetadataTTL); this adds at most a
// second to the time a new partition of an output topic takes to get
// records.
const metadataTTL = time.Second

// metadataCache answers the question kafka-go's Writer asks for every
// record it is given (how many partitions has this topic?) from the answer
// of the last metadataTTL. kafka.Transport caches metadata too, but copies
// a filtered answer for each question: allocations and a walk of every
// topic, per record, on the hot path. Only successful answers for one
// topic are kept; everything else goes to the transport.
type metadataCache struct {
	kafka.RoundTripper

	now func() time.Time

	mu     sync.Mutex
	topics map[metadataKey]cachedMetadata
}

type metadataKey struct {
	topic      string
	autoCreate bool
}

type cachedMetadata struct {
	resp *metadataAPI.Response
	at   time.Time
}

func newMetadataCache(rt kafka.RoundTripper) *metadataCache {
	return &metadataCache{RoundTripper: rt, now: time.Now, topics: map[metadataKey]cachedMetadata{}}
}

func (c *metadataCache) RoundTrip(ctx context.Context, addr net.Addr, req kafka.Request) (kafka.Response, error) {
	mr, ok := req.(*metadataAPI.Request)
	if !ok || len(mr.TopicNames) != 1 {
		return c.RoundTripper.RoundTrip(ctx, addr, req)
	}
	key := metadataKey{mr.TopicNames[0], mr.AllowAutoTopicCreation}
	now := c.now()
	c.mu.Lock()
	m, hit := c.topics[key]
	c.mu.Unlock()
	if hit && now.Sub(m.at) < metadataTTL {
		return m.resp, nil
	}
	r, err := c.RoundTripper.RoundTrip(ctx, addr, req)
	if err != nil {
		return r, err
	}
	if resp, ok := r.(*metadataAPI.Response); ok && answers(resp, key.topic) {
		c.mu.Lock()
		c.topics[key] = cachedMetadata{resp: resp, at: now}
		c.mu.Unlock()
	}
	return r, nil
}

// answers reports whether resp has topic, without an error and with
// partitions.
func answers(resp *metadataAPI.Response, topic string) bool {
	for _, t := range resp.Topics {
		if t.Name == topic {
			return t.ErrorCode == 0 && len(t.Partitions) > 0
		}
	}
	return false
}
