package consumer

import (
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/segmentio/kafka-go"
)

// op is one step of a tracker script.
type op struct {
	kind string // fetch, done, doneFirst, expect, commit, commitFail
	p    int
	offs []int64
	n    int               // expect: acknowledgements
	want []partitionOffset // commit, commitFail: what collect returns
}

func fetch(p int, offs ...int64) op     { return op{kind: "fetch", p: p, offs: offs} }
func done(p int, offs ...int64) op      { return op{kind: "done", p: p, offs: offs} }
func doneFirst(p int, offs ...int64) op { return op{kind: "doneFirst", p: p, offs: offs} }
func expect(p int, off int64, n int) op { return op{kind: "expect", p: p, offs: []int64{off}, n: n} }
func commit(want ...partitionOffset) op { return op{kind: "commit", want: want} }
func commitFail(want ...partitionOffset) op {
	return op{kind: "commitFail", want: want}
}
func at(p int, off int64) partitionOffset { return partitionOffset{partition: p, offset: off} }
func span(from, to int64) []int64 {
	var out []int64
	for o := from; o <= to; o++ {
		out = append(out, o)
	}
	return out
}

type key struct {
	p   int
	off int64
}

func TestTracker(t *testing.T) {
	tests := []struct {
		name         string
		ops          []op
		wantInFlight int64
		wantRestarts int64
	}{
		{
			name: "in order",
			ops: []op{
				fetch(0, span(0, 4)...),
				commit(),
				done(0, 0, 1, 2), commit(at(0, 3)),
				done(0, 3, 4), commit(at(0, 5)),
				commit(),
			},
		},
		{
			name: "out of order done waits for the head",
			ops: []op{
				fetch(0, span(0, 4)...),
				done(0, 4, 2, 3), commit(),
				done(0, 0), commit(at(0, 1)),
				done(0, 1), commit(at(0, 5)),
			},
		},
		{
			name: "gaps are not waited for",
			ops: []op{
				fetch(0, 10, 12, 15, 20),
				done(0, 10, 12), commit(at(0, 13)),
				done(0, 20), commit(),
				done(0, 15), commit(at(0, 21)),
			},
		},
		{
			name: "jump forward is a gap, not a restart",
			ops: []op{
				fetch(0, 0, 1, 2),
				done(0, 1, 2),
				fetch(0, 50),
				done(0, 50), commit(),
				done(0, 0), commit(at(0, 51)),
			},
		},
		{
			name: "expect zero is done at once",
			ops: []op{
				fetch(0, 0, 1, 2),
				expect(0, 1, 0),
				done(0, 0), commit(at(0, 2)),
				done(0, 2), commit(at(0, 3)),
			},
		},
		{
			name: "expect n waits for n",
			ops: []op{
				fetch(0, 0, 1),
				expect(0, 0, 3),
				done(0, 1, 0, 0), commit(),
				done(0, 0), commit(at(0, 2)),
			},
		},
		{
			name: "expect after done is ignored",
			ops: []op{
				fetch(0, 0, 1),
				done(0, 0),
				expect(0, 0, 5),
				commit(at(0, 1)),
			},
			wantInFlight: 1,
		},
		{
			name: "second expect is ignored",
			ops: []op{
				fetch(0, 0),
				expect(0, 0, 2),
				expect(0, 0, 9),
				done(0, 0, 0), commit(at(0, 1)),
			},
		},
		{
			name: "extra done is ignored",
			ops: []op{
				fetch(0, 0, 1),
				done(0, 0, 0, 0), commit(at(0, 1)),
			},
			wantInFlight: 1,
		},
		{
			name: "partitions are independent",
			ops: []op{
				fetch(0, 0), fetch(1, 0), fetch(2, 100), fetch(1, 1),
				done(1, 0), done(2, 100), commit(at(1, 1), at(2, 101)),
				done(0, 0), done(1, 1), commit(at(0, 1), at(1, 2)),
			},
		},
		{
			name: "failed commit is retried",
			ops: []op{
				fetch(0, 0, 1),
				done(0, 0), commitFail(at(0, 1)),
				commit(at(0, 1)),
				commit(),
				done(0, 1), commitFail(at(0, 2)), commitFail(at(0, 2)), commit(at(0, 2)),
			},
		},
		{
			name: "rebalance restarts from the committed offset",
			ops: []op{
				fetch(0, span(0, 9)...),
				done(0, 0, 1, 2, 3), commit(at(0, 4)),
				done(0, 6, 7),
				// kafka-go resumes the new generation at the committed 4.
				fetch(0, 4),
				// The old copies are acknowledged late: 4 and 5 are not
				// done for the tracker until their new copies are.
				doneFirst(0, 4, 5, 8, 9), commit(),
				done(0, 4), commit(at(0, 5)),
				fetch(0, 5, 6),
				done(0, 6), commit(),
				done(0, 5), commit(at(0, 7)),
			},
			wantRestarts: 1,
		},
		{
			name: "old in-flight below the restart is still waited for",
			ops: []op{
				fetch(0, span(0, 9)...),
				done(0, span(1, 9)...),
				fetch(0, 5),
				done(0, 5), commit(),
				done(0, 0), commit(at(0, 6)),
			},
			wantRestarts: 1,
		},
		{
			name: "never backwards after a restart below the commit",
			ops: []op{
				fetch(0, span(0, 9)...),
				done(0, span(0, 9)...), commit(at(0, 10)),
				// The group's offset was moved back to 5 by someone else.
				fetch(0, 5),
				done(0, 5), commit(),
				fetch(0, span(6, 10)...),
				done(0, span(6, 9)...), commit(),
				done(0, 10), commit(at(0, 11)),
			},
			wantRestarts: 1,
		},
		{
			name: "restart only touches its partition",
			ops: []op{
				fetch(0, 0, 1), fetch(1, 0, 1),
				fetch(1, 0),
				done(0, 0, 1), doneFirst(1, 0), commit(at(0, 2)),
				done(1, 0), commit(at(1, 1)),
			},
			wantInFlight: 1, // the first copy of 1
			wantRestarts: 1,
		},
		{
			name: "restart at the same offset",
			ops: []op{
				fetch(0, 7),
				fetch(0, 7),
				doneFirst(0, 7), commit(),
				done(0, 7), commit(at(0, 8)),
			},
			wantRestarts: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker()
			var inflight atomic.Int64
			copies := map[key][]*Message{}
			msg := func(p int, off int64, first bool) *Message {
				t.Helper()
				cs := copies[key{p, off}]
				if len(cs) == 0 {
					t.Fatalf("partition %d offset %d was not fetched", p, off)
				}
				if first {
					return cs[0]
				}
				return cs[len(cs)-1]
			}
			for i, o := range tt.ops {
				switch o.kind {
				case "fetch":
					for _, off := range o.offs {
						e, _ := tr.add(o.p, off)
						inflight.Add(1)
						copies[key{o.p, off}] = append(copies[key{o.p, off}], &Message{entry: e, inflight: &inflight})
					}
				case "done", "doneFirst":
					for _, off := range o.offs {
						msg(o.p, off, o.kind == "doneFirst").Done()
					}
				case "expect":
					msg(o.p, o.offs[0], false).Expect(o.n)
				case "commit", "commitFail":
					got := tr.collect()
					if !slices.Equal(got, o.want) {
						t.Fatalf("op %d: collect = %v, want %v", i, got, o.want)
					}
					if o.kind == "commit" {
						tr.committed(got)
					}
				default:
					t.Fatalf("unknown op %q", o.kind)
				}
			}
			if got := inflight.Load(); got != tt.wantInFlight {
				t.Errorf("in flight = %d, want %d", got, tt.wantInFlight)
			}
			if _, got := tr.snapshot(); got != tt.wantRestarts {
				t.Errorf("restarts = %d, want %d", got, tt.wantRestarts)
			}
		})
	}
}

