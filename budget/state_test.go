package budget

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/defender-enricher/defender-enricher/clock"
)

const testCallLength = 15 * time.Second

func openWithState(t *testing.T, limits Limits, clk clock.Clock, path string, opts ...Option) *Window {
	t.Helper()
	w, err := New(limits, clk, append([]Option{WithStateFile(path, testCallLength)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

// TestStateFileSurvivesARestart: a Window closed and opened again on the
// same file counts the earlier calls, each as ended a call length after
// its grant, and the pause in force.
func TestStateFileSurvivesARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budget.state")
	t0 := time.Unix(1_800_000_000, 0)
	clk := clock.NewManual(t0)
	limits := Limits{{3, time.Minute}, {10, time.Hour}}
	w := openWithState(t, limits, clk, path)
	for range 3 {
		done, err := w.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second) // a call of a second
		done()
	}
	pause := t0.Add(10 * time.Minute)
	w.PauseUntil(pause)
	w.Close() // or a kill -9: every line is written as it happens

	clk.Advance(time.Second)
	again := openWithState(t, limits, clk, path)
	if got := again.Restored(); got.Calls != 3 || !got.PausedUntil.Equal(pause) || got.Cut {
		t.Fatalf("restored %+v, want 3 calls and the pause until %v", got, pause)
	}
	// Counted as ended a call length after their grants: the first may
	// age out of the minute at t0+15s+1m, but the pause holds longer.
	next, ok := nextInstant(again, PriorityHigh)
	if !ok || !next.Equal(pause) {
		t.Fatalf("next call at %v (%v), want the pause's end %v", next, ok, pause)
	}
	clk.Set(pause)
	grantNow(t, again, PriorityHigh, "the first call after the pause")
	// Ten calls an hour: three restored, one more granted, six left.
	for i := range 6 {
		clk.Advance(time.Minute)
		grantNow(t, again, PriorityHigh, fmt.Sprintf("call %d of the hour", i+5))
	}
	clk.Advance(time.Minute)
	wantWaits(t, again, "the 11th call of the hour")
}

// TestStateFileConservativeEnd: a call read back counts until a call
// length after its grant, even if it ended at once.
func TestStateFileConservativeEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budget.state")
	t0 := time.Unix(1_800_000_000, 0)
	clk := clock.NewManual(t0)
	limits := Limits{{1, time.Minute}}
	w := openWithState(t, limits, clk, path)
	grantNow(t, w, PriorityHigh, "the only call")
	w.Close()
	again := openWithState(t, limits, clk, path)
	if next, ok := nextInstant(again, PriorityHigh); !ok || !next.Equal(t0.Add(testCallLength+time.Minute)) {
		t.Fatalf("next call at %v (%v), want %v", next, ok, t0.Add(testCallLength+time.Minute))
	}
}

// TestStateFileContents: what a file holds decides what is restored; a last
// line cut short is dropped, anything else that is not the budget's own
// stops New with a line that says what to do.
func TestStateFileContents(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	us := func(d time.Duration) string { return fmt.Sprint(now.Add(d).UnixMicro()) }
	tests := []struct {
		name    string
		content string
		calls   int
		cut     bool
		paused  time.Time
		wantErr string
	}{
		{name: "empty", content: ""},
		{name: "header only", content: stateHeader},
		{name: "calls and a pause", content: stateHeader + "g " + us(-time.Minute) + "\ng " + us(-time.Second) + "\np " + us(time.Minute) + "\n",
			calls: 2, paused: now.Add(time.Minute)},
		{name: "no header", content: "g " + us(-time.Second) + "\n", calls: 1},
		{name: "aged out", content: stateHeader + "g " + us(-2*time.Hour) + "\ng " + us(-time.Hour-testCallLength) + "\np " + us(-time.Second) + "\n"},
		{name: "last line cut short", content: stateHeader + "g " + us(-time.Second) + "\ng 17", calls: 1, cut: true},
		{name: "cut inside the first line", content: "# defender-enr", cut: true},
		{name: "zeros after a power loss", content: stateHeader + "g " + us(-time.Second) + "\n\x00\x00\x00", calls: 1, cut: true},
		{name: "not a number", content: stateHeader + "g soon\n", wantErr: "line 2"},
		{name: "unknown kind", content: stateHeader + "x " + us(0) + "\n", wantErr: "line 2"},
		{name: "garbage line", content: stateHeader + "g " + us(0) + "\nhello\n", wantErr: "line 3"},
		{name: "a blank line", content: stateHeader + "\n", wantErr: "line 2"},
		{name: "negative", content: "g -5\n", wantErr: "line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "budget.state")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			w, err := New(Limits{{100, time.Minute}, {1500, time.Hour}}, clock.NewManual(now), WithStateFile(path, testCallLength))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "remove the file") {
					t.Fatalf("err = %v, want one naming %s and what to do", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if got := w.Restored(); got.Calls != tt.calls || got.Cut != tt.cut || !got.PausedUntil.Equal(tt.paused) {
				t.Fatalf("restored %+v, want %d calls, cut %v, paused until %v", got, tt.calls, tt.cut, tt.paused)
			}
			// The file was rewritten with what still counts.
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if lines := strings.Count(string(data), "\n"); lines != 1+tt.calls+boolInt(!tt.paused.IsZero()) || !strings.HasPrefix(string(data), stateHeader) {
				t.Fatalf("rewritten file:\n%s", data)
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestStateFileThatCannotBeUsed(t *testing.T) {
	dir := t.TempDir()
	for name, path := range map[string]string{
		"a directory":         dir,
		"a missing directory": filepath.Join(dir, "missing", "budget.state"),
	} {
		if _, err := New(Limits{{1, time.Second}}, nil, WithStateFile(path, time.Second)); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: err = %v, want one naming %s", name, err, path)
		}
	}
}

// TestStateFileIsCompacted: a long run does not grow the file for ever.
func TestStateFileIsCompacted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budget.state")
	clk := clock.NewManual(time.Unix(1_800_000_000, 0))
	w := openWithState(t, Limits{{2, time.Second}}, clk, path)
	for range 1500 {
		done, err := w.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		done()
		clk.Advance(time.Second)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(data), "\n"); lines > 1000 {
		t.Fatalf("%d lines after 1,500 grants in a window of 2 calls", lines)
	}
	w.Close()
	if got := openWithState(t, Limits{{2, time.Second}}, clk, path).Restored(); got.Calls == 0 {
		t.Fatalf("restored %+v after compaction, want the last calls", got)
	}
}

// TestStateFileWriteFailure: a write that fails later is counted, and the
// budget goes on.
func TestStateFileWriteFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budget.state")
	reg := prometheus.NewRegistry()
	w := openWithState(t, Limits{{10, time.Second}}, clock.NewManual(time.Unix(1_800_000_000, 0)), path, WithRegisterer(reg))
	w.mu.Lock()
	_ = w.state.f.Close() // as a disk gone read-only would
	w.mu.Unlock()
	grantNow(t, w, PriorityHigh, "a call with the file unwritable")
	if n := testutil.ToFloat64(w.state.errors); n != 1 {
		t.Fatalf("enricher_budget_state_errors_total = %v, want 1", n)
	}
}
