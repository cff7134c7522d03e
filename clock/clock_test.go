package clock

import (
	"testing"
	"time"
)

func TestManualFiresTimersInOrderAtTheirTime(t *testing.T) {
	start := time.Unix(1000, 0)
	m := NewManual(start)
	var fired []string
	var at []time.Duration
	record := func(name string) func() {
		return func() { fired = append(fired, name); at = append(at, m.Now().Sub(start)) }
	}
	m.AfterFunc(3*time.Second, record("c"))
	m.AfterFunc(time.Second, record("a"))
	stopped := m.AfterFunc(2*time.Second, record("stopped"))
	m.AfterFunc(2*time.Second, record("b"))
	if !stopped.Stop() {
		t.Fatal("Stop of a pending timer returned false")
	}
	m.Advance(2500 * time.Millisecond)
	if got := len(fired); got != 2 || fired[0] != "a" || fired[1] != "b" {
		t.Fatalf("fired %v after 2.5s, want [a b]", fired)
	}
	if at[0] != time.Second || at[1] != 2*time.Second {
		t.Fatalf("timers ran at %v, want their due times", at)
	}
	if m.Now().Sub(start) != 2500*time.Millisecond {
		t.Fatalf("clock at %v after Advance", m.Now().Sub(start))
	}
	if m.Pending() != 1 {
		t.Fatalf("Pending = %d, want 1", m.Pending())
	}
	m.Advance(time.Second)
	if len(fired) != 3 || fired[2] != "c" {
		t.Fatalf("fired %v", fired)
	}
	if stopped.Stop() {
		t.Fatal("Stop of a stopped timer returned true")
	}
}

func TestManualTimerScheduledByATimer(t *testing.T) {
	m := NewManual(time.Unix(0, 0))
	n := 0
	var tick func()
	tick = func() {
		n++
		if n < 5 {
			m.AfterFunc(time.Second, tick)
		}
	}
	m.AfterFunc(time.Second, tick)
	m.Advance(10 * time.Second)
	if n != 5 {
		t.Fatalf("chained timer ran %d times in 10s, want 5", n)
	}
}