// TestTrackerModel drives the tracker the way kafka-go drives it: per
// partition a log with gaps, generations that resume from the group's
// committed offset, messages of an ended generation still acknowledged
// late, random acknowledgement order and random commits. Every commit must
// be at or above the previous one and below it every offset of the log must
// have been acknowledged at least once.
func TestTrackerModel(t *testing.T) {
	for seed := range uint64(100) {
		rng := rand.New(rand.NewPCG(seed, 7))
		// The log: increasing offsets with gaps.
		var log []int64
		for off := int64(rng.IntN(5)); len(log) < 200; off += 1 + int64(rng.IntN(3)/2)*int64(rng.IntN(4)) {
			log = append(log, off)
		}
		tr := newTracker()
		var inflight atomic.Int64
		acked := map[int64]bool{}
		var pending []*Message
		groupCommitted := int64(-1)
		pos := 0 // index in log of the next message to fetch
		lastCommit := int64(-1)

		for step := 0; step < 2000; step++ {
			switch r := rng.IntN(100); {
			case r < 45 && pos < len(log):
				e, _ := tr.add(0, log[pos])
				inflight.Add(1)
				pending = append(pending, &Message{Message: kafkaMsg(log[pos]), entry: e, inflight: &inflight})
				pos++
			case r < 85 && len(pending) > 0:
				i := rng.IntN(len(pending))
				m := pending[i]
				pending = slices.Delete(pending, i, i+1)
				acked[m.Offset] = true
				m.Done()
			case r < 97:
				offs := tr.collect()
				for _, po := range offs {
					if po.offset < lastCommit {
						t.Fatalf("seed %d: commit %d below previous %d", seed, po.offset, lastCommit)
					}
					for _, o := range log {
						if o < po.offset && !acked[o] {
							t.Fatalf("seed %d: commit %d passes offset %d, never acknowledged", seed, po.offset, o)
						}
					}
					lastCommit = po.offset
				}
				if len(offs) > 0 && rng.IntN(4) > 0 {
					tr.committed(offs)
					groupCommitted = offs[0].offset
				}
			default:
				// A new generation: kafka-go resumes at the committed offset,
				// or at the start of the log if nothing was committed.
				pos = 0
				for pos < len(log) && log[pos] < groupCommitted {
					pos++
				}
			}
		}
	}
}

