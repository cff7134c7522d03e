package producer

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
	produceAPI "github.com/segmentio/kafka-go/protocol/produce"
)

// countingTransport answers every metadata request with the topics asked
// for, each with one partition unless the topic is in missing, and counts
// the requests that reach it.
type countingTransport struct {
	calls   int
	fail    error
	missing map[string]bool
}

func (c *countingTransport) RoundTrip(_ context.Context, _ net.Addr, req kafka.Request) (kafka.Response, error) {
	c.calls++
	if c.fail != nil {
		return nil, c.fail
	}
	mr, ok := req.(*metadataAPI.Request)
	if !ok {
		return &produceAPI.Response{}, nil
	}
	resp := &metadataAPI.Response{}
	for _, name := range mr.TopicNames {
		t := metadataAPI.ResponseTopic{Name: name}
		if c.missing[name] {
			t.ErrorCode = 3 // UNKNOWN_TOPIC_OR_PARTITION
		} else {
			t.Partitions = []metadataAPI.ResponsePartition{{PartitionIndex: 0}}
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp, nil
}

// TestMetadataCache: the writer's question about one topic is answered
// from the last successful answer for a second, and goes to the transport
// again after that; failures, answers without the topic, questions about
// several topics and requests of other kinds are never kept.
func TestMetadataCache(t *testing.T) {
	ask := func(c *metadataCache, topics ...string) (kafka.Response, error) {
		return c.RoundTrip(context.Background(), nil, &metadataAPI.Request{TopicNames: topics})
	}
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }

	tests := []struct {
		name      string
		missing   map[string]bool
		fail      error
		steps     func(c *metadataCache) error
		wantCalls int
	}{
		{"a second question within the TTL is answered from the cache", nil, nil, func(c *metadataCache) error {
			_, err := ask(c, "out")
			if err != nil {
				return err
			}
			now = now.Add(metadataTTL - time.Millisecond)
			_, err = ask(c, "out")
			return err
		}, 1},
		{"an answer older than the TTL is asked again", nil, nil, func(c *metadataCache) error {
			_, err := ask(c, "out")
			if err != nil {
				return err
			}
			now = now.Add(metadataTTL)
			_, err = ask(c, "out")
			return err
		}, 2},
		{"another topic is asked", nil, nil, func(c *metadataCache) error {
			_, err := ask(c, "out")
			if err != nil {
				return err
			}
			_, err = ask(c, "dlq")
			return err
		}, 2},
		{"an answer with the topic's error is not kept", map[string]bool{"out": true}, nil, func(c *metadataCache) error {
			_, err := ask(c, "out")
			if err != nil {
				return err
			}
			_, err = ask(c, "out")
			return err
		}, 2},
		{"a question about several topics is not kept", nil, nil, func(c *metadataCache) error {
			_, err := ask(c, "out", "dlq")
			if err != nil {
				return err
			}
			_, err = ask(c, "out", "dlq")
			return err
		}, 2},
		{"a failure is passed on and not kept", nil, errors.New("broker away"), func(c *metadataCache) error {
			if _, err := ask(c, "out"); err == nil {
				return errors.New("the transport's failure was not passed on")
			}
			if _, err := ask(c, "out"); err == nil {
				return errors.New("the transport's failure was not passed on")
			}
			return nil
		}, 2},
		{"other requests pass through", nil, nil, func(c *metadataCache) error {
			for range 2 {
				r, err := c.RoundTrip(context.Background(), nil, &produceAPI.Request{})
				if err != nil {
					return err
				}
				if _, ok := r.(*produceAPI.Response); !ok {
					return errors.New("a produce request did not get the transport's answer")
				}
			}
			return nil
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &countingTransport{fail: tt.fail, missing: tt.missing}
			c := newMetadataCache(rt)
			c.now = clock
			if err := tt.steps(c); err != nil {
				t.Fatal(err)
			}
			if rt.calls != tt.wantCalls {
				t.Errorf("%d requests reached the transport, want %d", rt.calls, tt.wantCalls)
			}
		})
	}
}

// TestMetadataCacheAnswersTheTopic: a cached answer is the transport's
// answer for that topic, partitions and all.
func TestMetadataCacheAnswersTheTopic(t *testing.T) {
	c := newMetadataCache(&countingTransport{})
	for range 2 {
		r, err := c.RoundTrip(context.Background(), nil, &metadataAPI.Request{TopicNames: []string{"out"}})
		if err != nil {
			t.Fatal(err)
		}
		resp := r.(*metadataAPI.Response)
		if len(resp.Topics) != 1 || resp.Topics[0].Name != "out" || len(resp.Topics[0].Partitions) != 1 {
			t.Fatalf("answer %+v, want topic out with its one partition", resp.Topics)
		}
	}
}
