package pipeline

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/segmentio/kafka-go"
)

// inflightBytes bounds the bytes of the input messages held between fetch
// and acknowledgement, beside the count of events that Pipeline.slots
// bounds: a thousand events of a megabyte each would otherwise hold a
// gigabyte. Fetching waits until the bytes held are below the limit, so at
// most one message goes over it, and a message larger than the limit is
// still processed, alone.
type inflightBytes struct {
	limit int64
	mu    sync.Mutex
	used  int64
	freed chan struct{} // a token after each release; only the fetch loop waits
}

func newInflightBytes(limit int64) *inflightBytes {
	return &inflightBytes{limit: limit, freed: make(chan struct{}, 1)}
}

func (b *inflightBytes) add(n int64) {
	b.mu.Lock()
	b.used += n
	b.mu.Unlock()
}

func (b *inflightBytes) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	select {
	case b.freed <- struct{}{}:
	default:
	}
}

func (b *inflightBytes) held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// waitRoom returns once the bytes held are below the limit, or ctx's error.
func (b *inflightBytes) waitRoom(ctx context.Context) error {
	for {
		if b.held() < b.limit {
			return nil
		}
		// A release between the check and here leaves its token in freed,
		// so it is not missed.
		select {
		case <-b.freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// heldMessage is one input message's share of the in-flight bytes, released
// when the last of its events is acknowledged.
type heldMessage struct {
	bytes   int64
	pending atomic.Int64
}

// messageSize is what one input message holds in memory: key, value and
// headers.
func messageSize(m *kafka.Message) int64 {
	n := len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return int64(n)
}