func TestTrackerConcurrentDone(t *testing.T) {
	tr := newTracker()
	var inflight atomic.Int64
	const n = 10000
	msgs := make([]*Message, n)
	for i := range msgs {
		e, _ := tr.add(i%4, int64(i/4))
		inflight.Add(1)
		msgs[i] = &Message{entry: e, inflight: &inflight}
	}
	rand.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				msgs[i].Done()
			}
		})
	}
	stop := make(chan struct{})
	var cwg sync.WaitGroup
	cwg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				tr.committed(tr.collect())
			}
		}
	})
	wg.Wait()
	close(stop)
	cwg.Wait()
	tr.committed(tr.collect())
	committed, _ := tr.snapshot()
	for p := range 4 {
		if committed[p] != n/4 {
			t.Errorf("partition %d committed %d, want %d", p, committed[p], n/4)
		}
	}
	if got := inflight.Load(); got != 0 {
		t.Errorf("in flight = %d, want 0", got)
	}
}

// TestTrackerQueueCompacts checks that a partition whose head is stuck does not
// grow the queue's backing array beyond what is pending.
func TestTrackerQueueCompacts(t *testing.T) {
	tr := newTracker()
	var inflight atomic.Int64
	var window []*Message
	for off := range int64(100000) {
		e, _ := tr.add(0, off)
		m := &Message{entry: e, inflight: &inflight}
		window = append(window, m)
		if len(window) > 100 {
			window[0].Done()
			window = window[1:]
		}
		if off%1000 == 0 {
			tr.collect()
		}
	}
	tr.collect()
	p := tr.parts[0]
	if p.pending() > 101 || cap(p.queue) > 4096 {
		t.Errorf("queue pending %d, cap %d: not compacted", p.pending(), cap(p.queue))
	}
}

func BenchmarkTrackerAddDone(b *testing.B) {
	tr := newTracker()
	var inflight atomic.Int64
	b.ReportAllocs()
	i := int64(0)
	for b.Loop() {
		e, _ := tr.add(int(i&3), i>>2)
		m := Message{entry: e, inflight: &inflight}
		m.Done()
		if i&1023 == 0 {
			tr.collect()
		}
		i++
	}
}

func kafkaMsg(off int64) kafka.Message { return kafka.Message{Offset: off} }
