package budget

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The state file of a Window: one line per call granted, "g UNIX_MICROS",
// and per pause, "p UNIX_MICROS" (its end), after a header line. Lines are
// appended as grants and pauses happen, each in one write to a file opened
// for appending, so that a process killed at any moment leaves at most its
// last line cut short; the file is rewritten with what still counts when
// the Window starts and whenever it has grown to several times that.
//
// A call read back counts as ended at its grant plus the call length given
// to WithStateFile, the longest a call can take: the file does not know
// when it really ended, and this is the conservative answer.

const stateHeader = "# defender-enricher call budget: g = a call granted, p = a pause's end, in unix microseconds\n"

// WithStateFile keeps the grant times of the calls that count in the
// longest window, and the end of a pause in force, in the file at path, so
// that a Window started again on it (after a crash, kill -9, a restart)
// counts them: each call read back counts as ended at its grant plus
// callLength. New fails when the file cannot be created, read or written,
// or holds a line that is not one of its own (a last line cut short, as a
// kill leaves it, is dropped). A write that fails later is logged (see
// WithLogger) and counted in enricher_budget_state_errors_total; the Window
// goes on granting by what it holds in memory.
func WithStateFile(path string, callLength time.Duration) Option {
	return func(o *options) { o.statePath, o.callLength = path, callLength }
}

// WithLogger gives a Window a logger for the failures of its state file;
// without it they are not logged.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// Restored is what a Window read back from its state file at start.
type Restored struct {
	Calls       int       // calls still counting in a window
	Cut         bool      // the last line was cut short and dropped
	PausedUntil time.Time // the end of a pause still in force, or zero
}

// Restored returns what New read back from the state file.
func (w *Window) Restored() Restored { return w.restored }

// state is a Window's open state file.
type state struct {
	path       string
	callLength time.Duration
	f          *os.File
	lines      int // lines appended since the file was last rewritten
	errors     prometheus.Counter
	log        *slog.Logger
	lastLog    time.Time
}

// openState reads the state file into w (before any caller can see w),
// rewrites it with what still counts, and opens it for appending.
func (w *Window) openState(o options) error {
	st := &state{path: o.statePath, callLength: o.callLength, log: o.log}
	if st.log == nil {
		st.log = slog.New(slog.DiscardHandler)
	}
	if st.callLength <= 0 {
		return errors.New("budget: a state file needs the length of a call")
	}
	now := w.clock.Now()
	data, err := os.ReadFile(st.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("reading %s: %w", st.path, err)
	default:
		if err := w.loadState(data, now, st.callLength); err != nil {
			return fmt.Errorf("%s: %w", st.path, err)
		}
	}
	w.state = st
	if err := w.rewriteStateLocked(now); err != nil {
		return err
	}
	return nil
}

// loadState adds the calls and the pause of data to w.
func (w *Window) loadState(data []byte, now time.Time, callLength time.Duration) error {
	cut := now.Add(-w.longest)
	var ends []time.Time
	line := 0
	for len(data) > 0 {
		line++
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			// The last line, cut short by a kill in the middle of its write.
			w.restored.Cut = true
			break
		}
		text := string(data[:i])
		data = data[i+1:]
		if line == 1 && text+"\n" == stateHeader {
			continue
		}
		kind, value, ok := strings.Cut(text, " ")
		micros, err := strconv.ParseInt(value, 10, 64)
		if !ok || err != nil || (kind != "g" && kind != "p") || micros <= 0 {
			return fmt.Errorf("line %d is not one of the call budget's own (%q): remove the file to start with a fresh budget, which may then spend up to its limits at once", line, truncate(text, 40))
		}
		at := time.UnixMicro(micros)
		switch kind {
		case "g":
			if end := at.Add(callLength); end.After(cut) {
				ends = append(ends, end)
			}
		case "p":
			if at.After(w.paused) {
				w.paused = at
			}
		}
	}
	slices.SortFunc(ends, time.Time.Compare)
	for _, e := range ends {
		w.calls = append(w.calls, &call{at: e})
	}
	w.restored.Calls = len(ends)
	if w.paused.After(now) {
		w.restored.PausedUntil = w.paused
	} else {
		w.paused = time.Time{}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// rewriteStateLocked writes what still counts to a new file that takes
// the old one's place, and opens it for appending. A call that ended is
// written as granted a call length before its end, so that it is read back
// as ended when it did; a running one as granted when it was.
func (w *Window) rewriteStateLocked(now time.Time) error {
	st := w.state
	w.pruneLocked(now)
	var buf bytes.Buffer
	buf.WriteString(stateHeader)
	for _, c := range w.calls {
		at := c.at
		if !c.running {
			at = at.Add(-st.callLength)
		}
		fmt.Fprintf(&buf, "g %d\n", at.UnixMicro())
	}
	if w.paused.After(now) {
		fmt.Fprintf(&buf, "p %d\n", w.paused.UnixMicro())
	}
	tmp := st.path + ".tmp"
	if err := writeFileSync(tmp, buf.Bytes()); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, st.path); err != nil {
		return fmt.Errorf("replacing %s: %w", st.path, err)
	}
	if d, err := os.Open(filepath.Dir(st.path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	f, err := os.OpenFile(st.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening %s: %w", st.path, err)
	}
	if st.f != nil {
		_ = st.f.Close()
	}
	st.f, st.lines = f, 0
	return nil
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	_, err = bw.Write(data)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// recordLocked appends one line, and rewrites the file once it has grown
// to four times the largest window's calls (at least 1,000 lines).
func (w *Window) recordLocked(kind byte, at time.Time) {
	st := w.state
	if st == nil || st.f == nil {
		return
	}
	line := strconv.AppendInt([]byte{kind, ' '}, at.UnixMicro(), 10)
	line = append(line, '\n')
	if _, err := st.f.Write(line); err != nil {
		w.stateFailedLocked(err)
		return
	}
	st.lines++
	most := 0
	for _, l := range w.limits {
		most = max(most, l.Calls)
	}
	if st.lines >= max(4*most, 1000) {
		if err := w.rewriteStateLocked(at); err != nil {
			w.stateFailedLocked(err)
		}
	}
}

// stateFailedLocked counts a failed write and logs it, at most once a
// minute.
func (w *Window) stateFailedLocked(err error) {
	st := w.state
	if st.errors != nil {
		st.errors.Inc()
	}
	if now := time.Now(); now.Sub(st.lastLog) >= time.Minute {
		st.lastLog = now
		st.log.Warn("the call budget's state file cannot be written: a restart now would not count the calls made since; check the disk and ENRICHER_BUDGET_STATE_FILE",
			"path", st.path, "error", err.Error())
	}
}

// closeStateLocked closes the state file.
func (w *Window) closeStateLocked() {
	if w.state != nil && w.state.f != nil {
		_ = w.state.f.Close()
		w.state.f = nil
	}
}
