package defender_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/breaker"
	"github.com/defender-enricher/defender-enricher/defender"
)

// TestStackOutage: a Defender outage of 6 s under 40 new alerts a second,
// each looked up with a 2 s deadline (ENRICHER_MAX_ENRICH_WAIT=2s), through
// cache, client and breaker with their defaults (5 failures, open 1 s
// doubling up to 30 s, 4 attempts, 500 ms backoff) and a budget of 1000/1s
// that holds nothing up. At most 15 calls reach the dead API, and lookups
// that start 2 s after it is back are answered.
//
// It takes real seconds: the breaker reads the real clock. It is not
// parallel, so that other tests of the package do not slow it down.
func TestStackOutage(t *testing.T) {
	const (
		rate     = 40 // new alerts a second
		deadline = 2 * time.Second
		healthy  = time.Second     // before the outage
		outage   = 6 * time.Second // 503 answers
		after    = 3 * time.Second // after it
		maxCalls = 15              // during the outage
	)
	s := newSimulator(t)
	st := newStack(t, s, "1000/1s", func(o *defender.Options) { o.BaseBackoff, o.MaxBackoff = 0, 0 })
	st.warm(t)

	type lookup struct {
		start, end time.Time
		err        error
	}
	var (
		mu      sync.Mutex
		lookups []lookup
		wg      sync.WaitGroup
	)
	pace := time.NewTicker(time.Second / rate)
	defer pace.Stop()
	begin := time.Now()
	var down, back time.Time
generate:
	for i := 0; ; i++ {
		<-pace.C
		switch {
		case down.IsZero() && time.Since(begin) >= healthy:
			s.SetOutage(http.StatusServiceUnavailable)
			down = time.Now()
		case !down.IsZero() && back.IsZero() && time.Since(down) >= outage:
			s.SetOutage(0)
			back = time.Now()
		case !back.IsZero() && time.Since(back) >= after:
			break generate
		}
		id := fmt.Sprintf("da638769935314293956_%d", i)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			l := lookup{start: time.Now()}
			_, l.err = st.cache.Lookup(ctx, id)
			l.end = time.Now()
			mu.Lock()
			lookups = append(lookups, l)
			mu.Unlock()
		})
	}
	wg.Wait()
	waitFor(t, "every flight to end", func() bool { return st.cache.InFlight() == 0 })

	// The calls that reached the dead API: the simulator answered 503 to
	// every call that arrived during the outage, and to no other.
	deadCalls, calls := 0, s.Calls()
	for _, c := range calls {
		if c.Status == http.StatusServiceUnavailable {
			deadCalls++
		}
	}
	var (
		firstAnswer               time.Duration = -1
		during, unavailable, late int
	)
	for _, l := range lookups {
		switch {
		case l.start.Before(down):
			if l.err != nil {
				t.Errorf("a lookup before the outage: %v", l.err)
			}
		case l.start.Before(back):
			during++
			if errors.Is(l.err, defender.ErrUnavailable) {
				unavailable++
			} else if l.err != nil && !l.end.After(back) {
				t.Errorf("a lookup during the outage: %v, want ErrUnavailable", l.err)
			}
		case l.start.Sub(back) >= 2*time.Second:
			late++
			if l.err != nil {
				t.Errorf("a lookup %v after the API was back: %v", l.start.Sub(back).Round(time.Millisecond), l.err)
			}
		}
		if l.err == nil && l.end.After(back) && (firstAnswer < 0 || l.end.Sub(back) < firstAnswer) {
			firstAnswer = l.end.Sub(back)
		}
	}
	t.Logf("outage of %v at %d alerts/s, %v deadline: %d calls reached the dead API (%d lookups, %d unavailable); "+
		"first lookup answered %.1f s after the API was back; %d calls in all",
		outage, rate, deadline, deadCalls, during, unavailable, firstAnswer.Seconds(), len(calls))
	if deadCalls > maxCalls {
		t.Errorf("%d calls reached the API during the outage, want %d at most", deadCalls, maxCalls)
	}
	if deadCalls < 5 {
		t.Errorf("%d calls reached the API during the outage: the breaker opened before 5 failures", deadCalls)
	}
	switch {
	case firstAnswer < 0:
		t.Errorf("no lookup answered in the %v after the API was back", after)
	case firstAnswer > 2*time.Second:
		t.Errorf("first lookup answered %v after the API was back, want 2s at most", firstAnswer)
	}
	if late < 10 {
		t.Errorf("%d lookups started 2s after the API was back, want 10 at least for the check to count", late)
	}
	if got := st.breaker.State(); got != breaker.StateClosed {
		t.Errorf("breaker %v after the outage, want closed", got)
	}
}
