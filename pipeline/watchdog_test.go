package pipeline_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/cache"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/health"
	"github.com/defender-enricher/defender-enricher/pipeline"
)

// stallingLookup is fakeLookup whose cache answer for one alert id blocks
// until released, as a lock that is never given back would: the fetch loop
// is then stuck in its own work.
type stallingLookup struct {
	*fakeLookup
	stallID string
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *stallingLookup) CachedFor(id string, ref defender.UserRef) (cache.Result, error, bool) {
	if id == s.stallID {
		s.once.Do(func() { close(s.entered) })
		<-s.release
	}
	return s.fakeLookup.CachedFor(id, ref)
}

// manualClock is the watchdog's clock, moved by the test.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *manualClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// The fetch loop ticks the liveness watchdog: stuck in its own work for
// longer than the bound, it is reported stalled; waiting for room while
// every lookup waits on Defender, it is not, however long that lasts.
func TestFetchLoopWatchdog(t *testing.T) {
	t.Run("stuck in its own work", func(t *testing.T) {
		clk := &manualClock{t: time.Unix(1_000_000, 0)}
		w := health.New(time.Minute, clk.now)
		lk := &stallingLookup{
			fakeLookup: &fakeLookup{hits: map[string]*defender.User{idA: testUser(t, "a"), idB: testUser(t, "b")}},
			stallID:    idB, entered: make(chan struct{}), release: make(chan struct{}),
		}
		r := newRig(t, pipeline.Config{Beat: w.Beat("fetch loop")}, lk, 1)
		r.produce(t, 0, idA)
		r.read(t, 1)
		r.produce(t, 0, idB)
		select {
		case <-lk.entered:
		case <-time.After(60 * time.Second): // guards against a hang only
			t.Fatal("the loop never reached the stalling lookup")
		}
		w.Stalled()
		clk.add(59 * time.Second)
		if s := w.Stalled(); len(s) != 0 {
			t.Fatalf("59s stuck: stalled %v, want none yet", s)
		}
		clk.add(2 * time.Second)
		if s := w.Stalled(); !slices.Equal(s, []string{"fetch loop"}) {
			t.Fatalf("61s stuck: stalled %v, want [fetch loop]", s)
		}
		close(lk.release)
		if got := r.read(t, 2); got[1].AlertID != idB {
			t.Fatalf("after the release: %+v", got)
		}
		waitUntil(t, "the watchdog to see the loop again", func() bool { return len(w.Stalled()) == 0 })
	})

	t.Run("waiting on Defender", func(t *testing.T) {
		clk := &manualClock{t: time.Unix(1_000_000, 0)}
		w := health.New(time.Minute, clk.now)
		called := make(chan struct{}, 10)
		lk := &fakeLookup{answer: func(ctx context.Context, _ string) (*defender.User, error) {
			called <- struct{}{}
			<-ctx.Done() // Defender never answers
			return nil, ctx.Err()
		}}
		beat := w.Beat("fetch loop")
		r := newRig(t, pipeline.Config{Beat: beat, Wait: true, MaxInFlight: 1, DrainTimeout: 100 * time.Millisecond}, lk, 1)
		r.produce(t, 0, idA, idB)
		select {
		case <-called:
		case <-time.After(60 * time.Second): // guards against a hang only
			t.Fatal("no lookup started")
		}
		// The loop holds the second alert's fetch back for room, which
		// only Defender's answer would free: waiting, not stalled.
		waitUntil(t, "the loop to wait for room", beat.Waiting)
		for range 3 {
			w.Stalled()
			clk.add(time.Hour)
			if s := w.Stalled(); len(s) != 0 {
				t.Fatalf("an hour waiting on Defender: stalled %v, want none", s)
			}
		}
	})
}
