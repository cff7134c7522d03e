package consumer

import (
	"math"
	"sync/atomic"

	"github.com/segmentio/kafka-go"
)

// Message is a fetched Kafka message with its acknowledgement state. Its
// offset is committed only after it is done: after Done was called as many
// times as Expect said (once by default). A Message that is never done holds
// back the commits of its partition from its offset on; that is the
// at-least-once promise, not a leak to work around.
type Message struct {
	kafka.Message

	entry    *entry
	inflight *atomic.Int64
}

// Expect sets how many acknowledgements the message awaits before it is
// done, in place of the default of one: one per event published from it.
// n <= 0 marks it done at once (an envelope with no records). Expect takes
// effect only on its first call and only before the first Done; later calls
// are ignored. It is safe for concurrent use with Done.
func (m *Message) Expect(n int) {
	if m == nil || m.entry == nil || !m.entry.expected.CompareAndSwap(false, true) {
		return
	}
	want := int64(max(n, 0))
	if n > math.MaxInt32 {
		want = math.MaxInt32
	}
	// The swap from the initial one fails if a Done came first; the message is
	// then already done or on its way, and changing the count could only
	// make it done twice or never.
	if m.entry.pending.CompareAndSwap(1, want) && want == 0 {
		m.inflight.Add(-1)
	}
}

// Done records one acknowledgement: the output or dead-letter topic accepted
// one event from this message. It is safe for concurrent use and does not
// block. Calls beyond the expected count are ignored. Done on a Message that
// Fetch did not return does nothing.
func (m *Message) Done() {
	if m == nil || m.entry == nil {
		return
	}
	if m.entry.pending.Add(-1) == 0 {
		m.inflight.Add(-1)
	}
}
