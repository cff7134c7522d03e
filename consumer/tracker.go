package consumer

import (
	"slices"
	"sync"
	"sync/atomic"
)

// entry is the acknowledgement state of one fetched message. It is allocated
// apart from the Message so that a done message waiting behind a slow one
// does not keep its value bytes alive until the commit passes it.
type entry struct {
	offset int64
	// pending counts the acknowledgements still awaited; the message is done
	// once it reaches zero. Done only ever decrements it, so the hot path is
	// one atomic add and never takes the tracker's lock.
	pending atomic.Int64
	// expected makes Expect effective at most once.
	expected atomic.Bool
}

func (e *entry) done() bool { return e.pending.Load() <= 0 }

// partitionState tracks one partition in fetch order.
type partitionState struct {
	// queue holds the fetched messages from the first one not yet known done,
	// in fetch order, which the tracker keeps strictly increasing in offset.
	// It is a slice with a moving head so that appends and pops are O(1)
	// amortised.
	queue []*entry
	head  int
	// last is the offset of the newest fetched message, -1 before the first.
	last int64
	// next is one past the newest message of the done prefix: every message
	// fetched below it was acknowledged, and everything below the first
	// fetched offset was committed by the group before that fetch. It never
	// decreases, which is what keeps commits from going backwards. -1 while
	// nothing is done.
	next int64
	// committed is the offset this consumer last committed with success, -1
	// if none.
	committed int64
}

func (p *partitionState) pending() int { return len(p.queue) - p.head }

// popFront drops the head of the queue and, once the dead space ahead of the
// head is at least half the slice, moves the live part down so the backing
// array does not grow without bound on a partition that never drains fully.
func (p *partitionState) popFront() {
	p.queue[p.head] = nil
	p.head++
	switch {
	case p.head == len(p.queue):
		p.queue = p.queue[:0]
		p.head = 0
	case p.head >= 256 && p.head*2 >= len(p.queue):
		n := copy(p.queue, p.queue[p.head:])
		clear(p.queue[n:])
		p.queue = p.queue[:n]
		p.head = 0
	}
}

// advance moves next past the done messages at the head of the queue.
func (p *partitionState) advance() {
	for p.pending() > 0 {
		e := p.queue[p.head]
		if !e.done() {
			return
		}
		p.next = max(p.next, e.offset+1)
		p.popFront()
	}
}

// tracker computes, per partition, the offset up to which every fetched
// message is acknowledged. add and collect are serialised by mu; Done on an
// entry needs no lock. It is not tied to a topic: the consumer reads one.
type tracker struct {
	mu       sync.Mutex
	parts    map[int]*partitionState
	restarts int64
}

func newTracker() *tracker {
	return &tracker{parts: make(map[int]*partitionState)}
}

// restart describes a partition whose offsets went back: kafka-go started a
// new generation from the group's committed offset.
type restart struct {
	partition int
	from      int64 // first offset of the new run
	last      int64 // newest offset fetched before it
	dropped   int   // in-flight messages forgotten, to be fetched again
}

// add registers a fetched message as pending, with one acknowledgement
// expected. Offsets must come in fetch order per partition, so callers
// serialise add in the order the messages were fetched.
//
// An offset at or below the newest one seen on its partition means the fetch
// stream restarted there (see the package documentation): the queued messages
// at or above it are forgotten, since they will be fetched again, and later
// acknowledgements of those copies change nothing. Messages below it stay:
// waiting for them can only delay a commit, never skip one. An offset above
// the newest plus one is a gap (compaction, transaction markers, a generation
// that started past what this consumer saw) and needs no special handling.
func (t *tracker) add(partition int, offset int64) (*entry, *restart) {
	e := &entry{offset: offset}
	e.pending.Store(1)

	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.parts[partition]
	if p == nil {
		p = &partitionState{last: -1, next: -1, committed: -1}
		t.parts[partition] = p
	}
	var rs *restart
	if p.last >= 0 && offset <= p.last {
		rs = &restart{partition: partition, from: offset, last: p.last}
		for p.pending() > 0 && p.queue[len(p.queue)-1].offset >= offset {
			p.queue[len(p.queue)-1] = nil
			p.queue = p.queue[:len(p.queue)-1]
			rs.dropped++
		}
		if p.pending() == 0 {
			p.queue = p.queue[:0]
			p.head = 0
		}
		t.restarts++
	}
	p.last = offset
	p.queue = append(p.queue, e)
	return e, rs
}

// partitionOffset is a Kafka offset to commit: the next one to read.
type partitionOffset struct {
	partition int
	offset    int64
}

// collect returns, sorted by partition, the partitions whose done prefix
// advanced past the last successful commit, with the offset to commit.
// Sending an offset again after a failed commit is intended: that is the
// retry.
func (t *tracker) collect() []partitionOffset {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []partitionOffset
	for id, p := range t.parts {
		p.advance()
		if p.next > p.committed {
			out = append(out, partitionOffset{partition: id, offset: p.next})
		}
	}
	slices.SortFunc(out, func(a, b partitionOffset) int { return a.partition - b.partition })
	return out
}

// committed records a successful commit of offs.
func (t *tracker) committed(offs []partitionOffset) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, po := range offs {
		if p := t.parts[po.partition]; p != nil {
			p.committed = max(p.committed, po.offset)
		}
	}
}

// snapshot returns the committed offset of every partition committed so far
// and the number of restarts seen.
func (t *tracker) snapshot() (map[int]int64, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[int]int64, len(t.parts))
	for id, p := range t.parts {
		if p.committed >= 0 {
			out[id] = p.committed
		}
	}
	return out, t.restarts
}
