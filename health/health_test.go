package health

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// manual is a clock the test moves.
type manual struct {
	mu sync.Mutex
	t  time.Time
}

func (m *manual) now() time.Time { m.mu.Lock(); defer m.mu.Unlock(); return m.t }
func (m *manual) add(d time.Duration) {
	m.mu.Lock()
	m.t = m.t.Add(d)
	m.mu.Unlock()
}

func TestStalled(t *testing.T) {
	clk := &manual{t: time.Unix(1_000_000, 0)}
	w := New(time.Minute, clk.now)
	fetch, commit := w.Beat("fetch"), w.Beat("commit")

	// Not started yet: idle, never stalled.
	clk.add(time.Hour)
	if s := w.Stalled(); len(s) != 0 {
		t.Fatalf("beats that never ticked: stalled %v", s)
	}

	// Waiting on the outside for longer than the bound is not a stall.
	fetch.Idle()
	commit.Busy()
	w.Stalled()
	clk.add(2 * time.Minute)
	if s := w.Stalled(); !slices.Equal(s, []string{"commit"}) {
		t.Fatalf("fetch idle, commit busy for 2m: stalled %v, want [commit]", s)
	}

	// Ticks count as progress; busy with ticks is not a stall.
	for range 5 {
		fetch.Busy()
		commit.Busy()
		clk.add(30 * time.Second)
		if s := w.Stalled(); len(s) != 0 {
			t.Fatalf("both ticking every 30s: stalled %v", s)
		}
	}

	// Busy, no tick: stalled only once the bound has passed since the
	// watchdog last saw a tick.
	clk.add(59 * time.Second)
	if s := w.Stalled(); len(s) != 0 {
		t.Fatalf("59s after the last tick seen: stalled %v", s)
	}
	clk.add(2 * time.Second)
	if s := w.Stalled(); !slices.Equal(s, []string{"fetch", "commit"}) {
		t.Fatalf("61s busy without a tick: stalled %v, want [fetch commit]", s)
	}

	// A tick mends it at once.
	fetch.Idle()
	if s := w.Stalled(); !slices.Equal(s, []string{"commit"}) {
		t.Fatalf("after fetch went idle: stalled %v, want [commit]", s)
	}
}
